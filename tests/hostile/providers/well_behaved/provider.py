"""Hostile provider: Positive control: does its job and reports success."""

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


print(json.dumps({"type": "progress", "percent": 50, "message": "halfway"}), flush=True)
with open("scratch", "w") as handle:
    handle.write("work directory is writable")
with open("scratch") as handle:
    scratch = handle.read()
finish(True, "done", uid=os.getuid(), pid=os.getpid(), scratch=scratch, cwd=os.getcwd())
