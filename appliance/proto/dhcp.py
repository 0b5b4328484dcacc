"""DHCP and BOOTP packets (RFC 951, RFC 2131, RFC 2132) as bytes in, bytes out.

`decode` turns one UDP payload into a `Packet`; `encode` turns a `Packet` back
into a payload. The PXE extensions (RFC 4578, PXE 2.1) that the proxyDHCP
needs are read here too: client architecture, vendor class, user class, the
client GUID of option 97 and the encapsulated sub-options of option 43.

This module must never open a socket, import trio or decide what to answer:
the proxyDHCP policy (appliance/boot/pxe_policy.py) decides, the server sends.
Every malformed input raises DhcpDecodeError and nothing else, so a listener
can drop a bad packet with one `except` and a fuzzer can hold it to that.
"""

import ipaddress
import uuid
from dataclasses import dataclass, field

from appliance.proto.placeholders import uuid_trusted

BOOTREQUEST = 1
BOOTREPLY = 2

# RFC 2132 section 9.6, option 53.
DISCOVER = 1
OFFER = 2
REQUEST = 3
DECLINE = 4
ACK = 5
NAK = 6
RELEASE = 7
INFORM = 8

MESSAGE_TYPE_NAMES = {
    DISCOVER: "DHCPDISCOVER",
    OFFER: "DHCPOFFER",
    REQUEST: "DHCPREQUEST",
    DECLINE: "DHCPDECLINE",
    ACK: "DHCPACK",
    NAK: "DHCPNAK",
    RELEASE: "DHCPRELEASE",
    INFORM: "DHCPINFORM",
}

OPTION_PAD = 0
OPTION_VENDOR_SPECIFIC = 43
OPTION_OVERLOAD = 52
OPTION_MESSAGE_TYPE = 53
OPTION_SERVER_ID = 54
OPTION_VENDOR_CLASS = 60
OPTION_BOOT_FILE = 67
OPTION_USER_CLASS = 77
OPTION_RELAY_AGENT = 82
OPTION_CLIENT_ARCH = 93
OPTION_CLIENT_NDI = 94
OPTION_CLIENT_GUID = 97
OPTION_IPXE_ENCAPSULATED = 175
OPTION_END = 255

# PXE 2.1: sub-options of option 43 when option 60 is "PXEClient".
PXE_DISCOVERY_CONTROL = 6
PXE_BOOT_ITEM = 71

MAGIC_COOKIE = b"\x63\x82\x53\x63"

# RFC 951: op .. chaddr is 28 + 16 bytes, then sname (64) and file (128).
HEADER_LENGTH = 236
_SNAME = slice(44, 108)
_FILE = slice(108, 236)

# RFC 951 section 3 and RFC 1542 section 2.1: relays and old clients drop BOOTP
# messages shorter than 300 bytes, so replies are padded to that size.
MINIMUM_PACKET_LENGTH = 300

ZERO_ADDRESS = "0.0.0.0"


class DhcpDecodeError(ValueError):
    """The bytes are not a well-formed DHCP/BOOTP packet; says what was expected."""


@dataclass
class Packet:
    """One BOOTP/DHCP message. Addresses are dotted-quad text, options raw bytes.

    `options` keeps the order the options arrived in; an option sent in several
    pieces is stored joined (RFC 3396).
    """

    op: int = BOOTREQUEST
    htype: int = 1
    hlen: int = 6
    hops: int = 0
    xid: int = 0
    secs: int = 0
    flags: int = 0
    ciaddr: str = ZERO_ADDRESS
    yiaddr: str = ZERO_ADDRESS
    siaddr: str = ZERO_ADDRESS
    giaddr: str = ZERO_ADDRESS
    chaddr: bytes = b""
    sname: bytes = b""
    file: bytes = b""
    options: dict = field(default_factory=dict)

    @property
    def message_type(self):
        """Option 53 as an int, or None for a plain BOOTP message."""
        value = self.options.get(OPTION_MESSAGE_TYPE)
        return value[0] if value else None

    @property
    def mac(self):
        """The client hardware address as aa:bb:cc:dd:ee:ff text."""
        return ":".join(f"{b:02x}" for b in self.chaddr[: self.hlen])

    @property
    def relayed(self):
        return self.giaddr != ZERO_ADDRESS


