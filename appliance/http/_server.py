"""The HTTP/1.1 server: h11 for the protocol, trio for the sockets, TLS optional.

Each connection runs in its own task and contains all of its own errors: a
peer that resets, stalls or sends garbage loses its connection and nothing
else (an unhandled BrokenResourceError would stop a bare trio.serve_tcp; see
/work/shared/LAB.md). Handlers never see protocol errors, and clients never
see a stack trace. The hot path does not log: counters in HttpStats say what
happened, and failures log once, at the place they are handled.
"""

import logging
import os
import re
import socket
import ssl
import time
from email.utils import formatdate

import trio

from appliance import log
from appliance.http._files import SEND_STALL_SECONDS, FileChangedError, response_event, send_file
from appliance.http._h11 import h11
from appliance.http._target import TargetError, parse_target
from appliance.http._types import REASONS, HttpError, Request, Response, error_body, error_response

logger = logging.getLogger(__name__)

_RECEIVE_SIZE = 65536

# Slowest request body accepted, in bytes per second, on top of the header
# timeout: 8 MiB (the default body limit) may take 80 s more, a trickle nothing.
MIN_BODY_RATE = 100_000

_SANE_TRACE_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
_PEER_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError)
_JSON = (b"content-type", b"application/json")


class HttpStats:
    """Counters for one server; read by the metrics endpoint and by tests."""

    def __init__(self):
        self.connections = 0
        self.requests = 0
        self.server_errors = 0
        self.client_errors = 0
        self.peer_gone = 0
        self.timeouts = 0
        self.refused = 0


class _Timeout(Exception):
    """The peer did not send a request (or its headers) in time."""


async def serve(
    router,
    host,
    port,
    http_settings,
    *,
    ssl_context=None,
    reuse_port=False,
    stats=None,
    task_status=trio.TASK_STATUS_IGNORED,
):
    """Serve `router` on host:port until cancelled.

    task_status.started() is given the listeners, so a caller that asked for
    port 0 finds the real one with listeners[0].socket.getsockname().
    """
    listeners = await open_listeners(host, port, reuse_port=reuse_port)
    await serve_listeners(
        router,
        listeners,
        http_settings,
        ssl_context=ssl_context,
        stats=stats,
        task_status=task_status,
    )


async def serve_listeners(
    router,
    listeners,
    http_settings,
    *,
    ssl_context=None,
    stats=None,
    task_status=trio.TASK_STATUS_IGNORED,
):
    """Serve `router` on listeners the caller opened (e.g. a Unix socket) until cancelled."""
    server = _Server(router, http_settings, ssl_context, stats or HttpStats())
    await trio.serve_listeners(server.handle_stream, listeners, task_status=task_status)


async def open_listeners(host, port, *, reuse_port=False):
    """Bound, listening trio.SocketListeners for host:port (one per address family)."""
    infos = await trio.socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    listeners = []
    seen = set()
    for family, kind, proto, _, sockaddr in infos:
        if (family, sockaddr) in seen:
            continue
        seen.add((family, sockaddr))
        listeners.append(await _listen(family, kind, proto, sockaddr, reuse_port))
    return listeners


async def _listen(family, kind, proto, sockaddr, reuse_port):
    sock = trio.socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            # Several worker processes share one port; the kernel spreads connections.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        await sock.bind(sockaddr)
        sock.listen(socket.SOMAXCONN)
    except BaseException:
        sock.close()
        raise
    return trio.SocketListener(sock)


class _Server:
    def __init__(self, router, settings, ssl_context, stats):
        self.router = router
        self.settings = settings
        self.ssl_context = ssl_context
        self.stats = stats
        self.open_connections = 0

    async def handle_stream(self, stream):
        self.stats.connections += 1
        client = _peer(stream)
        if self.open_connections >= self.settings.max_connections:
            # Past the cap a new connection is closed at once: the appliance keeps
            # its memory and file descriptors (20,000 per process here) for the
            # connections it already serves.
            self.stats.refused += 1
            logger.warning("refused a connection from %s: %d open", client, self.open_connections)
            await trio.aclose_forcefully(stream)
            return

        self.open_connections += 1
        try:
            if self.ssl_context is not None:
                stream = await self._start_tls(stream)
            await _Connection(self, stream, client).run()
        except _PEER_GONE as e:
            self.stats.peer_gone += 1
            logger.debug("connection from %s ended: %r", client, e)
        except (_Timeout, trio.TooSlowError):
            self.stats.timeouts += 1
            logger.debug("connection from %s timed out", client)
        except FileChangedError as e:
            logger.warning("connection from %s cut: %s", client, e)
        except Exception:
            logger.exception("connection from %s failed", client)
        finally:
            self.open_connections -= 1
            await trio.aclose_forcefully(stream)

    async def _start_tls(self, stream):
        tls = trio.SSLStream(stream, self.ssl_context, server_side=True, https_compatible=True)
        with trio.fail_after(self.settings.header_timeout_seconds):
            await tls.do_handshake()
        return tls


