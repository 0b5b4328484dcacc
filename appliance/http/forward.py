"""Passing a whole HTTP request from an API worker process to the main process, and back.

A worker (appliance/workers.py) answers plain reads itself and hands every
other request to the main process over a Unix-domain socket in the data
directory, as HTTP/1.1 with h11. The main process serves that socket with
the same router as its HTTPS port, wrapped in `ForwardedRouter`, and the
worker relays the answer to its client unchanged (status, headers, body).

The client's address travels in PEER_HEADER and the trace id in
X-Request-ID. PEER_HEADER is believed ONLY on the Unix socket: the worker
removes any copy a client sent and writes its own, and the HTTPS router never
reads it. This module knows nothing of the store or of which routes write;
it must never trust PEER_HEADER on a network listener.
"""

import functools
import logging
from urllib.parse import urlencode

import trio

from appliance import log
from appliance.http._h11 import h11
from appliance.http._types import HttpError, Response

logger = logging.getLogger(__name__)

PEER_HEADER = "x-cloudboot-peer"

# The longest forwarded request is the agent's long poll (at most 60 s, see
# appliance/proto/agent.py) or a full audit export; a main process silent for
# longer than this is stuck, and the client gets an answer saying so.
FORWARD_TIMEOUT_SECONDS = 300.0

# Bound on a relayed answer held in memory: an audit export of 10,000 events is a few MB.
MAX_RESPONSE_BYTES = 64 * 1024 * 1024

# A pooled connection idle this long is closed rather than reused, well inside the
# main process's keep-alive timeout, so a reused connection is never one it is closing.
POOL_IDLE_SECONDS = 5.0
POOL_SIZE = 64

# RFC 9110 section 7.6.1: connection-specific fields end at each hop; the rest
# (authorization, content-type, idempotency-key ...) travel on unchanged.
_NOT_FORWARDED = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "content-length",
        "host",
        "x-request-id",
        PEER_HEADER,
    }
)
# The worker's own server writes these again for its client.
_NOT_RELAYED = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "date", "x-request-id"}
)


class _Unanswered(Exception):
    """The main process took the request but gave no complete answer."""


class Forwarder:
    """`await forwarder(request)` -> the main process's Response for it.

    Keeps a few idle keep-alive connections to the socket. Counters say how
    many requests went through and how many found the main process away.
    """

    def __init__(self, socket_path, timeout_seconds=FORWARD_TIMEOUT_SECONDS):
        self.socket_path = str(socket_path)
        self.timeout_seconds = timeout_seconds
        self.forwarded = 0
        self.unavailable = 0
        self._idle = []

    async def __call__(self, request):
        self.forwarded += 1
        try:
            head = _head(request)
        except (h11.LocalProtocolError, UnicodeError) as e:
            # The worker's own server accepted it, so this is rare: a raw target or
            # header byte that does not survive being sent again.
            raise HttpError(400, "bad_request", f"request cannot be passed on: {e}") from None
        connection = await self._connection()
        try:
            with trio.fail_after(self.timeout_seconds):
                response = await connection.exchange(head, request.body)
        except (_Unanswered, trio.TooSlowError, trio.BrokenResourceError, OSError) as e:
            await trio.aclose_forcefully(connection.stream)
            self.unavailable += 1
            logger.warning(
                "main process gave no answer to %s %s: %r", request.method, request.path, e
            )
            raise HttpError(
                502,
                "main_unanswered",
                "the appliance's main process did not answer; the request may have been "
                "carried out: repeat it with the same Idempotency-Key, or check first",
            ) from None
        except BaseException:
            await trio.aclose_forcefully(connection.stream)
            raise

        self._release(connection)
        return response

    async def _connection(self):
        now = trio.current_time()
        while self._idle:
            connection = self._idle.pop()
            if now - connection.idle_since < POOL_IDLE_SECONDS:
                return connection
            await trio.aclose_forcefully(connection.stream)

        try:
            stream = await trio.open_unix_socket(self.socket_path)
        except OSError as e:
            self.unavailable += 1
            logger.warning("main process not reachable at %s: %s", self.socket_path, e)
            # Nothing reached the main process, so nothing was done: a plain retry is safe.
            raise HttpError(
                503,
                "main_unavailable",
                "the appliance's main process is not answering; nothing was done, retry shortly",
                headers=[("retry-after", "5")],
            ) from None
        return _Connection(stream)

    def _release(self, connection):
        if not connection.reusable() or len(self._idle) >= POOL_SIZE:
            trio.lowlevel.spawn_system_task(trio.aclose_forcefully, connection.stream)
            return
        connection.h11.start_next_cycle()
        connection.idle_since = trio.current_time()
        self._idle.append(connection)

    async def aclose(self):
        while self._idle:
            await trio.aclose_forcefully(self._idle.pop().stream)