# Decoding


def decode(data):
    """Decode one UDP payload into a Packet, or raise DhcpDecodeError."""
    data = bytes(data)
    if len(data) < HEADER_LENGTH + len(MAGIC_COOKIE):
        raise DhcpDecodeError(
            f"expected at least {HEADER_LENGTH + 4} bytes (BOOTP header and DHCP magic "
            f"cookie), got {len(data)}: {data[:16]!r}"
        )

    packet = _decode_header(data)

    cookie = data[HEADER_LENGTH : HEADER_LENGTH + 4]
    if cookie != MAGIC_COOKIE:
        raise DhcpDecodeError(f"expected DHCP magic cookie {MAGIC_COOKIE!r}, got {cookie!r}")

    options = {}
    _decode_options(data, HEADER_LENGTH + 4, len(data), options, "options")
    _decode_overload(data, options, packet)
    _check_fixed_lengths(options)
    packet.options = options
    return packet


def _decode_header(data):
    op, htype, hlen, hops = data[0], data[1], data[2], data[3]
    if op not in (BOOTREQUEST, BOOTREPLY):
        raise DhcpDecodeError(f"expected op 1 (BOOTREQUEST) or 2 (BOOTREPLY), got {op}")
    if hlen > 16:
        raise DhcpDecodeError(f"expected hardware address length 0-16, got {hlen}")

    return Packet(
        op=op,
        htype=htype,
        hlen=hlen,
        hops=hops,
        xid=int.from_bytes(data[4:8], "big"),
        secs=int.from_bytes(data[8:10], "big"),
        flags=int.from_bytes(data[10:12], "big"),
        ciaddr=str(ipaddress.IPv4Address(data[12:16])),
        yiaddr=str(ipaddress.IPv4Address(data[16:20])),
        siaddr=str(ipaddress.IPv4Address(data[20:24])),
        giaddr=str(ipaddress.IPv4Address(data[24:28])),
        chaddr=data[28 : 28 + hlen],
        sname=_c_string(data[_SNAME]),
        file=_c_string(data[_FILE]),
    )


def _c_string(raw):
    return raw.split(b"\0", 1)[0]


def _decode_options(data, start, stop, options, where):
    """Read code/length/value triples from data[start:stop] into options.

    Stops at END; bytes after END are padding or junk and are ignored. A field
    that ends without END is accepted (RFC 2131 requires END, but nothing is
    lost by reading what is there), an option that runs past the end is not.
    """
    offset = start
    while offset < stop:
        code = data[offset]
        if code == OPTION_END:
            return
        if code == OPTION_PAD:
            offset += 1
            continue

        if offset + 1 >= stop:
            raise DhcpDecodeError(
                f"expected a length byte for option {code} at offset {offset} of the {where}, "
                "got the end of the field"
            )
        length = data[offset + 1]
        value = data[offset + 2 : offset + 2 + length]
        if len(value) < length or offset + 2 + length > stop:
            raise DhcpDecodeError(
                f"expected {length} bytes of option {code} at offset {offset} of the {where}, "
                f"got {max(stop - offset - 2, 0)}: {data[offset + 2 : stop][:16]!r}"
            )

        # RFC 3396: several instances of one option are one value.
        options[code] = options.get(code, b"") + value
        offset += 2 + length


def _decode_overload(data, options, packet):
    """RFC 2132 section 9.3: option 52 moves more options into file and sname."""
    overload = options.get(OPTION_OVERLOAD)
    if overload is None:
        return
    if len(overload) != 1 or overload[0] not in (1, 2, 3):
        raise DhcpDecodeError(f"expected option 52 to be one byte 1, 2 or 3, got {overload!r}")

    # The file field is read before sname (RFC 2131 section 4.1).
    if overload[0] & 1:
        _decode_options(data, _FILE.start, _FILE.stop, options, "file field")
        packet.file = b""
    if overload[0] & 2:
        _decode_options(data, _SNAME.start, _SNAME.stop, options, "sname field")
        packet.sname = b""


def _check_fixed_lengths(options):
    for code, size in ((OPTION_MESSAGE_TYPE, 1), (OPTION_SERVER_ID, 4)):
        value = options.get(code)
        if value is not None and len(value) != size:
            raise DhcpDecodeError(f"expected option {code} to be {size} bytes, got {value!r}")


