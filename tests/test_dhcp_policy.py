"""PxePolicy: which clients get which boot program, and where the answer goes.

Each "case from the field" in the proxyDHCP issue is one test here, with the
values the issue gives.
"""

import logging

import pytest

from appliance.boot.pxe_policy import Ignore, PxePolicy, Reply
from appliance.proto import dhcp
from tests.dhcp_requests import (
    AMI_GUID,
    APPLIANCE,
    BIOS,
    HTTP_X64,
    MAC,
    UEFI_X64,
    request,
    settings,
)

MAC_TEXT = "52:54:00:12:34:56"
SCRIPT_URL = f"http://{APPLIANCE}:80/ipxe/52-54-00-12-34-56.ipxe"


def policy(**dhcp_fields):
    return PxePolicy(settings(**dhcp_fields).dhcp, APPLIANCE, 80)


def decide(packet, *, on_pxe_port=False, source=("0.0.0.0", 68), now=0.0, using=None):
    decision = (using or policy()).decide(packet, on_pxe_port=on_pxe_port, source=source, now=now)
    if isinstance(decision, Reply):
        # Whatever the policy builds must survive the wire.
        assert dhcp.decode(dhcp.encode(decision.packet)) == decision.packet
    return decision


def pxe_suboptions(reply):
    return dhcp.decode_suboptions(reply.packet.options[dhcp.OPTION_VENDOR_SPECIFIC])


# Offers to PXE firmware


def test_uefi_x64_discover_gets_offer_that_strict_firmware_accepts():
    reply = decide(request(vendor_class=b"PXEClient:Arch:00007:UNDI:003016", arch=b"\x00\x07"))

    assert isinstance(reply, Reply)
    offer = reply.packet
    assert offer.op == dhcp.BOOTREPLY
    assert offer.message_type == dhcp.OFFER
    assert pxe_suboptions(reply)[dhcp.PXE_DISCOVERY_CONTROL] == b"\x08"
    assert offer.options[dhcp.OPTION_VENDOR_CLASS] == b"PXEClient"
    assert offer.options[dhcp.OPTION_SERVER_ID] == bytes([192, 0, 2, 10])
    assert offer.siaddr == APPLIANCE
    assert offer.yiaddr == "0.0.0.0"
    assert offer.file == b"ipxe.efi"
    assert offer.chaddr == MAC and offer.xid == 0x1234ABCD
    assert (reply.address, reply.port) == ("255.255.255.255", 68)


@pytest.mark.parametrize("arch", [b"\x00\x07", b"\x00\x09"])
def test_both_x86_64_uefi_codes_get_the_uefi_loader_never_the_bios_one(arch):
    reply = decide(request(arch=arch))

    assert reply.packet.file == b"ipxe.efi"
    assert reply.packet.file != settings().dhcp.bios_boot_file.encode()


def test_bios_client_gets_kpxe_over_tftp():
    reply = decide(request(vendor_class=BIOS, arch=b"\x00\x00"))

    assert reply.packet.file == b"undionly.kpxe"
    assert dhcp.OPTION_BOOT_FILE not in reply.packet.options


def test_http_boot_client_gets_httpclient_offer_with_full_url():
    reply = decide(request(vendor_class=HTTP_X64, arch=b"\x00\x10"))

    offer = reply.packet
    url = f"http://{APPLIANCE}:80/boot/ipxe/ipxe.efi"
    assert offer.options[dhcp.OPTION_VENDOR_CLASS].startswith(b"HTTPClient")
    assert offer.options[dhcp.OPTION_BOOT_FILE] == url.encode()
    assert offer.file == url.encode()
    assert offer.yiaddr == "0.0.0.0"
    assert offer.sname == b""
    assert dhcp.OPTION_VENDOR_SPECIFIC not in offer.options


@pytest.mark.parametrize(
    ("arch", "vendor_class", "setting"),
    [
        (b"\x00\x0b", b"PXEClient:Arch:00011:UNDI:003000", "uefi_arm64_boot_file"),
        (b"\x00\x13", b"HTTPClient:Arch:00019:UNDI:003000", "uefi_arm64_boot_file"),
        (b"\x00\x06", b"PXEClient:Arch:00006:UNDI:003000", "uefi_ia32_boot_file"),
        (b"\x00\x0f", b"HTTPClient:Arch:00015:UNDI:003000", "uefi_ia32_boot_file"),
    ],
)
def test_arm64_and_ia32_answered_only_with_their_own_boot_program(arch, vendor_class, setting):
    packet = request(vendor_class=vendor_class, arch=arch)
    unconfigured = policy()

    first = decide(packet, using=unconfigured)
    again = decide(packet, using=unconfigured)

    assert isinstance(first, Ignore) and first.reason == "no_boot_program"
    assert setting in first.message
    assert first.level == logging.WARNING and again.level == logging.DEBUG

    reply = decide(packet, using=policy(**{setting: "arch/own-loader.efi"}))
    assert reply.boot_file.endswith("arch/own-loader.efi")
    assert b"ipxe.efi" not in reply.packet.file
    assert b"kpxe" not in reply.packet.file


