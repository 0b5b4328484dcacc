"""Adversarial DNS: a query name longer than 255 octets (appliance/boot/dns.py).

dnslib parses a question whose labels add up to more than RFC 1035's 255
octets, then fails to pack the reply with DNSLabelError, which is not a
DNSError. The server logged a full traceback at error level for every such
datagram (about 2 KB of log per 650-byte packet from any sender) instead of
counting it as malformed.
"""

import functools
import logging
import socket
import struct

import trio

from appliance.boot import dns
from appliance.config import Settings


def over_long_query():
    header = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    name = b"".join(b"\x3f" + b"a" * 63 for _ in range(10)) + b"\x00"
    return header + name + b"\x00\x01\x00\x01"


async def test_an_over_long_name_is_counted_malformed_without_an_error_log(nursery, caplog):
    settings = Settings()
    settings.dns.enabled = True
    settings.dns.port = 0
    stats = dns.DnsStats()
    host, port = await nursery.start(
        functools.partial(dns.serve, settings, "127.0.0.1", None, stats=stats)
    )

    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock, caplog.at_level(logging.DEBUG, logger="appliance.boot.dns"):
        await sock.sendto(over_long_query(), (host, port))
        with trio.fail_after(5):
            while stats.queries < 1:
                await trio.sleep(0.01)
        await trio.sleep(0.05)

    assert stats.malformed == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
