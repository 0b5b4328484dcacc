"""Byte ranges (RFC 9110 section 14) and validators for file responses.

Pure functions: the server asks `choose_range` which part of a file to send
and `file_validators` which ETag and Last-Modified to put on it. No I/O.
"""

import email.utils


class RangeNotSatisfiable(ValueError):
    """Every range in the Range header lies beyond the end of the file (answered with 416)."""


def choose_range(header, size):
    """Return (start, end_inclusive) for a satisfiable single range, or None for the whole file.

    A header we do not understand is ignored (RFC 9110 section 14.2 lets a server
    ignore Range), and so is a multi-range request: we answer 200 with the whole
    file rather than build multipart/byteranges.
    """
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None

    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    first, last = first.strip(), last.strip()
    if not (first.isdigit() or first == "") or not (last.isdigit() or last == ""):
        return None

    if first == "":
        # Suffix range "bytes=-N": the last N bytes (section 14.1.2).
        if last == "":
            return None
        length = int(last)
        if length == 0 or size == 0:
            raise RangeNotSatisfiable(f"suffix range {header!r} selects nothing of {size} bytes")
        return max(0, size - length), size - 1

    start = int(first)
    end = size - 1 if last == "" else min(int(last), size - 1)
    if last != "" and int(last) < start:
        return None
    if start >= size:
        raise RangeNotSatisfiable(f"range {header!r} starts beyond the {size}-byte file")
    return start, end


def file_validators(size, mtime_ns):
    """ETag and Last-Modified for a file of this size and modification time."""
    etag = f'"{size:x}-{mtime_ns:x}"'
    last_modified = email.utils.formatdate(mtime_ns / 1e9, usegmt=True)
    return etag, last_modified


def if_range_allows(if_range, etag, last_modified):
    """Whether a Range may be honoured given the If-Range header (RFC 9110 section 13.1.5)."""
    if not if_range:
        return True
    return if_range.strip() in (etag, last_modified)


def etag_matches(if_none_match, etag):
    """Whether If-None-Match names this ETag (weak comparison, section 13.1.2)."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    candidates = (tag.strip().removeprefix("W/") for tag in if_none_match.split(","))
    return etag in candidates
