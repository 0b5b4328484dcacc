"""Decode raw SMBIOS tables (the bytes Linux exposes under /sys/firmware/dmi/tables).

Pure functions over bytes: the entry point gives the SMBIOS version, the table
gives structures, and the structures this agent reports (types 0, 1, 2, 3, 4
and 17) become records with the same keys the dmidecode text parser produces,
so one builder turns either source into the inventory document.

Must never raise on bad input: a truncated or corrupt table yields the
structures read before the damage and a warning naming the offset.
References are to DMTF DSP0134 (SMBIOS Reference Specification) 3.x.
"""

import logging
import struct

log = logging.getLogger(__name__)

END_OF_TABLE = 127

# DSP0134 7.4.1, chassis type byte (bit 7 is the lock flag).
CHASSIS_TYPES = {
    0x01: "Other",
    0x02: "Unknown",
    0x03: "Desktop",
    0x04: "Low Profile Desktop",
    0x05: "Pizza Box",
    0x06: "Mini Tower",
    0x07: "Tower",
    0x08: "Portable",
    0x09: "Laptop",
    0x0A: "Notebook",
    0x0B: "Hand Held",
    0x0C: "Docking Station",
    0x0D: "All In One",
    0x0E: "Sub Notebook",
    0x0F: "Space-saving",
    0x10: "Lunch Box",
    0x11: "Main Server Chassis",
    0x12: "Expansion Chassis",
    0x13: "Sub Chassis",
    0x14: "Bus Expansion Chassis",
    0x15: "Peripheral Chassis",
    0x16: "RAID Chassis",
    0x17: "Rack Mount Chassis",
    0x18: "Sealed-case PC",
    0x19: "Multi-system",
    0x1A: "CompactPCI",
    0x1B: "AdvancedTCA",
    0x1C: "Blade",
    0x1D: "Blade Enclosure",
    0x1E: "Tablet",
    0x1F: "Convertible",
    0x20: "Detachable",
    0x21: "IoT Gateway",
    0x22: "Embedded PC",
    0x23: "Mini PC",
    0x24: "Stick PC",
}

# DSP0134 7.18.2, memory device type.
MEMORY_TYPES = {
    0x03: "DRAM",
    0x04: "EDRAM",
    0x05: "VRAM",
    0x06: "SRAM",
    0x07: "RAM",
    0x08: "ROM",
    0x09: "Flash",
    0x0A: "EEPROM",
    0x0B: "FEPROM",
    0x0C: "EPROM",
    0x0D: "CDRAM",
    0x0E: "3DRAM",
    0x0F: "SDRAM",
    0x10: "SGRAM",
    0x11: "RDRAM",
    0x12: "DDR",
    0x13: "DDR2",
    0x14: "DDR2 FB-DIMM",
    0x18: "DDR3",
    0x19: "FBD2",
    0x1A: "DDR4",
    0x1B: "LPDDR",
    0x1C: "LPDDR2",
    0x1D: "LPDDR3",
    0x1E: "LPDDR4",
    0x1F: "Logical non-volatile device",
    0x20: "HBM",
    0x21: "HBM2",
    0x22: "DDR5",
    0x23: "LPDDR5",
    0x24: "HBM3",
}


class Structure:
    """One SMBIOS structure: its formatted area and its string set."""

    def __init__(self, type_, handle, formatted, strings):
        self.type = type_
        self.handle = handle
        self.formatted = formatted
        self.strings = strings

    def byte(self, offset):
        if offset + 1 > len(self.formatted):
            return None
        return self.formatted[offset]

    def word(self, offset):
        if offset + 2 > len(self.formatted):
            return None
        return struct.unpack_from("<H", self.formatted, offset)[0]

    def dword(self, offset):
        if offset + 4 > len(self.formatted):
            return None
        return struct.unpack_from("<I", self.formatted, offset)[0]

    def string(self, offset):
        """The string a byte at `offset` points to (1-based; 0 means none)."""
        index = self.byte(offset)
        if not index or index > len(self.strings):
            return None
        return self.strings[index - 1]


def parse_entry_point(data, warnings):
    """SMBIOS version text ("2.8", "3.2.0") from the entry point, or None.

    The 2.x "_SM_" anchor carries major.minor at offsets 6 and 7; the 3.x
    "_SM3_" anchor carries major.minor.docrev at 7, 8 and 9 (DSP0134 5.2).
    dmidecode prints the versions the same way, which keeps both sources equal.
    """
    if data is None:
        return None

    if data[:5] == b"_SM3_" and len(data) >= 10:
        return f"{data[7]}.{data[8]}.{data[9]}"

    if data[:4] == b"_SM_" and len(data) >= 8:
        return f"{data[6]}.{data[7]}"

    # A bare legacy "_DMI_" anchor (SMBIOS 2.0) keeps the version as BCD at 0x0E.
    if data[:5] == b"_DMI_" and len(data) >= 15:
        return f"{data[14] >> 4}.{data[14] & 0x0F}"

    warnings.append(f"SMBIOS entry point not recognised (starts {data[:8]!r})")
    return None


def _decode_string(raw, where, warnings):
    # Strings are ASCII by the spec, but firmware ships other bytes. Latin-1
    # keeps each byte distinct (a replacement character would make two
    # different serials compare equal).
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        warnings.append(f"non-UTF-8 SMBIOS string in {where}: {raw!r}")
        return raw.decode("latin-1")


