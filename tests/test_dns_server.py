"""The DNS server on a loopback high port, asked by dig and by dnslib's client."""

import functools
import shutil
import socket

import pytest
import trio
from dnslib import QTYPE, RCODE, DNSRecord

from appliance.boot import dns
from appliance.config import Settings

DIG = shutil.which("dig")
MACHINES = {"node-07": "127.0.0.77"}


async def _machine_lookup(name):
    await trio.lowlevel.checkpoint()
    return MACHINES.get(name)


@pytest.fixture
def settings():
    settings = Settings()
    settings.dns.enabled = True
    settings.dns.port = 0
    return settings


async def start(nursery, settings, stats, lookup=_machine_lookup):
    return await nursery.start(
        functools.partial(dns.serve, settings, "127.0.0.1", lookup, stats=stats)
    )


async def ask(port, name, qtype="A"):
    query = DNSRecord.question(name, qtype)
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock, trio.fail_after(5):
        await sock.sendto(query.pack(), ("127.0.0.1", port))
        data, _ = await sock.recvfrom(4096)
    reply = DNSRecord.parse(data)
    assert reply.header.id == query.header.id
    return reply


async def dig(port, *args):
    if DIG is None:
        pytest.skip("dig is not installed (Debian package bind9-dnsutils)")
    result = await trio.run_process(
        [DIG, "@127.0.0.1", "-p", str(port), "+time=2", "+tries=1", *args],
        capture_stdout=True,
        check=False,
    )
    return result.stdout.decode()


async def test_service_name_bare_and_in_domain(nursery, settings):
    stats = dns.DnsStats()
    _, port = await start(nursery, settings, stats)

    for name in ("cloudboot", "cloudboot.pxe.internal", "CloudBoot.PXE.internal."):
        reply = await ask(port, name)
        assert reply.header.rcode == RCODE.NOERROR
        assert reply.header.aa == 1 and reply.header.ra == 0
        assert [str(rr.rdata) for rr in reply.rr] == ["127.0.0.1"]
        assert reply.rr[0].ttl == settings.dns.ttl_seconds
    assert stats.answered == 3


async def test_machine_names_come_from_lookup(nursery, settings):
    _, port = await start(nursery, settings, dns.DnsStats())

    reply = await ask(port, "node-07.pxe.internal")
    assert [str(rr.rdata) for rr in reply.rr] == ["127.0.0.77"]
    assert (await ask(port, "node-08.pxe.internal")).header.rcode == RCODE.REFUSED


async def test_everything_else_is_refused_and_not_recursive(nursery, settings):
    stats = dns.DnsStats()
    _, port = await start(nursery, settings, stats)

    for name in ("example.com", "cloudboot.example.com", "a.b.pxe.internal"):
        reply = await ask(port, name)
        assert reply.header.rcode == RCODE.REFUSED
        assert reply.header.ra == 0
        assert not reply.rr
    assert stats.refused == 3


async def test_known_name_other_type_is_nodata(nursery, settings):
    _, port = await start(nursery, settings, dns.DnsStats())

    reply = await ask(port, "cloudboot.pxe.internal", "AAAA")
    assert reply.header.rcode == RCODE.NOERROR
    assert not reply.rr
    assert (await ask(port, "cloudboot", "MX")).rr == []
    assert QTYPE.A == 1


async def test_dig_gets_the_answer_and_the_flags(nursery, settings):
    _, port = await start(nursery, settings, dns.DnsStats())

    answer = await dig(port, "+short", "cloudboot.pxe.internal", "A")
    assert answer.strip() == "127.0.0.1"

    full = await dig(port, "example.org", "A")
    assert "status: REFUSED" in full
    flags = full.split("flags:", 1)[1].split(";", 1)[0]
    assert " ra" not in flags


async def test_malformed_packets_are_dropped_and_the_server_keeps_answering(nursery, settings):
    stats = dns.DnsStats()
    _, port = await start(nursery, settings, stats)

    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        for junk in (
            b"",
            b"\x00",
            b"\x12\x34" + b"\xff" * 30,
            DNSRecord.question("x").pack()[:-3],
        ):
            await sock.sendto(junk, ("127.0.0.1", port))
    await trio.sleep(0.2)

    reply = await ask(port, "cloudboot")
    assert [str(rr.rdata) for rr in reply.rr] == ["127.0.0.1"]
    assert stats.malformed >= 3


async def test_a_failing_lookup_is_contained(nursery, settings):
    def broken(name):
        raise RuntimeError("store is down")

    stats = dns.DnsStats()
    _, port = await start(nursery, settings, stats, lookup=broken)

    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        await sock.sendto(DNSRecord.question("node-07").pack(), ("127.0.0.1", port))
    await trio.sleep(0.2)
    assert (await ask(port, "cloudboot")).rr


async def test_disabled_by_default():
    with trio.fail_after(2):
        async with trio.open_nursery() as nursery:
            assert await nursery.start(dns.serve, Settings(), "127.0.0.1") is None
