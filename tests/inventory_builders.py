"""Builders for the inventory tests: SMBIOS tables and sysfs trees made by hand.

The layouts follow DSP0134 (SMBIOS) and the Linux sysfs ABI, written here
independently of the parser so a test can catch the parser misreading them.
"""

import os
import struct


def structure(type_, handle, body, strings=()):
    """One SMBIOS structure: header, formatted body, string set."""
    header = struct.pack("<BBH", type_, 4 + len(body), handle)
    # An empty string set is still ended by two NULs (DSP0134 6.1.3).
    tail = b"".join(s + b"\x00" for s in strings) + b"\x00" if strings else b"\x00\x00"
    return header + body + tail


def end_of_table(handle=0xFEFF):
    return structure(127, handle, b"")


def _checksummed(data, at, start=0, end=None):
    """Set the byte at `at` so bytes start..end sum to zero (DSP0134 5.2)."""
    data = bytearray(data)
    end = len(data) if end is None else end
    data[at] = 0
    data[at] = (-sum(data[start:end])) & 0xFF
    return bytes(data)


def entry_point_3(major, minor, docrev, table_length=0, table_address=0):
    # "_SM3_", checksum, length 0x18, major, minor, docrev, entry revision 1,
    # reserved, maximum table size, table address.
    body = struct.pack(
        "<5sBBBBBBBIQ",
        b"_SM3_",
        0,
        0x18,
        major,
        minor,
        docrev,
        1,
        0,
        table_length,
        table_address,
    )
    return _checksummed(body, 5)


def entry_point_2(major, minor, table_length=0, table_address=0, count=0):
    # "_SM_", checksum, length 0x1F, major, minor, max structure size, revision,
    # formatted area; then "_DMI_", its checksum, table length, address, count, BCD.
    head = struct.pack("<4sBBBBHB5s", b"_SM_", 0, 0x1F, major, minor, 0x100, 0, b"\x00" * 5)
    bcd = (major << 4) | minor
    tail = struct.pack("<5sBHIHB", b"_DMI_", 0, table_length, table_address, count, bcd)
    data = _checksummed(head + tail, 0x15, 0x10, 0x1F)
    return _checksummed(data, 4, 0, 0x1F)


def dump_file(entry_point, table):
    """The layout of `dmidecode --dump-bin`: entry point at 0, table at 32."""
    return entry_point.ljust(32, b"\x00") + table


def bios(vendor=b"Vendor", version=b"1.0", date=b"01/02/2024"):
    body = struct.pack("<BBHBB", 1, 2, 0xE800, 3, 0x0F) + b"\x00" * 8 + b"\x00" * 4
    return structure(0, 0x0000, body, [vendor, version, date])


def system(uuid_bytes, manufacturer=b"Maker", product=b"Model X", serial=b"SN123"):
    body = struct.pack("<BBBB", 1, 2, 3, 4) + uuid_bytes + struct.pack("<BBB", 6, 5, 6)
    strings = [manufacturer, product, b"v1", serial, b"SKU-1", b"Family-1"]
    return structure(1, 0x0100, body, strings)


def baseboard(product=b"Board 1"):
    body = struct.pack("<BBBBB", 1, 2, 3, 4, 5) + b"\x00" * 6
    return structure(2, 0x0200, body, [b"Maker", product, b"A01", b"BSN1", b" "])


def chassis(type_code=0x17):
    body = struct.pack("<BBBBB", 1, type_code, 0, 2, 0) + b"\x00" * 13
    return structure(3, 0x0300, body, [b"Maker", b"CSN1"])


def processor(socket=b"CPU1", model=b"Xeon Test", populated=True, cores=8, threads=16):
    status = 0x41 if populated else 0x00
    body = bytearray(0x30 - 4)

    def put(offset, fmt, value):
        struct.pack_into(fmt, body, offset - 4, value)

    put(0x04, "<B", 1)  # socket designation string
    put(0x05, "<B", 3)  # central processor
    put(0x07, "<B", 2)  # manufacturer string
    put(0x10, "<B", 3 if model else 0)  # version string (0: none)
    put(0x14, "<H", 3600)  # max speed MHz
    put(0x18, "<B", status)
    put(0x23, "<B", cores)
    put(0x25, "<B", threads)
    strings = [socket, b"Intel(R) Corporation"] + ([model] if model else [])
    return structure(4, 0x0400, bytes(body), strings)


def memory_device(handle, locator, size_mb, speed=3200, part=b"PART-1  "):
    body = bytearray(0x28 - 4)

    def put(offset, fmt, value):
        struct.pack_into(fmt, body, offset - 4, value)

    put(0x0C, "<H", size_mb if size_mb < 0x7FFF else 0x7FFF)
    put(0x10, "<B", 1)  # device locator string
    put(0x11, "<B", 2)  # bank locator string
    put(0x12, "<B", 0x1A if size_mb else 0x02)  # DDR4 / unknown
    put(0x15, "<H", speed if size_mb else 0)
    put(0x17, "<B", 3)
    put(0x18, "<B", 4)
    put(0x1A, "<B", 5)
    put(0x1C, "<I", size_mb if size_mb >= 0x7FFF else 0)
    maker, serial = (b"Samsung", b"S0001") if size_mb else (b"NO DIMM", b"NO DIMM")
    strings = [locator, b"BANK 0", maker, serial, part if size_mb else b"NO DIMM"]
    return structure(17, handle, bytes(body), strings)


UUID_BYTES = bytes.fromhex("9402de03800406 05f806d50700080009".replace(" ", ""))


def system_table(manufacturer=b"Maker", uuid_bytes=UUID_BYTES):
    return system(uuid_bytes, manufacturer=manufacturer) + end_of_table()


def full_table():
    return b"".join(
        [
            bios(),
            system(UUID_BYTES),
            baseboard(),
            chassis(),
            processor(b"CPU1"),
            processor(b"CPU2", model=b"", populated=False, cores=0, threads=0),
            memory_device(0x1100, b"DIMM A1", 32768),
            memory_device(0x1101, b"DIMM A2", 0),
            memory_device(0x1102, b"DIMM B1", 65536),
            end_of_table(),
        ]
    )


def write_tree(root, files, links=None):
    """Write {relative path: bytes} and {relative path: link target} below root.

    Links are made first, each with its target directory, so files can then be
    written through them the way sysfs shows them (sys/block/sda/size).
    """
    for rel, target in sorted((links or {}).items()):
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.makedirs(os.path.normpath(os.path.join(os.path.dirname(path), target)), exist_ok=True)
        os.symlink(target, path)
    for rel, data in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(data)