def parse_table(data, warnings):
    """List of Structure read from the DMI table bytes, stopping at damage.

    Each structure is a 4-byte header (type, length, handle), the formatted
    area of `length` bytes, then strings each ended by NUL, the set ended by
    an extra NUL (DSP0134 6.1.3).
    """
    structures = []
    offset = 0
    while offset + 4 <= len(data):
        type_, length, handle = struct.unpack_from("<BBH", data, offset)
        if length < 4 or offset + length > len(data):
            warnings.append(f"SMBIOS table truncated in a structure header at offset {offset}")
            return structures

        end = data.find(b"\x00\x00", offset + length)
        if end < 0:
            warnings.append(f"SMBIOS table truncated in the strings of type {type_} at {offset}")
            return structures

        where = f"type {type_} handle 0x{handle:04X}"
        raw_strings = data[offset + length : end].split(b"\x00")
        strings = [_decode_string(s, where, warnings) for s in raw_strings if s]
        structures.append(Structure(type_, handle, data[offset : offset + length], strings))
        offset = end + 2

        if type_ == END_OF_TABLE:
            return structures

    if offset < len(data):
        warnings.append(f"SMBIOS table ends with {len(data) - offset} stray bytes")
    elif not structures or structures[-1].type != END_OF_TABLE:
        warnings.append("SMBIOS table has no end-of-table structure (type 127)")
    return structures


def version_tuple(version):
    try:
        return tuple(int(part) for part in version.split("."))[:2]
    except (AttributeError, ValueError):
        return (0, 0)


def decode_uuid(raw, version):
    """UUID text from the 16 bytes of type 1 offset 08h, or None when unset.

    From SMBIOS 2.6 on, the first three fields are little-endian (DSP0134
    7.2.1); earlier tables were written in network order. All-zero means not
    present and all-FF means not set (the same section).
    """
    if raw is None or len(raw) != 16 or raw in (b"\x00" * 16, b"\xff" * 16):
        return None

    # Without an entry point the version is unknown; every table of the last
    # fifteen years is 2.6 or later, so the modern order is the better guess.
    if version is None or version_tuple(version) >= (2, 6):
        raw = raw[3::-1] + raw[5:3:-1] + raw[7:5:-1] + raw[8:]

    text = raw.hex()
    return f"{text[0:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:32]}"


def _bios(s, version):
    return {"type": 0, "vendor": s.string(0x04), "version": s.string(0x05), "date": s.string(0x08)}


def _system(s, version):
    return {
        "type": 1,
        "manufacturer": s.string(0x04),
        "product": s.string(0x05),
        "version": s.string(0x06),
        "serial": s.string(0x07),
        "uuid": decode_uuid(s.formatted[0x08:0x18], version),
        "sku": s.string(0x19),
        "family": s.string(0x1A),
    }


def _baseboard(s, version):
    return {
        "type": 2,
        "manufacturer": s.string(0x04),
        "product": s.string(0x05),
        "version": s.string(0x06),
        "serial": s.string(0x07),
        "asset_tag": s.string(0x08),
    }


def _chassis(s, version):
    code = s.byte(0x05)
    return {
        "type": 3,
        "manufacturer": s.string(0x04),
        "chassis_type": CHASSIS_TYPES.get(code & 0x7F) if code is not None else None,
        "serial": s.string(0x07),
        "asset_tag": s.string(0x08),
    }


def _count(short, wide):
    # 0xFF in the byte field means "see the 3.0 word field" (DSP0134 7.5.6).
    if short == 0xFF and wide not in (None, 0, 0xFFFF):
        return wide
    return short or None


def _processor(s, version):
    status = s.byte(0x18)
    speed = s.word(0x14)
    return {
        "type": 4,
        "socket": s.string(0x04),
        "manufacturer": s.string(0x07),
        "model": s.string(0x10),
        "populated": None if status is None else bool(status & 0x40),
        "max_speed_mhz": speed or None,
        "cores": _count(s.byte(0x23), s.word(0x2A)),
        "threads": _count(s.byte(0x25), s.word(0x2E)),
    }


def _memory_size_mb(s):
    # DSP0134 7.18.5: 0 = no module, 0xFFFF = unknown, bit 15 = KiB units,
    # 0x7FFF = see the extended size dword at 1Ch (MiB).
    size = s.word(0x0C)
    if size is None or size == 0xFFFF:
        return None, None
    if size == 0:
        return 0, False
    if size == 0x7FFF:
        extended = s.dword(0x1C)
        return (extended & 0x7FFFFFFF if extended is not None else None), True
    if size & 0x8000:
        return (size & 0x7FFF) // 1024, True
    return size, True


def _memory_speed(s):
    # 0xFFFF means the real speed is in the 3.3 extended dword at 54h.
    speed = s.word(0x15)
    if speed == 0xFFFF:
        speed = s.dword(0x54)
    return speed or None


def _memory_device(s, version):
    size_mb, present = _memory_size_mb(s)
    return {
        "type": 17,
        "locator": s.string(0x10),
        "bank": s.string(0x11),
        "present": present,
        "size_mb": size_mb or None,
        "memory_type": MEMORY_TYPES.get(s.byte(0x12)),
        "speed_mts": _memory_speed(s),
        "manufacturer": s.string(0x17),
        "serial": s.string(0x18),
        "part_number": s.string(0x1A),
    }


DECODERS = {0: _bios, 1: _system, 2: _baseboard, 3: _chassis, 4: _processor, 17: _memory_device}


def records_from_tables(entry_point, table, warnings):
    """(smbios_version, records) from the raw entry point and table bytes."""
    version = parse_entry_point(entry_point, warnings)
    records = []
    for structure in parse_table(table, warnings):
        decoder = DECODERS.get(structure.type)
        if decoder is not None:
            records.append(decoder(structure, version))
    return version, records