def _peer(stream):
    try:
        address = stream.socket.getpeername()
    except (AttributeError, OSError):
        return ("", 0)
    if not isinstance(address, tuple):
        # A Unix-domain peer has no address and port (getpeername gives a path or "").
        return ("", 0)
    return (address[0], address[1])


class _Connection:
    """One client connection: requests in, responses out, until either side ends it."""

    def __init__(self, server, stream, client):
        self.server = server
        self.settings = server.settings
        self.stream = stream
        self.client = client
        self.client_text = f"{client[0]}:{client[1]}"
        self.tls = server.ssl_context is not None
        self.h11 = h11.Connection(
            h11.SERVER, max_incomplete_event_size=server.settings.max_header_bytes
        )

    async def run(self):
        served = 0
        limit = self.settings.keepalive_max_requests
        while True:
            event = await self._receive_head(first=served == 0)
            if event is None:
                return
            served += 1
            self.server.stats.requests += 1
            await self._exchange(event, last=served >= limit)

            if self.h11.our_state is not h11.DONE or self.h11.their_state is not h11.DONE:
                return
            self.h11.start_next_cycle()

    async def _receive_head(self, first):
        """The next h11.Request, or None when the peer closed or idled out between requests."""
        settings = self.settings
        idle = settings.header_timeout_seconds if first else settings.keepalive_timeout_seconds
        deadline = trio.current_time() + idle
        waiting_for_first_byte = True

        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as e:
                await self._refuse(e.error_status_hint, e)
                return None

            if event is h11.NEED_DATA:
                data = await self._receive(deadline, waiting_for_first_byte)
                if data is None:
                    return None
                if waiting_for_first_byte and data:
                    # The idle wait is over; the header must now arrive in header time.
                    waiting_for_first_byte = False
                    if not first:
                        deadline = trio.current_time() + settings.header_timeout_seconds
                self.h11.receive_data(data)
            elif type(event) is h11.Request:
                return event
            else:
                # ConnectionClosed, or anything else before a request: nothing to answer.
                return None

    async def _receive(self, deadline, idle):
        with trio.move_on_at(deadline):
            return await self.stream.receive_some(_RECEIVE_SIZE)
        if idle:
            # Nothing sent at all: close quietly, as for an idle keep-alive connection.
            return None
        # Slowloris: a header that trickles in is cut off at header_timeout_seconds.
        self.server.stats.timeouts += 1
        await self._send_error(408, "request_timeout", "request header not received in time", "")
        return None

    async def _refuse(self, status, problem):
        self.server.stats.client_errors += 1
        if status == 431:
            code, message = "headers_too_large", "request header is larger than the server accepts"
        else:
            code, message = "bad_request", f"malformed HTTP request: {problem}"
        await self._send_error(status, code, message, "")

    async def _exchange(self, event, last):
        method = event.method.decode("ascii", "replace")
        headers = _headers(event.headers)
        trace_id = _trace_id(headers.get("x-request-id"))

        with log.context(trace_id=trace_id, client=self.client_text):
            request = Request(
                method, "", None, headers, b"", self.client, self.tls, trace_id, None,
                event.http_version.decode("ascii", "replace"),
            )  # fmt: skip
            try:
                self._check_head(event, request)
                request.body = await self._receive_body(headers)
                response = await self._dispatch(request)
            except HttpError as e:
                response = error_response(e, trace_id)

            if response.status >= 500:
                self.server.stats.server_errors += 1
            elif response.status >= 400:
                self.server.stats.client_errors += 1
            await self.send_response(request, response, last)

    def _check_head(self, event, request):
        size = len(event.target) + sum(len(n) + len(v) + 4 for n, v in event.headers)
        if size > self.settings.max_header_bytes:
            raise HttpError(431, "headers_too_large", "request header is larger than allowed")
        try:
            request.path, request.raw_path, request.query = parse_target(event.target)
        except TargetError as e:
            raise HttpError(400, "bad_target", str(e)) from None

    async def _receive_body(self, headers):
        limit = self.settings.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None and int(declared) > limit:
            # h11 has already checked that Content-Length is a number.
            raise HttpError(413, "body_too_large", f"request body over {limit} bytes")
        if self.h11.they_are_waiting_for_100_continue:
            await self.send_bytes(self.h11.send(h11.InformationalResponse(status_code=100)))

        chunks = []
        received = 0
        started = trio.current_time()
        deadline = started + self.settings.header_timeout_seconds
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as e:
                raise HttpError(400, "bad_request", f"malformed request body: {e}") from None
            if event is h11.NEED_DATA:
                data = await self._receive_body_data(deadline)
                # One deadline for the whole body, extended only by what has
                # arrived at MIN_BODY_RATE: a body that trickles in a byte at a
                # time cannot hold its buffered part (up to max_body_bytes) for ever.
                received_so_far = received + len(data)
                deadline = (
                    started
                    + self.settings.header_timeout_seconds
                    + received_so_far / MIN_BODY_RATE
                )
                self.h11.receive_data(data)
                continue
            if type(event) is h11.Data:
                received += len(event.data)
                if received > limit:
                    raise HttpError(413, "body_too_large", f"request body over {limit} bytes")
                chunks.append(event.data)
                continue
            if type(event) is h11.EndOfMessage:
                return b"".join(chunks)
            raise trio.BrokenResourceError("peer closed during the request body")

    async def _receive_body_data(self, deadline):
        with trio.move_on_at(deadline):
            return await self.stream.receive_some(_RECEIVE_SIZE)
        raise _Timeout("request body stalled")

    async def _dispatch(self, request):
        try:
            handler, request.path_params = self.server.router.resolve(request.method, request.path)
            response = await handler(request)
        except HttpError:
            raise
        except Exception:
            logger.exception("handler failed for %s %s", request.method, request.path)
            return _internal_error(request.trace_id)

        if not isinstance(response, Response):
            logger.error("handler for %s %s returned %r", request.method, request.path, response)
            return _internal_error(request.trace_id)
        return response

    async def send_response(self, request, response, last):
        headers = [(b"x-request-id", request.trace_id.encode()), (b"date", http_date())]
        headers += response.headers
        if last or self.h11.their_state is not h11.DONE:
            # We stop here (request limit, or a body left unread): say so instead of
            # letting the client find a closed socket.
            headers.append((b"connection", b"close"))

        if response.file_path is not None:
            await send_file(self, request, response, headers)
            return

        headers.append((b"content-length", str(len(response.body)).encode()))
        event = response_event(response.status, headers)
        if event is None:
            # Our own 500 has valid headers, so this goes one level deep at most.
            await self.send_response(request, _internal_error(request.trace_id), last)
            return
        data = self.h11.send(event)
        if response.body and request.method != "HEAD":
            data += self.h11.send(h11.Data(data=response.body))
        data += self.h11.send(h11.EndOfMessage())
        await self.send_bytes(data)

    async def send_bytes(self, data):
        with trio.fail_after(SEND_STALL_SECONDS):
            await self.stream.send_all(data)

    async def _send_error(self, status, code, message, trace_id):
        """Answer a request we could not parse, if the protocol still lets us."""
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        trace_id = trace_id or new_trace_id()
        body = error_body(status, code, message, trace_id)
        headers = [
            _JSON,
            (b"x-request-id", trace_id.encode()),
            (b"date", http_date()),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        try:
            data = self.h11.send(
                h11.Response(status_code=status, headers=headers, reason=REASONS.get(status, b""))
            )
            data += self.h11.send(h11.Data(data=body)) + self.h11.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            return
        await self.send_bytes(data)


def _headers(raw):
    headers = {}
    for name, value in raw:
        key = name.decode("ascii")
        text = value.decode("latin-1")
        # RFC 9110 section 5.3: repeated fields combine into one comma-separated value.
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return headers


def _trace_id(incoming):
    if incoming is not None and _SANE_TRACE_ID.fullmatch(incoming):
        return incoming
    return new_trace_id()


def new_trace_id():
    return os.urandom(8).hex()


def _internal_error(trace_id):
    message = f"internal error; the server log has the details under trace id {trace_id}"
    return error_response(HttpError(500, "internal_error", message), trace_id)


_date_cache = [0, b""]


def http_date():
    """The Date header value (RFC 9110 section 6.6.1), formatted at most once a second."""
    now = int(time.time())
    if now != _date_cache[0]:
        _date_cache[0] = now
        _date_cache[1] = formatdate(now, usegmt=True).encode()
    return _date_cache[1]
