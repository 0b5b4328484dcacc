"""Send a file as a response body: Range, HEAD, validators, and sendfile.

On plain TCP the body goes from the page cache to the socket with
os.sendfile, so a boot storm of 50 machines pulling a 64 MiB initrd does not
copy every byte through Python. Over TLS the bytes must pass through the TLS
layer, so the file is read in chunks. Reads of a cold file block the event loop
while the disk answers (see docs/limitations.md). This module never decides
which file a client may read: the handler that built the Response did that.
"""

import logging
import os
import stat

import trio

from appliance.http._h11 import h11
from appliance.http._ranges import (
    RangeNotSatisfiable,
    choose_range,
    etag_matches,
    file_validators,
    if_range_allows,
)
from appliance.http._types import REASONS, HttpError, error_response

logger = logging.getLogger(__name__)

_CHUNK = 256 * 1024
_SENDFILE_CHUNK = 4 * 1024 * 1024
# A peer that takes no bytes for this long is gone; nothing in HttpSettings bounds sends.
SEND_STALL_SECONDS = 60.0
_INVALID = HttpError(500, "internal_error", "internal error; the server log has the details")


class FileChangedError(Exception):
    """The file became shorter while it was being sent; the connection must be cut."""


class _Span:
    """Stands in for body bytes h11 must count but never touches (sent by sendfile)."""

    __slots__ = ("length",)

    def __init__(self, length):
        self.length = length

    def __len__(self):
        return self.length


async def send_file(connection, request, response, headers):
    """Send response.file_path on `connection` (a _Connection), honouring Range and HEAD."""
    try:
        fd = os.open(response.file_path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        await _send_error(connection, request, HttpError(404, "not_found", "no such file"))
        return
    try:
        await _send_open_file(connection, request, response, headers, fd)
    finally:
        os.close(fd)


async def _send_open_file(connection, request, response, headers, fd):
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        await _send_error(connection, request, HttpError(404, "not_found", "not a file"))
        return

    size = info.st_size
    etag, last_modified = file_validators(size, info.st_mtime_ns)
    headers += [(b"accept-ranges", b"bytes"), (b"etag", etag), (b"last-modified", last_modified)]

    if etag_matches(request.headers.get("if-none-match"), etag):
        if not await _send_head(connection, 304, headers):
            await _send_error(connection, request, _INVALID)
        return

    try:
        span = _requested_span(request, size, etag, last_modified)
    except RangeNotSatisfiable as e:
        error = HttpError(
            416, "range_not_satisfiable", str(e), [("content-range", f"bytes */{size}")]
        )
        await _send_error(connection, request, error)
        return

    status, start, length = span
    headers.append((b"content-length", str(length).encode()))
    if status == 206:
        headers.append((b"content-range", f"bytes {start}-{start + length - 1}/{size}".encode()))

    if not await _send_head(connection, status, headers):
        await _send_error(connection, request, _INVALID)
        return
    if request.method == "HEAD" or length == 0:
        connection.h11.send(h11.EndOfMessage())
        return
    await _send_body(connection, fd, start, length)


def _requested_span(request, size, etag, last_modified):
    """(status, start, length) to send."""
    wanted = request.headers.get("range")
    if wanted and if_range_allows(request.headers.get("if-range"), etag, last_modified):
        chosen = choose_range(wanted, size)
        if chosen is not None:
            start, end = chosen
            return 206, start, end - start + 1
    return 200, 0, size


async def _send_head(connection, status, headers):
    """Send the response head; False (logged) when a handler's header made it invalid."""
    event = response_event(status, headers)
    if event is None:
        return False
    await connection.send_bytes(connection.h11.send(event))
    if status == 304:
        connection.h11.send(h11.EndOfMessage())
    return True


def response_event(status, headers):
    """The h11.Response to send, or None (logged once) when a handler gave an invalid one.

    h11 checks the status and every header when the event is built, before the
    connection's state changes, so a bad value here still leaves room for a 500.
    """
    try:
        return h11.Response(status_code=status, headers=headers, reason=REASONS.get(status, b""))
    except (h11.LocalProtocolError, TypeError, ValueError):
        logger.exception("handler produced an invalid response (status %r)", status)
        return None


async def _send_error(connection, request, error):
    response = error_response(error, request.trace_id)
    await connection.send_response(request, response, last=False)


async def _send_body(connection, fd, start, length):
    # h11 tracks Content-Length; _Span lets it count bytes it never sees.
    connection.h11.send_with_data_passthrough(h11.Data(data=_Span(length)))
    raw_socket = getattr(connection.stream, "socket", None)
    if raw_socket is not None:
        await _sendfile(raw_socket, fd, start, length)
    else:
        await _send_chunks(connection.stream, fd, start, length)
    connection.h11.send(h11.EndOfMessage())


async def _sendfile(sock, fd, offset, remaining):
    out = sock.fileno()
    with trio.CancelScope() as scope:
        scope.deadline = trio.current_time() + SEND_STALL_SECONDS
        while remaining:
            try:
                sent = os.sendfile(out, fd, offset, min(remaining, _SENDFILE_CHUNK))
            except BlockingIOError:
                await trio.lowlevel.wait_writable(sock)
                continue
            if sent == 0:
                raise FileChangedError("file ended before its announced length")
            offset += sent
            remaining -= sent
            scope.deadline = trio.current_time() + SEND_STALL_SECONDS
            # Let other connections run between large writes.
            await trio.lowlevel.checkpoint()
    if scope.cancelled_caught:
        raise trio.TooSlowError("peer stopped reading the file")


async def _send_chunks(stream, fd, offset, remaining):
    while remaining:
        chunk = os.pread(fd, min(remaining, _CHUNK), offset)
        if not chunk:
            raise FileChangedError("file ended before its announced length")
        with trio.fail_after(SEND_STALL_SECONDS):
            await stream.send_all(chunk)
        offset += len(chunk)
        remaining -= len(chunk)
