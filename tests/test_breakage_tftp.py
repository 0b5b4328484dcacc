"""Adversarial TFTP: one client must not be able to hold every transfer slot for long.

Before the fix a single address could take all of tftp.max_transfers with
read requests it never acknowledged, each asking for RFC 2349's longest
timeout (255 s): with 5 retries a slot stayed taken for over 25 minutes, and
every PXE client behind it got "server busy".
"""

import os
import socket

import pytest
import trio

from appliance.boot import tftp as server
from appliance.config import Settings
from appliance.proto import tftp

HOST = "127.0.0.1"
OTHER_HOST = "127.0.0.2"


@pytest.fixture
def tftp_root(tmp_path):
    root = tmp_path / "tftp"
    root.mkdir()
    (root / "f").write_bytes(os.urandom(4096))
    return root


async def start(nursery, root, **tftp_settings):
    settings = Settings()
    settings.tftp.root = str(root)
    settings.tftp.port = 0
    for name, value in tftp_settings.items():
        setattr(settings.tftp, name, value)
    return await nursery.start(server.serve, settings, HOST)


async def request(address, port, options=None):
    """Send one RRQ from a fresh socket bound to `address`; return (reply, sock)."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await sock.bind((address, 0))
    await sock.sendto(tftp.encode_request(tftp.RRQ, "f", options), (HOST, port))
    with trio.fail_after(5):
        data, _ = await sock.recvfrom(65536)
    return data, sock


async def test_a_255_second_timeout_is_declined(nursery, tftp_root):
    port = await start(nursery, tftp_root)

    data, sock = await request(HOST, port, {"timeout": 255, "tsize": 0})
    sock.close()

    # The OACK carries tsize only: the client keeps its own timeout.
    assert data == tftp.encode_oack({"tsize": "4096"})


async def test_one_silent_client_cannot_take_every_slot(nursery, tftp_root):
    port = await start(nursery, tftp_root, max_transfers=8, timeout_seconds=5.0, retries=0)
    held = []
    try:
        replies = []
        for _ in range(8):
            data, sock = await request(HOST, port)
            held.append(sock)
            replies.append(data[:2])
        # Another machine on the PXE network still gets its file.
        data, sock = await request(OTHER_HOST, port)
        held.append(sock)
    finally:
        for sock in held:
            sock.close()

    assert replies.count(b"\x00\x05") == 4
    assert data[:4] == b"\x00\x03\x00\x01"
