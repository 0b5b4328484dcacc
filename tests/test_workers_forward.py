"""The hop from a worker to the main process: a real Unix socket, a real server, in one process.

The main side (ForwardedRouter over serve_listeners) and the worker side
(Forwarder) talk as they do in the appliance; the handler records what it
was given, so the tests see exactly what a main-process handler sees.
"""

import functools
import socket

import pytest
import trio

from appliance.config import HttpSettings
from appliance.http import HttpError, HttpStats, Request, Response, Router, serve_listeners
from appliance.http.forward import PEER_HEADER, ForwardedRouter, Forwarder


async def serve_unix(nursery, path, router, stats=None):
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(str(path))
    sock.listen()
    listeners = [trio.SocketListener(sock)]
    serve = functools.partial(serve_listeners, stats=stats)
    await nursery.start(serve, router, listeners, HttpSettings())


def recording_router(seen):
    router = Router()

    async def echo(request):
        seen.append(request)
        headers = [("x-answer", "yes"), ("content-type", "text/plain")]
        return Response(207, headers, b"body:" + request.body)

    router.add("POST", "/api/v1/things/{thing}", echo)
    router.add("GET", "/api/v1/things/{thing}", echo)
    return router


def worker_request(method, path, query=None, body=b"", headers=None):
    sent = {"authorization": "Bearer t", PEER_HEADER: "203.0.113.9 1", **(headers or {})}
    return Request(method, path, query, sent, body, ("192.0.2.7", 40123), True, "trace-abc")


async def test_a_forwarded_request_arrives_whole_with_the_real_peer(tmp_path):
    seen = []
    stats = HttpStats()
    async with trio.open_nursery() as nursery:
        router = ForwardedRouter(recording_router(seen))
        await serve_unix(nursery, tmp_path / "f.sock", router, stats)
        forwarder = Forwarder(tmp_path / "f.sock")
        request = worker_request(
            "POST", "/api/v1/things/a%20b", {"q": ["1", "2"], "x": [""]}, b'{"k": 1}'
        )
        request.raw_path = "/api/v1/things/a%20b"
        first = await forwarder(request)
        second = await forwarder(worker_request("GET", "/api/v1/things/c"))
        await forwarder.aclose()
        nursery.cancel_scope.cancel()

    assert first.status == 207
    assert first.body == b'body:{"k": 1}'
    assert ("x-answer", "yes") in first.headers
    assert not any(name in ("date", "content-length", "x-request-id") for name, _ in first.headers)

    arrived = seen[0]
    assert arrived.client == ("192.0.2.7", 40123)
    assert arrived.tls is True
    assert arrived.trace_id == "trace-abc"
    assert arrived.path_params == {"thing": "a b"}
    assert arrived.query == {"q": ["1", "2"], "x": [""]}
    assert arrived.headers["authorization"] == "Bearer t"
    # The client's own copy of the header never reaches a handler.
    assert PEER_HEADER not in arrived.headers
    assert second.status == 207 and seen[1].path == "/api/v1/things/c"
    # The second request went over the first one's pooled connection.
    assert stats.connections == 1 and stats.requests == 2


async def test_the_main_process_refuses_a_forward_without_a_peer(tmp_path):
    seen = []
    async with trio.open_nursery() as nursery:
        await serve_unix(nursery, tmp_path / "f.sock", ForwardedRouter(recording_router(seen)))
        stream = await trio.open_unix_socket(str(tmp_path / "f.sock"))
        await stream.send_all(b"GET /api/v1/things/a HTTP/1.1\r\nhost: x\r\n\r\n")
        answer = b""
        while b"}}" not in answer:
            answer += await stream.receive_some(4096)
        await stream.aclose()
        nursery.cancel_scope.cancel()

    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b'"code":"bad_forward"' in answer
    assert seen == []


async def test_a_main_process_that_is_away_gets_503_and_nothing_is_sent(tmp_path):
    forwarder = Forwarder(tmp_path / "nobody.sock")
    with pytest.raises(HttpError) as error:
        await forwarder(worker_request("POST", "/api/v1/things/a"))
    assert error.value.status == 503
    assert error.value.code == "main_unavailable"
    assert forwarder.unavailable == 1


async def test_a_main_process_that_hangs_up_mid_answer_gets_502(tmp_path):
    async def hang_up(stream):
        await stream.receive_some(65536)
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
        await stream.aclose()

    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(str(tmp_path / "f.sock"))
    sock.listen()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, hang_up, [trio.SocketListener(sock)])
        forwarder = Forwarder(tmp_path / "f.sock")
        with pytest.raises(HttpError) as error:
            await forwarder(worker_request("POST", "/api/v1/things/a"))
        nursery.cancel_scope.cancel()

    assert error.value.status == 502
    assert error.value.code == "main_unanswered"
    assert "Idempotency-Key" in error.value.message
