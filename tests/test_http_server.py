"""The HTTP server against real clients (curl) and scripted misbehaving peers, on loopback."""

import json
import logging
import os
import re

import pytest
import trio

from appliance import log
from appliance.config import HttpSettings
from appliance.http import HttpError, HttpStats, Response, Router
from tests.http_support import curl, parse_head, raw_exchange, start_server


async def echo(request):
    return Response.json(
        {
            "method": request.method,
            "path": request.path,
            "query": request.query,
            "params": request.path_params,
            "client": list(request.client),
            "tls": request.tls,
            "trace_id": request.trace_id,
            "agent": request.headers.get("user-agent"),
        }
    )


async def fixed(request):
    return Response.json({"fixed": "document"})


async def post_json(request):
    return Response.json({"got": request.json()}, status=201)


async def teapot(request):
    raise HttpError(418, "teapot", "short and stout")


async def crash(request):
    raise RuntimeError("secret internal detail")


async def not_a_response(request):
    return {"oops": True}


@pytest.fixture
def blob(tmp_path):
    path = tmp_path / "blob.bin"
    path.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    return path


@pytest.fixture
def router(blob):
    async def file(request):
        return Response.file(blob)

    router = Router()
    router.add("GET", "/echo/{name}", echo)
    router.add("GET", "/fixed", fixed)
    router.add("POST", "/json", post_json)
    router.add("GET", "/teapot", teapot)
    router.add("GET", "/crash", crash)
    router.add("GET", "/weird", not_a_response)
    router.add("GET", "/blob", file)
    return router


async def test_json_route_with_params_and_query(nursery, router):
    port = await start_server(nursery, router)

    result = await curl(f"http://127.0.0.1:{port}/echo/h%C3%A9llo?a=1&a=2&b=")
    body = json.loads(result.stdout)

    assert body["path"] == "/echo/héllo"
    assert body["params"] == {"name": "héllo"}
    assert body["query"] == {"a": ["1", "2"], "b": [""]}
    assert body["client"][0] == "127.0.0.1"
    assert body["tls"] is False


async def test_unknown_path_is_json_404_and_wrong_method_is_405_with_allow(nursery, router):
    port = await start_server(nursery, router)

    missing = await curl("-i", f"http://127.0.0.1:{port}/nothing/here")
    status, _ = parse_head(missing.stdout)
    error = json.loads(missing.stdout.split(b"\r\n\r\n", 1)[1])["error"]
    assert status == 404 and error["code"] == "not_found" and error["trace_id"]

    wrong = await curl("-i", "-X", "DELETE", f"http://127.0.0.1:{port}/echo/x")
    status, headers = parse_head(wrong.stdout)
    assert status == 405
    assert headers["allow"] == "GET, HEAD"


async def test_head_on_get_route_has_headers_and_no_body(nursery, router):
    port = await start_server(nursery, router)

    full = await curl("-i", f"http://127.0.0.1:{port}/fixed")
    head = await curl("-I", f"http://127.0.0.1:{port}/fixed")

    status, headers = parse_head(head.stdout)
    assert status == 200
    assert int(headers["content-length"]) == len(full.stdout.split(b"\r\n\r\n", 1)[1])
    assert head.stdout.endswith(b"\r\n\r\n")


