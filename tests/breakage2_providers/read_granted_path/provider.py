"""Hostile provider: read a "device" that is an ordinary file under /dev.

The manifest asks for a path under /dev that is really a file (or a symlink to one) that
a local user placed in a world-writable /dev directory, or that points at a secret. A
grant of it must not hand over the file's group and a Landlock rule on it.
"""

import json
import sys

request = json.loads(sys.stdin.readline())
path = request["params"]["path"]
try:
    with open(path, "rb") as handle:
        content = handle.read(4096).decode("latin-1")
except OSError as exc:
    event = {"type": "result", "status": "failed", "message": f"{exc.strerror}: {path}"}
else:
    event = {
        "type": "result",
        "status": "succeeded",
        "message": "read it",
        "data": {"content": content},
    }
print(json.dumps(event), flush=True)
