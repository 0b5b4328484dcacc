#!/bin/sh
# Hostile provider: Positive control: an executable with a #! line, no interpreter.
read request
printf '{"type":"result","status":"succeeded","message":"ran by its own #! line","data":{}}\n'
