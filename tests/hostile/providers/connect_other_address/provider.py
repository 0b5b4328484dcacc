"""Hostile provider: Use its granted port on another address."""

import ctypes
import errno
import json
import socket
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


try:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(2)
    sock.connect((params["host"], params["port"]))
    finish(True, "connected")
except OSError as exc:
    finish(False, f"{exc.strerror}", errno=exc.errno)