class _Connection:
    def __init__(self, stream):
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)
        self.idle_since = 0.0

    async def exchange(self, head, body):
        data = self.h11.send(head)
        if body:
            data += self.h11.send(h11.Data(data=body))
        data += self.h11.send(h11.EndOfMessage())
        await self.stream.send_all(data)
        return await self._receive()

    async def _receive(self):
        status, headers, chunks, size = None, [], [], 0
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                data = await self.stream.receive_some(65536)
                if not data:
                    raise _Unanswered("connection closed before the answer ended")
                self.h11.receive_data(data)
            elif type(event) is h11.Response:
                status, headers = event.status_code, _relayed(event.headers)
            elif type(event) is h11.Data:
                size += len(event.data)
                if size > MAX_RESPONSE_BYTES:
                    raise _Unanswered(f"answer larger than {MAX_RESPONSE_BYTES} bytes")
                chunks.append(bytes(event.data))
            elif type(event) is h11.EndOfMessage:
                return Response(status, headers, b"".join(chunks))
            elif type(event) is h11.ConnectionClosed:
                raise _Unanswered("connection closed before the answer ended")

    def reusable(self):
        return self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE


def _head(request):
    target = request.raw_path
    if request.query:
        target += "?" + urlencode(request.query, doseq=True)
    # The server decoded header values as Latin-1; encoding them back gives the bytes sent.
    headers = [
        (name.encode("ascii"), value.encode("latin-1"))
        for name, value in request.headers.items()
        if name not in _NOT_FORWARDED
    ]
    host, port = request.client or ("", 0)
    headers += [
        (b"host", b"cloudboot-main"),
        (b"content-length", str(len(request.body)).encode()),
        (b"x-request-id", request.trace_id.encode()),
        (PEER_HEADER.encode(), f"{host} {port}".encode()),
    ]
    return h11.Request(method=request.method, target=target.encode(), headers=headers)


def _relayed(headers):
    return [
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in headers
        if name.decode("latin-1") not in _NOT_RELAYED
    ]


class ForwardedRouter:
    """The main process's router for the forwarding socket: restores the client's address.

    Every route of `router` is served, each handler called with request.client
    taken from PEER_HEADER and request.tls true (the client spoke TLS to the worker).
    """

    def __init__(self, router):
        self.router = router

    def resolve(self, method, path):
        handler, params = self.router.resolve(method, path)
        return functools.partial(_as_forwarded, handler), params

    def routes(self):
        return self.router.routes()


async def _as_forwarded(handler, request):
    peer = request.headers.pop(PEER_HEADER, None)
    client = parse_peer(peer)
    if client is None:
        raise HttpError(400, "bad_forward", f"{PEER_HEADER} must be 'address port', got {peer!r}")

    request.client = client
    request.tls = True
    with log.context(client=f"{client[0]}:{client[1]}"):
        return await handler(request)


def parse_peer(text):
    """(host, port) from PEER_HEADER's 'address port', or None when it is not that."""
    if text is None:
        return None
    host, _, port = text.rpartition(" ")
    if not port.isdigit() or not 0 <= int(port) <= 65535 or " " in host:
        return None
    return (host, int(port))
