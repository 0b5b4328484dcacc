"""The provider protocol, version 1: one request in on stdin, JSON lines out on stdout.

A provider reads one JSON object from stdin (the request) and writes newline-delimited JSON
objects to stdout, each an event:

    {"type": "progress", "percent": 40, "message": "creating virtual drive"}
    {"type": "log", "level": "info", "message": "controller 0 found"}
    {"type": "result", "status": "succeeded", "message": "...", "data": {...}}

exactly one `result`, last. Anything else (a line that is not a JSON object, an unknown
type, a second result, output after the result, a line longer than the limit, no result at
all) is a protocol violation and fails the run with a message saying what arrived.

Sans-I/O: `OutputParser` takes bytes as they come and returns events; it never reads, writes
or sleeps, so it is tested with whole outputs, byte by byte and with junk. It must never
accept a result the provider did not write.
"""

import json

VERSION = 1
SUPPORTED_VERSIONS = (1,)
MAX_LINE_BYTES = 64 * 1024
MAX_EVENTS = 10_000
MAX_MESSAGE_CHARS = 4096
LOG_LEVELS = ("debug", "info", "warning", "error")
RESULT_STATUSES = ("succeeded", "failed")


class ProtocolError(ValueError):
    """The provider's output broke the protocol; the message says how, with what arrived."""


def make_request(action, params=None, job_id=None):
    """The request object a provider reads on stdin."""
    return {"protocol": VERSION, "action": action, "params": params or {}, "job_id": job_id}


def encode_event(event):
    """One event as a line, the way a Python provider would write it."""
    return json.dumps(event, separators=(",", ":")).encode() + b"\n"


class OutputParser:
    """Turns a provider's stdout into validated events; one instance per run."""

    def __init__(self, max_line_bytes=MAX_LINE_BYTES, max_events=MAX_EVENTS):
        self.max_line_bytes = max_line_bytes
        self.max_events = max_events
        self.events = []
        self.result = None
        self._buffer = b""

    def feed(self, data):
        """Add bytes; returns the complete events they finish. Raises ProtocolError."""
        self._buffer += data
        lines = self._buffer.split(b"\n")
        self._buffer = lines.pop()
        if len(self._buffer) > self.max_line_bytes:
            raise ProtocolError(f"a line longer than {self.max_line_bytes} bytes")
        return [event for event in (self._line(line) for line in lines) if event]

    def finish(self):
        """The end of output: returns the result, or raises ProtocolError."""
        if self._buffer.strip():
            self._line(self._buffer)
            self._buffer = b""
        if self.result is None:
            raise ProtocolError("the provider ended without a result")
        return self.result

    def _line(self, raw):
        if len(raw) > self.max_line_bytes:
            raise ProtocolError(f"a line longer than {self.max_line_bytes} bytes")
        if not raw.strip():
            return None
        if self.result is not None:
            raise ProtocolError(f"output after the result: {_preview(raw)}")
        if len(self.events) >= self.max_events:
            raise ProtocolError(f"more than {self.max_events} events")
        event = validate_event(_decode(raw))
        self.events.append(event)
        if event["type"] == "result":
            self.result = event
        return event


def _decode(raw):
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ProtocolError(f"not a JSON line: {_preview(raw)}") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"expected a JSON object, got {_preview(raw)}")
    return value


def validate_event(value):
    """Check one decoded event; returns a clean copy with only the known fields."""
    kind = value.get("type")
    if kind == "progress":
        percent = value.get("percent")
        if percent is not None and (
            not isinstance(percent, int) or isinstance(percent, bool) or not 0 <= percent <= 100
        ):
            raise ProtocolError(f"progress percent must be 0-100 or null, got {percent!r}")
        return {"type": kind, "percent": percent, "message": _message(value, required=False)}
    if kind == "log":
        level = value.get("level", "info")
        if level not in LOG_LEVELS:
            raise ProtocolError(f"log level must be one of {LOG_LEVELS}, got {level!r}")
        return {"type": kind, "level": level, "message": _message(value, required=True)}
    if kind == "result":
        status = value.get("status")
        if status not in RESULT_STATUSES:
            raise ProtocolError(f"result status must be one of {RESULT_STATUSES}, got {status!r}")
        data = value.get("data", {})
        if not isinstance(data, dict):
            raise ProtocolError(f"result data must be an object, got {type(data).__name__}")
        message = _message(value, required=False)
        return {"type": kind, "status": status, "message": message, "data": data}
    raise ProtocolError(f"unknown event type {kind!r}")


def _message(value, required):
    message = value.get("message")
    if message is None and not required:
        return ""
    if not isinstance(message, str):
        raise ProtocolError(f"message must be a string, got {message!r:.80}")
    return message[:MAX_MESSAGE_CHARS]


def _preview(raw):
    return repr(raw[:80]) + ("..." if len(raw) > 80 else "")
