"""Golden tests from real firmware: OVMF (EDK2) and iPXE packets recorded in a namespace lab.

The proxy offers in these captures are the ones the firmware accepted and
booted from (tests/data/dhcp/README.md). The policy must still produce them
byte for byte from the recorded requests, and must ignore everything else.
"""

from pathlib import Path

from appliance.boot.pxe_policy import Ignore, PxePolicy, Reply
from appliance.proto import dhcp
from tests.dhcp_pcap import read_udp
from tests.dhcp_requests import settings

DATA = Path(__file__).resolve().parent / "data" / "dhcp"
APPLIANCE = "10.202.0.2"
VM_MAC = "52:54:00:aa:bb:01"


def frames(name):
    return [(d, dhcp.decode(d.payload)) for d in read_udp(DATA / name)]


def decide(policy, packet):
    return policy.decide(packet, on_pxe_port=False, source=("0.0.0.0", 68), now=0.0)


def test_uefi_pxe_and_ipxe_get_the_offers_the_firmware_accepted():
    policy = PxePolicy(settings().dhcp, APPLIANCE, 80)
    recorded = frames("ovmf-uefi-pxe-then-ipxe.pcap")
    (_, pxe_discover), (proxy_offer, _), (_, bank_offer), (_, request), *rest = recorded
    (_, ipxe_discover), (ipxe_offer, _), (_, ipxe_request) = rest[-3:]

    assert pxe_discover.options[dhcp.OPTION_VENDOR_CLASS] == b"PXEClient:Arch:00007:UNDI:003000"
    assert dhcp.encode(decide(policy, pxe_discover).packet) == proxy_offer.payload
    assert dhcp.encode(decide(policy, ipxe_discover).packet) == ipxe_offer.payload
    assert decide(policy, bank_offer).reason == "not_request"
    assert decide(policy, request).reason == "request_for_other_server"
    assert decide(policy, ipxe_request).reason == "request_for_other_server"


def test_ovmf_zero_guid_is_echoed_but_not_trusted():
    (_, pxe_discover), (_, proxy_offer), *_ = frames("ovmf-uefi-pxe-then-ipxe.pcap")

    assert proxy_offer.options[dhcp.OPTION_CLIENT_GUID] == bytes(17)
    assert dhcp.client_guid(pxe_discover) == ("00000000-0000-0000-0000-000000000000", False)


def test_http_boot_after_ignored_pxe_gets_the_accepted_httpclient_offer():
    policy = PxePolicy(settings(ignore_pxe_macs=[VM_MAC]).dhcp, APPLIANCE, 80)
    recorded = frames("ovmf-uefi-http-boot-then-ipxe.pcap")
    discovers = [p for _, p in recorded if p.message_type == dhcp.DISCOVER]
    proxy_offers = [d for d, p in recorded if d.source[0] == APPLIANCE]

    decisions = [decide(policy, p) for p in discovers]

    assert [getattr(d, "reason", None) for d in decisions[:4]] == ["mac_ignored"] * 4
    assert all(isinstance(d, Reply) for d in decisions[4:])
    assert [dhcp.encode(d.packet) for d in decisions[4:]] == [o.payload for o in proxy_offers]
    http_offer = dhcp.decode(proxy_offers[0].payload)
    assert http_offer.options[dhcp.OPTION_VENDOR_CLASS] == b"HTTPClient"
    assert http_offer.file == b"http://10.202.0.2:80/boot/ipxe/ipxe.efi"


def test_every_recorded_frame_from_another_server_is_ignored():
    policy = PxePolicy(settings().dhcp, APPLIANCE, 80)
    for name in ("ovmf-uefi-pxe-then-ipxe.pcap", "ovmf-uefi-http-boot-then-ipxe.pcap"):
        for datagram, packet in frames(name):
            if datagram.source[1] == 67:
                decision = decide(policy, packet)
                assert isinstance(decision, Ignore)
                assert decision.reason == "not_request"
