"""A small pcap reader and writer for the DHCP tests (libpcap format, Ethernet, IPv4/UDP).

Reading pulls the UDP payloads out of real captures; writing wraps packets the
codec made in Ethernet/IPv4/UDP headers so tshark can judge them.
"""

import ipaddress
import struct
from dataclasses import dataclass

# Magic numbers in file byte order: microsecond and nanosecond timestamps.
_MAGICS = {
    b"\xd4\xc3\xb2\xa1": "<",
    b"\xa1\xb2\xc3\xd4": ">",
    b"\x4d\x3c\xb2\xa1": "<",
    b"\xa1\xb2\x3c\x4d": ">",
}
LINKTYPE_ETHERNET = 1


@dataclass
class Datagram:
    frame: int
    source: tuple
    destination: tuple
    payload: bytes


def read_udp(path):
    """Every IPv4/UDP datagram in the capture, payload cut to what was captured."""
    data = path.read_bytes()
    order = _MAGICS.get(data[:4])
    if order is None:
        raise ValueError(f"{path} is not a pcap file (magic {data[:4]!r})")
    # The upper bits carry FCS flags (tcpdump's fuzz captures set them); the link type is below.
    linktype = struct.unpack(order + "I", data[20:24])[0] & 0xFFFF
    if linktype != LINKTYPE_ETHERNET:
        raise ValueError(f"{path}: link type {linktype}, only Ethernet is read")

    datagrams = []
    offset, frame = 24, 0
    while offset + 16 <= len(data):
        _, _, captured, _ = struct.unpack(order + "IIII", data[offset : offset + 16])
        frame += 1
        record = data[offset + 16 : offset + 16 + captured]
        offset += 16 + captured
        datagram = _udp(record, frame)
        if datagram is not None:
            datagrams.append(datagram)
    return datagrams


def _udp(frame_bytes, frame):
    if len(frame_bytes) < 14 + 20 + 8 or frame_bytes[12:14] != b"\x08\x00":
        return None
    ip = frame_bytes[14:]
    header_length = (ip[0] & 0x0F) * 4
    if ip[9] != 17:
        return None
    udp = ip[header_length:]
    source = (str(ipaddress.IPv4Address(ip[12:16])), int.from_bytes(udp[0:2], "big"))
    destination = (str(ipaddress.IPv4Address(ip[16:20])), int.from_bytes(udp[2:4], "big"))
    return Datagram(frame, source, destination, udp[8:])


def write_udp(path, datagrams, source_mac=b"\x02\x00\x00\x00\x00\x01"):
    """Write (source, destination, payload) tuples as Ethernet/IPv4/UDP frames."""
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_ETHERNET))
    for number, (source, destination, payload) in enumerate(datagrams):
        frame = _ethernet(source, destination, payload, source_mac)
        out += struct.pack("<IIII", number, 0, len(frame), len(frame)) + frame
    path.write_bytes(bytes(out))


def _ethernet(source, destination, payload, source_mac):
    udp_length = 8 + len(payload)
    ip_header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + udp_length,
        0,
        0,
        64,
        17,
        0,
        ipaddress.IPv4Address(source[0]).packed,
        ipaddress.IPv4Address(destination[0]).packed,
    )
    ip_header = ip_header[:10] + _checksum(ip_header).to_bytes(2, "big") + ip_header[12:]

    pseudo = ip_header[12:20] + struct.pack("!BBH", 0, 17, udp_length)
    udp = struct.pack("!HHHH", source[1], destination[1], udp_length, 0) + payload
    udp_sum = _checksum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + udp_sum.to_bytes(2, "big") + udp[8:]

    return b"\xff" * 6 + source_mac + b"\x08\x00" + ip_header + udp


def _checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
