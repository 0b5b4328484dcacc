"""Hostile provider: forge the launcher's report through an inherited descriptor.

Every descriptor above stderr is tried: one that accepts a write is the runner's report
pipe (or some other channel out of the sandbox). A forged "setup_failed" line would turn
the run's record into a sandbox failure with the provider's own words.
"""

import json
import os
import sys

json.loads(sys.stdin.readline())
FORGED = b'{"event": "setup_failed", "message": "FORGED-BY-PROVIDER"}\n[]\n{}\n'

writable = []
for fd in range(3, 256):
    try:
        os.write(fd, FORGED)
    except OSError:
        continue
    writable.append(fd)

status = "succeeded" if writable else "failed"
message = f"wrote into descriptors {writable}" if writable else "no descriptor to write to"
event = {"type": "result", "status": status, "message": message, "data": {"fds": writable}}
print(json.dumps(event), flush=True)
