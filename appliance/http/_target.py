"""Parse an HTTP request target into a decoded path and a query dictionary.

Pure functions over bytes: no sockets, no trio. The server calls
`parse_target` once per request; the property tests feed it arbitrary bytes.
It must never return a path holding NUL, a lone "%" or bytes that are not
UTF-8: those are refused here so that no handler ever sees them.
"""

import re
from urllib.parse import parse_qs, unquote_to_bytes


class TargetError(ValueError):
    """The request target cannot be a path on this server (answered with 400)."""


# RFC 3986 section 2.1: "%" must be followed by two hex digits.
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")

# RFC 9112 section 3.2.2: absolute-form ("http://host/path") must be accepted by servers.
_ABSOLUTE_FORM = re.compile(rb"^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*")


def parse_target(target):
    """Split a raw request target into (decoded path, raw path, query dict of lists).

    Raises TargetError with a message naming what was wrong.
    """
    if not isinstance(target, bytes | bytearray):
        raise TargetError(f"request target must be bytes, got {type(target).__name__}")
    target = bytes(target)

    absolute = _ABSOLUTE_FORM.match(target)
    if absolute:
        target = target[absolute.end() :] or b"/"
    if not target.startswith(b"/"):
        raise TargetError(f"request target must start with '/', got {target[:64]!r}")

    # A fragment never reaches a server (RFC 9110 section 4.2.4); drop it if a client sent one.
    target = target.split(b"#", 1)[0]
    raw_path, _, raw_query = target.partition(b"?")

    path = _decode_component(raw_path, "path")
    query = _parse_query(raw_query) if raw_query else {}
    return path, raw_path.decode("ascii", "replace"), query


def _decode_component(raw, what):
    if _BAD_ESCAPE.search(raw):
        raise TargetError(f"{what} has a malformed percent escape: {raw[:64]!r}")

    decoded = unquote_to_bytes(raw)
    if b"\x00" in decoded:
        raise TargetError(f"{what} contains a NUL byte: {raw[:64]!r}")

    try:
        return decoded.decode("utf-8")
    except UnicodeDecodeError:
        raise TargetError(f"{what} is not valid UTF-8 after decoding: {raw[:64]!r}") from None


def _parse_query(raw):
    if _BAD_ESCAPE.search(raw):
        raise TargetError(f"query has a malformed percent escape: {raw[:64]!r}")

    try:
        text = raw.decode("ascii")
        query = parse_qs(text, keep_blank_values=True, encoding="utf-8", errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise TargetError(f"query is not valid UTF-8 after decoding: {raw[:64]!r}") from None

    for key, values in query.items():
        if "\x00" in key or any("\x00" in v for v in values):
            raise TargetError(f"query contains a NUL byte: {raw[:64]!r}")
    return query