@pytest.mark.parametrize("arch", [None, b"\x07", b"", b"\x00\x07\x00"])
def test_missing_or_malformed_option_93_falls_back_to_vendor_class_arch(arch):
    reply = decide(request(vendor_class=BIOS, arch=arch))

    assert reply.packet.file == b"undionly.kpxe"


def test_unknown_architecture_is_not_answered_and_logged_once_per_mac():
    shared = policy()
    packet = request(vendor_class=b"PXEClient:Arch:00010:UNDI:003000", arch=b"\x00\x0a")

    first = decide(packet, using=shared)
    second = decide(packet, using=shared)
    other_mac = decide(request(arch=b"\x00\x0a", mac=b"\x02" * 6), using=shared)

    assert first.reason == second.reason == "unknown_arch"
    assert first.level == logging.WARNING
    assert second.level == logging.DEBUG
    assert other_mac.level == logging.WARNING


@pytest.mark.parametrize(
    "vendor_class", [None, b"MSFT 5.0", b"docsis3.0", b"pxeclient", b"udhcp 1.36"]
)
def test_clients_that_do_not_network_boot_are_ignored(vendor_class):
    decision = decide(request(vendor_class=vendor_class))

    assert isinstance(decision, Ignore)
    assert decision.reason == "not_pxe_client"
    assert decision.level == logging.DEBUG


def test_ignored_mac_loses_firmware_pxe_but_keeps_http_boot_and_ipxe():
    shared = policy(ignore_pxe_macs=["52-54-00-12-34-56"])

    assert decide(request(), using=shared).reason == "mac_ignored"
    assert decide(request(option_77=b"iPXE"), using=shared).boot_file == SCRIPT_URL
    assert isinstance(
        decide(request(vendor_class=HTTP_X64, arch=b"\x00\x10"), using=shared), Reply
    )


# iPXE clients


@pytest.mark.parametrize(
    "extra",
    [
        {"option_77": b"iPXE"},
        {"option_77": b"\x04iPXE"},
        {"option_175": bytes.fromhex("b10105eb030107")},
    ],
    ids=["raw-user-class", "rfc3004-user-class", "option-175"],
)
@pytest.mark.parametrize("on_pxe_port", [False, True], ids=["port-67", "port-4011"])
def test_ipxe_client_gets_its_script_url_never_the_binary(extra, on_pxe_port):
    message_type = dhcp.REQUEST if on_pxe_port else dhcp.DISCOVER
    packet = request(message_type=message_type, **extra)

    reply = decide(packet, on_pxe_port=on_pxe_port, source=("192.0.2.50", 68))

    assert reply.boot_file == SCRIPT_URL
    assert reply.packet.file == SCRIPT_URL.encode()
    assert b"ipxe.efi" not in dhcp.encode(reply.packet)


def test_repeated_binary_requests_within_a_minute_warn_once_as_boot_loop():
    shared = policy(boot_loop_count=3, boot_loop_window_seconds=60)

    warnings = [
        decide(request(xid=xid), using=shared, now=now).warning
        for xid, now in [(1, 0.0), (1, 2.0), (2, 20.0), (3, 40.0), (4, 50.0)]
    ]
    quiet_then_back = decide(request(xid=5), using=shared, now=500.0).warning

    # xid 1 twice is one boot attempt resent; the third attempt (xid 3) is the loop.
    assert warnings[:3] == [None, None, None]
    assert "boot loop" in warnings[3]
    assert warnings[4] is None
    assert quiet_then_back is None


# Port 4011 and DHCPREQUEST


def test_pxe_port_request_gets_ack_unicast_to_source_echoing_boot_item():
    packet = request(
        message_type=dhcp.REQUEST,
        ciaddr="192.0.2.50",
        option_43=dhcp.encode_suboptions({dhcp.PXE_BOOT_ITEM: b"\x80\x00\x00\x00"}),
    )

    reply = decide(packet, on_pxe_port=True, source=("192.0.2.50", 68))

    assert (reply.address, reply.port) == ("192.0.2.50", 68)
    assert reply.packet.message_type == dhcp.ACK
    assert pxe_suboptions(reply)[dhcp.PXE_BOOT_ITEM] == b"\x80\x00\x00\x00"
    assert reply.packet.ciaddr == "192.0.2.50"
    assert reply.packet.yiaddr == "0.0.0.0"


