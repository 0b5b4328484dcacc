"""Golden tests: real captures from ../shared/corpus/dhcp, decoded and decided.

Each packet in the corpus gets the decision a user would check: the one PXE
DISCOVER is answered like pixiecore answered it, every other client and every
server reply is left alone, malformed captures are a clean decode error.
"""

import pytest

from appliance.boot.pxe_policy import Ignore, PxePolicy, Reply
from appliance.proto import dhcp
from tests.dhcp_pcap import read_udp
from tests.dhcp_requests import settings

pytestmark = pytest.mark.corpus

PIXIECORE = "pixiecore-bios-pxe-discover-proxydhcp-offer-relayed-request.pcap"
APPLIANCE = "192.168.16.10"


def decide(packet, on_pxe_port=False):
    policy = PxePolicy(settings().dhcp, APPLIANCE, 80)
    return policy.decide(packet, on_pxe_port=on_pxe_port, source=("0.0.0.0", 68), now=0.0)


def hex_payload(path):
    lines = path.read_text().splitlines()
    return bytes.fromhex("".join(line for line in lines if not line.startswith("#")))


def hexdump_payload(path):
    """The offset/hex/ascii layout: the 16 hex columns after the offset."""
    data = bytearray()
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        data += bytes.fromhex("".join(line[6:54].split()))
    return bytes(data)


def pcap_packets(corpus, name):
    return [(d, dhcp.decode(d.payload)) for d in read_udp(corpus / "dhcp" / name)]


def test_pixiecore_capture_bios_discover_gets_bios_loader_and_echoed_guid(corpus):
    (_, discover), (_, pixiecore_offer), *_ = pcap_packets(corpus, PIXIECORE)

    reply = decide(discover)

    assert discover.message_type == dhcp.DISCOVER
    assert discover.mac == "d0:50:99:00:00:01"
    assert isinstance(reply, Reply)
    assert reply.packet.file == b"undionly.kpxe"
    assert (reply.address, reply.port) == ("255.255.255.255", 68)
    assert reply.packet.xid == discover.xid == 0x9B4E0557
    # Same option 97 bytes and option 60 as the proxy offer pixiecore sent back.
    guid = reply.packet.options[dhcp.OPTION_CLIENT_GUID]
    assert guid == pixiecore_offer.options[dhcp.OPTION_CLIENT_GUID] == discover.options[97]
    assert reply.packet.options[60] == pixiecore_offer.options[60] == b"PXEClient"


def test_pixiecore_capture_ami_guid_does_not_identify_a_machine(corpus):
    (_, discover), *_ = pcap_packets(corpus, PIXIECORE)

    assert dhcp.client_guid(discover) == ("03000200-0400-0500-0006-000700080009", False)


def test_pixiecore_capture_offers_from_servers_are_ignored(corpus):
    _, (_, pixiecore_offer), (_, bank_offer), _ = pcap_packets(corpus, PIXIECORE)

    assert decide(pixiecore_offer).reason == "not_request"
    assert decide(bank_offer).reason == "not_request"
    suboptions = dhcp.decode_suboptions(pixiecore_offer.options[dhcp.OPTION_VENDOR_SPECIFIC])
    assert sorted(suboptions) == [6, 8, 9, 10]
    assert bank_offer.yiaddr == "192.168.16.12"


def test_pixiecore_capture_relayed_request_from_ordinary_client_is_ignored(corpus):
    *_, (datagram, relayed) = pcap_packets(corpus, PIXIECORE)

    decision = decide(relayed)

    assert relayed.giaddr == "192.168.40.1" and relayed.hops == 1
    assert isinstance(decision, Ignore)
    assert decision.reason == "not_pxe_client"


@pytest.mark.parametrize(
    "name", ["kea-docsis-relayed-discover-1.bootp.hex", "kea-docsis-relayed-discover-2.bootp.hex"]
)
def test_relayed_docsis_discovers_get_no_answer(corpus, name):
    packet = dhcp.decode(hex_payload(corpus / "dhcp" / name))

    assert packet.giaddr == "10.254.226.1"
    assert packet.message_type == dhcp.DISCOVER
    assert dhcp.OPTION_RELAY_AGENT in packet.options
    assert decide(packet).reason == "not_pxe_client"
    assert decide(packet, on_pxe_port=True).reason == "not_pxe_client"


def test_dnsmasq_pxelinux_offer_decodes_and_is_ignored(corpus):
    payload = hexdump_payload(
        corpus / "dhcp" / "dnsmasq-pxelinux-offer-to-intel-nuc.bootp.hexdump.txt"
    )

    offer = dhcp.decode(payload)

    assert len(payload) == 335
    assert offer.message_type == dhcp.OFFER
    assert offer.options[66] == b"10.0.16.129\x00"
    assert offer.options[209] == b"boot/syslinux/lpxelinux.0"
    assert decide(offer).reason == "not_request"


def test_rfc3004_user_class_capture(corpus):
    packets = pcap_packets(corpus, "tcpdump-tests-dhcp-rfc3004.pcap")
    (_, discover), *_ = packets

    assert [p.message_type for _, p in packets] == [dhcp.DISCOVER, dhcp.OFFER, dhcp.REQUEST, 5]
    assert dhcp.user_classes(discover.options[dhcp.OPTION_USER_CLASS]) == [
        b"subopt1",
        b"subopt2-123456789",
        b"subopt3-12",
    ]
    assert all(decide(p).reason in ("not_pxe_client", "not_request") for _, p in packets)


@pytest.mark.parametrize(
    "name", ["tcpdump-tests-bootp_asan.pcap", "tcpdump-tests-bootp_asan-2.pcap"]
)
def test_malformed_bootp_captures_are_a_clean_decode_error(corpus, name):
    (datagram,) = read_udp(corpus / "dhcp" / name)

    with pytest.raises(dhcp.DhcpDecodeError, match="expected"):
        dhcp.decode(datagram.payload)
