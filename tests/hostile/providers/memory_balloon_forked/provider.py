"""Hostile provider: Spread a memory balloon over several processes."""

import ctypes
import errno
import json
import os
import sys

request = json.loads(sys.stdin.readline())
params = request["params"]
libc = ctypes.CDLL(None, use_errno=True)


def finish(escaped, message, **data):
    """'succeeded' means the escape worked: the test expects 'failed'."""
    status = "succeeded" if escaped else "failed"
    event = {"type": "result", "status": status, "message": message, "data": data}
    print(json.dumps(event), flush=True)
    sys.exit(0)


def syscall(number, *args):
    result = libc.syscall(ctypes.c_long(number), *[ctypes.c_long(a) for a in args])
    return result, ctypes.get_errno()


def report_syscall(name, number, *args):
    result, err = syscall(number, *args)
    if result >= 0:
        finish(True, f"{name} succeeded")
    finish(False, f"{name}: {errno.errorcode.get(err, err)}", errno=err)


def try_read(path):
    try:
        with open(path, "rb") as handle:
            finish(True, "read it", content=handle.read(4096).decode("latin-1"))
    except OSError as exc:
        finish(False, f"{exc.strerror}: {path}", errno=exc.errno)


children = []
for _ in range(6):
    pid = os.fork()
    if pid == 0:
        hog = bytearray(40 << 20)
        for offset in range(0, len(hog), 4096):
            hog[offset] = 1
        os._exit(0)
    children.append(pid)
statuses = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
finish(all(code == 0 for code in statuses), f"children ended with {statuses}", codes=statuses)