# Encoding


def encode(packet):
    """The UDP payload for packet: header, cookie, options, END, padded to 300 bytes."""
    if len(packet.chaddr) > 16:
        raise ValueError(f"chaddr is at most 16 bytes, got {len(packet.chaddr)}")
    if len(packet.sname) > 63 or len(packet.file) > 127:
        raise ValueError("sname is at most 63 bytes and file at most 127 (one NUL must fit)")

    header = b"".join(
        (
            bytes((packet.op, packet.htype, packet.hlen, packet.hops)),
            packet.xid.to_bytes(4, "big"),
            packet.secs.to_bytes(2, "big"),
            packet.flags.to_bytes(2, "big"),
            _address(packet.ciaddr),
            _address(packet.yiaddr),
            _address(packet.siaddr),
            _address(packet.giaddr),
            packet.chaddr.ljust(16, b"\0"),
            packet.sname.ljust(64, b"\0"),
            packet.file.ljust(128, b"\0"),
        )
    )
    body = header + MAGIC_COOKIE + encode_options(packet.options) + bytes((OPTION_END,))
    return body.ljust(MINIMUM_PACKET_LENGTH, b"\0")


def _address(text):
    return ipaddress.IPv4Address(text).packed


def encode_options(options):
    """Code/length/value triples, without END. Values over 255 bytes are split (RFC 3396)."""
    out = bytearray()
    for code, value in options.items():
        if not 0 < code < 255:
            raise ValueError(f"option code must be 1-254, got {code}")
        value = bytes(value)
        pieces = [value[i : i + 255] for i in range(0, len(value), 255)] or [b""]
        for piece in pieces:
            out += bytes((code, len(piece))) + piece
    return bytes(out)


# Encapsulated and structured option values


def decode_suboptions(value, where="option 43"):
    """Sub-options inside an encapsulating option (option 43, 82, 175)."""
    suboptions = {}
    _decode_options(value, 0, len(value), suboptions, where)
    return suboptions


def encode_suboptions(suboptions):
    """Sub-options followed by END, as PXE 2.1 lays out option 43."""
    return encode_options(suboptions) + bytes((OPTION_END,))


def user_classes(value):
    """The user classes in option 77.

    RFC 3004 sends length-prefixed instances; iPXE sends one raw string
    ("iPXE") instead. A value that does not split exactly into RFC 3004
    instances is taken as one raw class.
    """
    classes = []
    offset = 0
    while offset < len(value):
        length = value[offset]
        end = offset + 1 + length
        if length == 0 or end > len(value):
            return [bytes(value)]
        classes.append(bytes(value[offset + 1 : end]))
        offset = end
    return classes or [bytes(value)]


def client_architectures(packet):
    """The option 93 types (RFC 4578 section 2.1), or None when absent or malformed."""
    value = packet.options.get(OPTION_CLIENT_ARCH)
    if not value or len(value) % 2:
        return None
    return [int.from_bytes(value[i : i + 2], "big") for i in range(0, len(value), 2)]


def vendor_class_architecture(packet):
    """The number after "Arch:" in option 60 (PXE 2.1), or None."""
    fields = packet.options.get(OPTION_VENDOR_CLASS, b"").split(b":")
    for name, number in zip(fields, fields[1:], strict=False):
        if name == b"Arch" and number.isdigit() and len(number) <= 5:
            return int(number)
    return None


def client_guid(packet):
    """Option 97 as (uuid text or None, trusted).

    RFC 4578 section 2.3: a type byte 0 and 16 bytes. Firmware also sends the
    16 bytes without the type byte. The bytes are the SMBIOS system UUID; since
    SMBIOS 2.6 its first three fields are little-endian, which is the order
    decoded here. A GUID that many boards share (the AMI template), all zeros,
    or an undefined type byte is returned but never trusted to name a machine.
    """
    value = packet.options.get(OPTION_CLIENT_GUID)
    if value is None:
        return None, False

    if len(value) == 17:
        type_byte, raw = value[0], value[1:]
    elif len(value) == 16:
        type_byte, raw = 0, value
    else:
        return None, False

    text = str(uuid.UUID(bytes_le=bytes(raw)))
    return text, type_byte == 0 and uuid_trusted(text)
