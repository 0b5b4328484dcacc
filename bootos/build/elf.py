"""Just enough ELF reading to find which shared libraries a binary needs.

The BootOS builder copies chosen programs out of Debian packages and must
carry every library they load, without running them and without binutils on
the build host. An ELF64 file lists its libraries as DT_NEEDED entries in the
.dynamic section (System V gABI, "Dynamic Section"). This module reads those
names and nothing else; it never executes or modifies a file.
"""

import struct

_MAGIC = b"\x7fELF"
_ELFCLASS64 = 2
_ELFDATA2LSB = 1
_SHT_DYNAMIC = 6
_DT_NULL = 0
_DT_NEEDED = 1


def is_elf(path):
    """True when the file starts with the ELF magic."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == _MAGIC
    except OSError:
        return False


def needed_libraries(path):
    """Names from DT_NEEDED (e.g. "libc.so.6"), in file order; [] for static files.

    Raises ValueError for a file that is not a little-endian ELF64 object:
    BootOS is x86-64 only, so anything else in the tree is a packaging error.
    """
    with open(path, "rb") as f:
        data = f.read()

    if data[:4] != _MAGIC or data[4] != _ELFCLASS64 or data[5] != _ELFDATA2LSB:
        raise ValueError(f"{path}: not a little-endian ELF64 file")

    sections = _section_headers(data)
    needed = []
    for sh_type, offset, size, link in sections:
        if sh_type != _SHT_DYNAMIC:
            continue
        strtab_offset = sections[link][1]
        needed.extend(_dynamic_needed(data, offset, size, strtab_offset))
    return needed


def _section_headers(data):
    """[(sh_type, sh_offset, sh_size, sh_link)] from the ELF64 section header table."""
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    headers = []
    for index in range(shnum):
        base = shoff + index * shentsize
        sh_type = struct.unpack_from("<I", data, base + 0x04)[0]
        offset, size = struct.unpack_from("<QQ", data, base + 0x18)
        link = struct.unpack_from("<I", data, base + 0x28)[0]
        headers.append((sh_type, offset, size, link))
    return headers


def _dynamic_needed(data, offset, size, strtab_offset):
    # Each Elf64_Dyn entry is (d_tag, d_val), 8 bytes each; DT_NULL ends the table.
    for entry in range(offset, offset + size, 16):
        tag, value = struct.unpack_from("<qQ", data, entry)
        if tag == _DT_NULL:
            return
        if tag == _DT_NEEDED:
            start = strtab_offset + value
            yield data[start : data.index(b"\0", start)].decode()
