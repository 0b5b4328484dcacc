#!/bin/sh
# Hostile provider: A shell provider that cats /etc/shadow.
read request
if out=$(cat /etc/shadow 2>&1); then
  printf '{"type":"result","status":"succeeded","message":"read it","data":{"content":"%s"}}\n' "$(echo "$out" | head -c 200 | tr -d '"\\\n')"
else
  printf '{"type":"result","status":"failed","message":"%s"}\n' "$(echo "$out" | tr -d '"\\\n')"
fi
