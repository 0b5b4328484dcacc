"""Helpers for the HTTP tests: start a real server on loopback, run real curl."""

import functools
import shutil

import pytest
import trio

from appliance.config import HttpSettings
from appliance.http import HttpStats, serve

CURL = shutil.which("curl")


async def start_server(nursery, router, settings=None, ssl_context=None, stats=None):
    """Serve `router` on 127.0.0.1 at a free port; returns the port."""
    listeners = await nursery.start(
        functools.partial(
            serve,
            router,
            "127.0.0.1",
            0,
            settings or HttpSettings(),
            ssl_context=ssl_context,
            stats=stats or HttpStats(),
        )
    )
    return listeners[0].socket.getsockname()[1]


async def curl(*args, check=True):
    """Run curl with the given arguments; returns the CompletedProcess (bytes)."""
    if CURL is None:
        pytest.skip("curl is not installed (Debian package curl)")
    with trio.fail_after(30):
        return await trio.run_process(
            [CURL, "--silent", "--show-error", "--max-time", "20", *args],
            capture_stdout=True,
            capture_stderr=True,
            check=check,
        )


def parse_head(raw):
    """(status, {lower-case name: value}) from the first response head in raw bytes."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    lines = head.split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


async def raw_exchange(port, data, read_timeout=5):
    """Send raw bytes on a fresh connection; return everything read until close or timeout."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    received = b""
    async with stream:
        await stream.send_all(data)
        with trio.move_on_after(read_timeout):
            while True:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                received += chunk
    return received
