"""Adversarial HTTP: a request body that trickles in, and a flood of connections.

appliance/http/_server.py used to restart the body deadline after every chunk
it received, so a client that sent one byte a little faster than
http.header_timeout_seconds kept its connection, and the part of the body
already buffered (up to http.max_body_bytes, 8 MiB), for as long as it liked.
Measured on the running appliance: 30 connections held 250 MB of RSS for as
long as they dripped. Now the whole body has one deadline, and the number of
open connections is capped.
"""

import trio

from appliance.config import HttpSettings
from appliance.http import Response, Router
from tests.http_support import start_server


async def _ok(request):
    return Response.json({"ok": True})


async def test_a_trickled_body_is_cut_off_within_the_header_timeout(nursery):
    router = Router()
    router.add("POST", "/echo", _ok)
    settings = HttpSettings(header_timeout_seconds=0.5)
    port = await start_server(nursery, router, settings)

    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n")
        # One byte every 0.3 s for 3 s: each under the timeout, the whole six times over it.
        cut_off = False
        for _ in range(10):
            await trio.sleep(0.3)
            try:
                await stream.send_all(b"a")
            except trio.BrokenResourceError:
                cut_off = True
                break
        if not cut_off:
            # A 408 answer or the close both show up here; silence means still waiting.
            with trio.move_on_after(0.2):
                await stream.receive_some(4096)
                cut_off = True

    assert cut_off, "the server still waited for the body after 3 s (header timeout 0.5 s)"


async def test_connections_past_the_cap_are_closed_and_the_server_keeps_serving(nursery):
    router = Router()
    router.add("GET", "/ok", _ok)
    settings = HttpSettings(max_connections=3, header_timeout_seconds=5)
    port = await start_server(nursery, router, settings)

    held = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(3)]
    extra = await trio.open_tcp_stream("127.0.0.1", port)
    with trio.fail_after(5):
        assert await extra.receive_some(100) == b""
    await extra.aclose()

    for stream in held:
        await stream.aclose()
    with trio.fail_after(5):
        while True:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(b"GET /ok HTTP/1.1\r\nhost: x\r\n\r\n")
                answer = await stream.receive_some(4096)
            if answer.startswith(b"HTTP/1.1 200"):
                break
            await trio.sleep(0.05)
