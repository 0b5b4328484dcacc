"""Hostile provider: run a program it wrote, from an anonymous memory file.

The work directory is noexec and has no Landlock execute right; a memfd lives on no path
Landlock knows, so writing an ELF file there and executing /proc/self/fd/N would run
downloaded code. /bin/true's bytes stand in for the downloaded program.
"""

import json
import os
import sys

json.loads(sys.stdin.readline())


def finish(escaped, message):
    status = "succeeded" if escaped else "failed"
    print(json.dumps({"type": "result", "status": status, "message": message}), flush=True)
    sys.exit(0)


try:
    memfd = os.memfd_create("downloaded", 0)
except OSError as exc:
    finish(False, f"memfd_create: {exc.strerror}")

with open("/bin/true", "rb") as program:
    os.write(memfd, program.read())

pid = os.fork()
if pid == 0:
    try:
        os.execve(f"/proc/self/fd/{memfd}", ["downloaded"], {})
    except OSError as exc:
        os._exit(100 + exc.errno)
_, status = os.waitpid(pid, 0)
code = os.waitstatus_to_exitcode(status)
finish(code == 0, f"executing the memfd gave exit status {code}")
