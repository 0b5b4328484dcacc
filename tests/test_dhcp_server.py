"""The proxyDHCP server on loopback with high ports: answers, survives floods, logs context.

Only loopback is used here: the relay address inside the packets is 127.0.0.1
and the relay "agent" is a socket of this test. Broadcast answers are tested
in test_dhcp_netns.py, inside namespaces the test makes.
"""

import logging
import random
import socket

import pytest
import trio
from prometheus_client import REGISTRY

from appliance import log
from appliance.boot import proxydhcp
from appliance.boot.pxe_policy import PxePolicy
from appliance.config import Settings
from appliance.proto import dhcp
from tests.dhcp_requests import AMI_GUID, request

LOOPBACK = "127.0.0.1"


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def counted(reason):
    value = REGISTRY.get_sample_value("cloudboot_proxydhcp_ignored_total", {"reason": reason})
    return value or 0.0


async def udp_socket():
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await sock.bind((LOOPBACK, 0))
    return sock


async def start_server(nursery, relay_port):
    settings = Settings()
    settings.dhcp.port = free_udp_port()
    settings.dhcp.pxe_port = free_udp_port()
    settings.dhcp.relay_port = relay_port
    settings.server.http_port = 8080
    await nursery.start(proxydhcp.serve, settings, LOOPBACK, "lo")
    return settings


def malformed_datagrams(count, seed=1):
    """Bytes that must fail to decode, of the shapes a broken or hostile sender makes."""
    rng = random.Random(seed)
    valid = dhcp.encode(request(option_97=AMI_GUID))
    shapes = [
        lambda: rng.randbytes(rng.randrange(0, 240)),
        lambda: valid[:236] + b"\x00\x00\x00\x00" + valid[240:],
        lambda: bytes([rng.choice([0, 3, 99, 255])]) + valid[1:],
        lambda: valid[:240] + b"\x3c\x20PXE",
        lambda: valid[: rng.randrange(0, 240)],
    ]
    datagrams = [rng.choice(shapes)() for _ in range(count)]
    for data in datagrams:
        with pytest.raises(dhcp.DhcpDecodeError):
            dhcp.decode(data)
    return datagrams


async def wait_for_count(reason, target, seconds=10):
    with trio.move_on_after(seconds):
        while counted(reason) < target:
            await trio.sleep(0.01)
    return counted(reason)


async def test_relayed_discover_answered_to_relay_port_with_option_82(nursery):
    relay = await udp_socket()
    settings = await start_server(nursery, relay.getsockname()[1])
    relay_info = b"\x01\x04port\x02\x06\x52\x54\x00\xaa\xbb\xcc"
    discover = request(hops=2, giaddr=LOOPBACK, option_82=relay_info)

    await relay.sendto(dhcp.encode(discover), (LOOPBACK, settings.dhcp.port))
    with trio.fail_after(5):
        data, source = await relay.recvfrom(2048)

    offer = dhcp.decode(data)
    assert source[1] == settings.dhcp.port
    assert offer.message_type == dhcp.OFFER
    assert offer.options[dhcp.OPTION_RELAY_AGENT] == relay_info
    assert offer.giaddr == LOOPBACK
    assert offer.file == b"ipxe.efi"


async def test_pxe_port_request_acked_to_its_source(nursery):
    settings = await start_server(nursery, free_udp_port())
    client = await udp_socket()
    boot_item = dhcp.encode_suboptions({dhcp.PXE_BOOT_ITEM: b"\x80\x00\x00\x00"})
    pxe_request = request(message_type=dhcp.REQUEST, ciaddr=LOOPBACK, option_43=boot_item)

    await client.sendto(dhcp.encode(pxe_request), (LOOPBACK, settings.dhcp.pxe_port))
    with trio.fail_after(5):
        data, source = await client.recvfrom(2048)

    ack = dhcp.decode(data)
    assert source == (LOOPBACK, settings.dhcp.pxe_port)
    assert ack.message_type == dhcp.ACK
    suboptions = dhcp.decode_suboptions(ack.options[dhcp.OPTION_VENDOR_SPECIFIC])
    assert suboptions[dhcp.PXE_BOOT_ITEM] == b"\x80\x00\x00\x00"


async def test_flood_of_malformed_packets_is_counted_and_server_keeps_answering(nursery):
    relay = await udp_socket()
    settings = await start_server(nursery, relay.getsockname()[1])
    flooder = await udp_socket()
    flood = malformed_datagrams(3000)
    before = counted("malformed")

    # Paced in batches so the loopback receive buffer does not drop datagrams
    # and every one of them reaches the decoder.
    for start in range(0, len(flood), 50):
        for i, data in enumerate(flood[start : start + 50]):
            port = settings.dhcp.port if i % 2 else settings.dhcp.pxe_port
            await flooder.sendto(data, (LOOPBACK, port))
        await wait_for_count("malformed", before + start + len(flood[start : start + 50]))

    assert await wait_for_count("malformed", before + len(flood)) == before + len(flood)

    discover = request(giaddr=LOOPBACK, option_82=b"\x01\x01x")
    await relay.sendto(dhcp.encode(discover), (LOOPBACK, settings.dhcp.port))
    with trio.fail_after(5):
        data = await relay.recv(2048)
    assert dhcp.decode(data).message_type == dhcp.OFFER


async def test_non_pxe_packet_is_counted_with_its_reason(nursery):
    relay = await udp_socket()
    settings = await start_server(nursery, relay.getsockname()[1])
    before = counted("not_pxe_client")

    docsis = request(vendor_class=b"docsis3.0", arch=None, giaddr=LOOPBACK)
    await relay.sendto(dhcp.encode(docsis), (LOOPBACK, settings.dhcp.port))

    assert await wait_for_count("not_pxe_client", before + 1) == before + 1
    with trio.move_on_after(0.3) as nothing:
        await relay.recv(2048)
    assert nothing.cancelled_caught


class _ContextRecorder(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append((record.getMessage(), log.current_context()))


async def test_log_lines_carry_mac_and_xid_and_internal_errors_are_contained():
    class BrokenPolicy(PxePolicy):
        def decide(self, packet, **kwargs):
            raise RuntimeError("policy bug")

    recorder = _ContextRecorder()
    logger = logging.getLogger(proxydhcp.__name__)
    logger.addHandler(recorder)
    previous_level = logger.level
    logger.setLevel(logging.DEBUG)
    before = counted("internal_error")
    try:
        policy = BrokenPolicy(Settings().dhcp, LOOPBACK, 80)
        sock = await udp_socket()
        packet = dhcp.encode(request(xid=0xCAFE0001))
        await proxydhcp.handle_datagram(packet, (LOOPBACK, 68), policy, sock, False)
    finally:
        logger.removeHandler(recorder)
        logger.setLevel(previous_level)

    assert counted("internal_error") == before + 1
    message, context = recorder.lines[-1]
    assert "could not handle packet" in message
    assert context == {"mac": "52:54:00:12:34:56", "xid": "0xcafe0001"}


async def test_missing_interface_is_a_clear_error():
    settings = Settings()
    settings.dhcp.port = free_udp_port()
    settings.dhcp.pxe_port = free_udp_port()

    with pytest.raises(OSError, match="interface 'cbnosuch0'"):
        await proxydhcp.serve(settings, LOOPBACK, "cbnosuch0")
