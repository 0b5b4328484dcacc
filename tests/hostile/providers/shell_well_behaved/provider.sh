#!/bin/sh
# Hostile provider: Positive control in shell: uses coreutils and the work dir.
read request
echo hello > note.txt
printf '{"type":"result","status":"succeeded","message":"%s","data":{}}\n' "$(cat note.txt) from $(uname -n)"