async def test_http_error_and_crash_have_the_json_shape_and_no_traceback(nursery, router, caplog):
    port = await start_server(nursery, router)

    teapot = await curl("-i", f"http://127.0.0.1:{port}/teapot")
    assert parse_head(teapot.stdout)[0] == 418
    assert json.loads(teapot.stdout.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "teapot"

    # The context filter is what puts trace_id on records in production (appliance.log.setup).
    caplog.handler.addFilter(log._ContextFilter())
    with caplog.at_level(logging.ERROR):
        crashed = await curl(
            "-i", "-H", "X-Request-ID: req-42.a_b", f"http://127.0.0.1:{port}/crash"
        )
    status, headers = parse_head(crashed.stdout)
    body = crashed.stdout.split(b"\r\n\r\n", 1)[1]
    assert status == 500
    assert headers["x-request-id"] == "req-42.a_b"
    assert json.loads(body)["error"]["trace_id"] == "req-42.a_b"
    assert b"secret internal detail" not in body and b"Traceback" not in body

    failures = [r for r in caplog.records if r.exc_info]
    assert len(failures) == 1
    assert failures[0].ctx["trace_id"] == "req-42.a_b"

    weird = await curl("-i", f"http://127.0.0.1:{port}/weird")
    assert parse_head(weird.stdout)[0] == 500


async def test_insane_request_id_is_replaced(nursery, router):
    port = await start_server(nursery, router)

    result = await curl(
        "-i", "-H", "X-Request-ID: no spaces;allowed", f"http://127.0.0.1:{port}/echo/x"
    )
    status, headers = parse_head(result.stdout)
    assert status == 200
    assert headers["x-request-id"] != "no spaces;allowed"
    assert len(headers["x-request-id"]) == 16

    too_long = "a" * 129
    result = await curl("-i", "-H", f"X-Request-ID: {too_long}", f"http://127.0.0.1:{port}/echo/x")
    assert parse_head(result.stdout)[1]["x-request-id"] != too_long


async def test_json_body_bad_json_and_body_limit(nursery, router):
    settings = HttpSettings(max_body_bytes=1000)
    port = await start_server(nursery, router, settings)
    url = f"http://127.0.0.1:{port}/json"

    good = await curl("-i", "-H", "Content-Type: application/json", "-d", '{"a": [1, 2]}', url)
    assert parse_head(good.stdout)[0] == 201
    assert json.loads(good.stdout.split(b"\r\n\r\n", 1)[1]) == {"got": {"a": [1, 2]}}

    bad = await curl("-i", "-d", "{not json", url)
    assert parse_head(bad.stdout)[0] == 400
    assert b'"bad_json"' in bad.stdout

    large = await curl("-i", "-d", "x" * 5000, url)
    assert parse_head(large.stdout)[0] == 413


async def test_chunked_body_over_limit_is_413(nursery, router):
    settings = HttpSettings(max_body_bytes=1000)
    port = await start_server(nursery, router, settings)

    chunk = b"x" * 800
    request = (
        b"POST /json HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n%s\r\n" % (len(chunk), chunk) * 2
        + b"0\r\n\r\n"
    )
    answer = await raw_exchange(port, request)
    assert parse_head(answer)[0] == 413


async def test_keep_alive_reuses_one_connection(nursery, router):
    stats = HttpStats()
    port = await start_server(nursery, router, stats=stats)
    url = f"http://127.0.0.1:{port}/echo/x"

    result = await curl("-v", url, url, url)

    assert result.stdout.count(b'"method":"GET"') == 3
    assert b"Re-using existing connection" in result.stderr or b"Reusing" in result.stderr
    assert stats.connections == 1
    assert stats.requests == 3


async def test_max_requests_per_connection_closes_after_the_last(nursery, router):
    stats = HttpStats()
    port = await start_server(nursery, router, HttpSettings(keepalive_max_requests=2), stats=stats)
    url = f"http://127.0.0.1:{port}/echo/x"

    result = await curl(url, url, url, url)

    assert result.stdout.count(b'"method":"GET"') == 4
    assert stats.connections == 2


async def test_bad_targets_are_400(nursery, router):
    port = await start_server(nursery, router)

    for target in (b"/echo/a%00b", b"/echo/%ff%fe", b"/echo/%zz", b"/echo/x?q=%ff"):
        request = b"GET " + target + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        answer = await raw_exchange(port, request, 2)
        assert parse_head(answer)[0] == 400, target


async def test_garbage_request_line_is_400_and_server_keeps_serving(nursery, router):
    port = await start_server(nursery, router)

    answer = await raw_exchange(port, b"\x16\x03\x01 this is not http\r\n\r\n", 2)
    assert parse_head(answer)[0] == 400

    result = await curl(f"http://127.0.0.1:{port}/echo/after")
    assert b'"after"' in result.stdout


async def test_oversized_header_is_431(nursery, router):
    port = await start_server(nursery, router, HttpSettings(max_header_bytes=4096))

    big = b"X-Big: " + b"a" * 8000 + b"\r\n"
    answer = await raw_exchange(port, b"GET /echo/x HTTP/1.1\r\nHost: t\r\n" + big + b"\r\n", 2)
    assert parse_head(answer)[0] == 431

    result = await curl("-i", "-H", "X-Big: " + "b" * 5000, f"http://127.0.0.1:{port}/echo/x")
    assert parse_head(result.stdout)[0] == 431


async def test_slowloris_header_is_cut_off_at_header_timeout(nursery, router):
    stats = HttpStats()
    settings = HttpSettings(header_timeout_seconds=1.0)
    port = await start_server(nursery, router, settings, stats=stats)

    stream = await trio.open_tcp_stream("127.0.0.1", port)
    received = b""
    started = trio.current_time()
    async with stream:
        await stream.send_all(b"GET /echo/x HTTP/1.1\r\n")
        with trio.move_on_after(6):
            # One header byte every 0.3 s: never a full header in time.
            for byte in b"X-Slow: " + b"z" * 100:
                try:
                    await stream.send_all(bytes([byte]))
                except trio.BrokenResourceError:
                    break
                await trio.sleep(0.3)
        with trio.move_on_after(3):
            received = await stream.receive_some(65536)
    elapsed = trio.current_time() - started

    assert parse_head(received)[0] == 408
    assert elapsed < 6
    assert stats.timeouts >= 1


async def test_idle_keep_alive_connection_is_closed_silently(nursery, router):
    settings = HttpSettings(keepalive_timeout_seconds=0.5)
    port = await start_server(nursery, router, settings)

    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET /echo/x HTTP/1.1\r\nHost: t\r\n\r\n")
        first = await stream.receive_some(65536)
        assert parse_head(first)[0] == 200
        with trio.fail_after(5):
            rest = await stream.receive_some(65536)
    assert rest == b""


async def test_peer_reset_mid_download_does_not_stop_the_server(nursery, router, blob):
    stats = HttpStats()
    port = await start_server(nursery, router, stats=stats)

    for _ in range(5):
        sock = trio.socket.socket()
        await sock.connect(("127.0.0.1", port))
        # Tiny receive buffer so the server is mid-sendfile when we reset.
        await sock.send(b"GET /blob HTTP/1.1\r\nHost: t\r\n\r\n")
        await sock.recv(1000)
        # SO_LINGER 0 makes close() send RST instead of FIN.
        sock.setsockopt(
            trio.socket.SOL_SOCKET, trio.socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
        )
        sock.close()

    result = await curl(f"http://127.0.0.1:{port}/blob")
    assert result.stdout == blob.read_bytes()
    assert stats.peer_gone >= 1


async def test_conditional_get_answers_304(nursery, router):
    port = await start_server(nursery, router)

    first = await curl("-i", f"http://127.0.0.1:{port}/blob", "-o", "/dev/null", "-D", "-")
    etag = parse_head(first.stdout)[1]["etag"]
    again = await curl("-i", "-H", f"If-None-Match: {etag}", f"http://127.0.0.1:{port}/blob")

    assert parse_head(again.stdout)[0] == 304
    assert again.stdout.endswith(b"\r\n\r\n")


async def test_reuse_port_lets_two_servers_share_a_port(nursery, router):
    from appliance.http import open_listeners

    first = await open_listeners("127.0.0.1", 0, reuse_port=True)
    port = first[0].socket.getsockname()[1]
    second = await open_listeners("127.0.0.1", port, reuse_port=True)
    for listener in first + second:
        await listener.aclose()

    with pytest.raises(OSError):
        lonely = await open_listeners("127.0.0.1", 0)
        taken = lonely[0].socket.getsockname()[1]
        try:
            await open_listeners("127.0.0.1", taken)
        finally:
            await lonely[0].aclose()


async def test_handler_with_an_invalid_header_gets_a_500_not_a_broken_connection(
    nursery, router, blob, caplog
):
    async def bad_header(request):
        return Response(200, [("x-injected", "a\r\nSet-Cookie: evil=1")], b"body")

    async def bad_file_header(request):
        return Response.file(blob, headers=[("x-count", 5)])

    router.add("GET", "/bad-header", bad_header)
    router.add("GET", "/bad-file-header", bad_file_header)
    port = await start_server(nursery, router)
    url = f"http://127.0.0.1:{port}"

    with caplog.at_level(logging.ERROR):
        result = await curl("-i", f"{url}/bad-header", f"{url}/bad-file-header", f"{url}/fixed")

    statuses = [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", result.stdout)]
    assert statuses == [500, 500, 200], result.stdout
    assert b"evil" not in result.stdout
    assert len([r for r in caplog.records if r.exc_info]) == 2
