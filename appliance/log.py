"""Logging with per-request and per-packet context.

Each module takes its own logger (logging.getLogger(__name__)). Context such as
the client MAC, the DHCP transaction id, the trace id of an API request or the
machine id is bound with `context(...)` and appears on every line logged inside
it, without each call site repeating it.
"""

import contextlib
import contextvars
import json
import logging
import sys
import time
import types

# An immutable empty mapping as default: a shared mutable dict would leak fields between tasks.
_EMPTY = types.MappingProxyType({})
_context = contextvars.ContextVar("cloudboot_log_context", default=_EMPTY)


@contextlib.contextmanager
def context(**fields):
    """Bind fields (mac=..., xid=..., trace_id=...) to log lines inside the block."""
    merged = {**_context.get(), **{k: v for k, v in fields.items() if v is not None}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


def current_context():
    return dict(_context.get())


class _ContextFilter(logging.Filter):
    def filter(self, record):
        record.ctx = _context.get()
        return True


class TextFormatter(logging.Formatter):
    def format(self, record):
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        ctx = getattr(record, "ctx", {}) or {}
        extra = "".join(f" {k}={v}" for k, v in ctx.items())
        line = f"{stamp}Z {record.levelname.lower():7} {record.name}: {record.getMessage()}{extra}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record):
        entry = {
            "time": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **(getattr(record, "ctx", {}) or {}),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup(level="info", fmt="text", stream=None):
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_ContextFilter())

    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