def test_discover_on_pxe_port_is_ignored():
    decision = decide(request(), on_pxe_port=True, source=("192.0.2.50", 68))

    assert decision.reason == "unexpected_message_type"


def test_port_67_request_for_the_banks_server_is_left_to_it():
    packet = request(message_type=dhcp.REQUEST, option_54=bytes([192, 0, 2, 1]))

    assert decide(packet).reason == "request_for_other_server"
    assert decide(request(message_type=dhcp.REQUEST)).reason == "request_for_other_server"


def test_port_67_request_naming_the_appliance_gets_broadcast_ack():
    packet = request(message_type=dhcp.REQUEST, option_54=bytes([192, 0, 2, 10]))

    reply = decide(packet)

    assert reply.packet.message_type == dhcp.ACK
    assert (reply.address, reply.port) == ("255.255.255.255", 68)


def test_replies_from_other_servers_are_ignored():
    offer = request(message_type=dhcp.OFFER, op=dhcp.BOOTREPLY)

    assert decide(offer).reason == "not_request"


def test_plain_bootp_request_is_ignored():
    packet = request()
    del packet.options[dhcp.OPTION_MESSAGE_TYPE]

    assert decide(packet).reason == "not_dhcp"


# Relays


def test_relayed_discover_is_answered_to_the_relay_with_option_82_unchanged():
    relay_info = bytes.fromhex("01060004000102030206aabbcc000001")
    packet = request(hops=2, giaddr="10.20.0.1", option_82=relay_info)

    reply = decide(packet)

    assert (reply.address, reply.port) == ("10.20.0.1", 67)
    assert reply.packet.giaddr == "10.20.0.1"
    assert reply.packet.options[dhcp.OPTION_RELAY_AGENT] == relay_info
    assert list(reply.packet.options)[-1] == dhcp.OPTION_RELAY_AGENT


# Option 97, the client GUID


@pytest.mark.parametrize(
    "guid",
    [None, b"\x00" + bytes(range(1, 17)), bytes(range(1, 17)), b"\x01" + bytes(range(1, 17))],
    ids=["absent", "17-bytes-type-0", "16-bytes", "17-bytes-type-1"],
)
def test_every_option_97_shape_gets_an_offer_echoing_it_exactly(guid):
    extra = {} if guid is None else {"option_97": guid}

    reply = decide(request(**extra))

    assert isinstance(reply, Reply)
    assert reply.packet.options.get(dhcp.OPTION_CLIENT_GUID) == guid


def test_client_guid_decodes_smbios_order_and_distrusts_the_ami_template():
    assert dhcp.client_guid(request(option_97=AMI_GUID)) == (
        "03000200-0400-0500-0006-000700080009",
        False,
    )

    real = bytes.fromhex("0044454c4c300010508030c2c04f4a3332")
    assert dhcp.client_guid(request(option_97=real)) == (
        "4c4c4544-0030-5010-8030-c2c04f4a3332",
        True,
    )
    assert dhcp.client_guid(request(option_97=real[1:]))[1] is True
    assert dhcp.client_guid(request(option_97=b"\x01" + real[1:]))[1] is False
    assert dhcp.client_guid(request(option_97=real[:9])) == (None, False)
    assert dhcp.client_guid(request()) == (None, False)
    assert dhcp.client_guid(request(option_97=bytes(17))) == (
        "00000000-0000-0000-0000-000000000000",
        False,
    )


def test_mac_property_formats_chaddr():
    assert request().mac == MAC_TEXT


def test_http_boot_url_uses_configured_http_port():
    reply = PxePolicy(settings().dhcp, APPLIANCE, 8080).decide(
        request(vendor_class=HTTP_X64, arch=b"\x00\x10"),
        on_pxe_port=False,
        source=("0.0.0.0", 68),
        now=0.0,
    )

    assert reply.boot_file == f"http://{APPLIANCE}:8080/boot/ipxe/ipxe.efi"


def test_uefi_offer_is_not_answered_for_bios_over_http():
    decision = decide(request(vendor_class=b"HTTPClient:Arch:00000", arch=b"\x00\x00"))

    assert decision.reason == "no_boot_program"


def test_uefi_x64_field_case_exact_values():
    """The issue's first case, checked on the encoded bytes too."""
    reply = decide(request(vendor_class=UEFI_X64, arch=b"\x00\x07"))

    wire = dhcp.encode(reply.packet)
    assert b"\x2b\x04\x06\x01\x08\xff" in wire


def test_boot_file_too_long_for_the_file_field_travels_in_option_67():
    long_name = "loaders/" + "x" * 130 + ".efi"

    reply = decide(request(), using=policy(uefi_x64_boot_file=long_name))

    assert reply.packet.file == b""
    assert reply.packet.options[dhcp.OPTION_BOOT_FILE] == long_name.encode()
