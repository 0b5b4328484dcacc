"""Client requests as real firmware sends them, built with the codec for the DHCP tests."""

from appliance.config import Settings
from appliance.proto import dhcp

APPLIANCE = "192.0.2.10"
MAC = bytes.fromhex("525400123456")

UEFI_X64 = b"PXEClient:Arch:00007:UNDI:003016"
BIOS = b"PXEClient:Arch:00000:UNDI:002001"
HTTP_X64 = b"HTTPClient:Arch:00016:UNDI:003001"

# The AMI template GUID: frame 1 of the pixiecore capture (type byte, then SMBIOS order).
AMI_GUID = bytes.fromhex("0000020003000400050006000700080009")


def request(
    message_type=dhcp.DISCOVER,
    vendor_class=UEFI_X64,
    arch=b"\x00\x07",
    mac=MAC,
    xid=0x1234ABCD,
    **extra,
):
    """A BOOTREQUEST; extra options are given as option_<code>=bytes."""
    options = {dhcp.OPTION_MESSAGE_TYPE: bytes((message_type,))}
    if vendor_class is not None:
        options[dhcp.OPTION_VENDOR_CLASS] = vendor_class
    if arch is not None:
        options[dhcp.OPTION_CLIENT_ARCH] = arch

    fields = {}
    for name, value in extra.items():
        if name.startswith("option_"):
            options[int(name.removeprefix("option_"))] = value
        else:
            fields[name] = value

    return dhcp.Packet(xid=xid, chaddr=mac, flags=0x8000, options=options, **fields)


def settings(**dhcp_fields):
    configured = Settings()
    for name, value in dhcp_fields.items():
        setattr(configured.dhcp, name, value)
    return configured
