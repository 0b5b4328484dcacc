"""Hostile provider: Fill the work directory's file system."""

import ctypes
import errno
import json
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


written = 0
block = b"\0" * (1 << 20)
try:
    for index in range(100000):
        with open(f"fill-{index}", "wb") as handle:
            for _ in range(4):
                handle.write(block)
                written += 1
except OSError as exc:
    finish(False, f"{exc.strerror} after {written} MiB", mib=written, errno=exc.errno)
finish(True, f"wrote {written} MiB")
