"""A reproducible writer for the newc cpio format the kernel unpacks as initramfs.

The kernel's initramfs reader (Documentation/driver-api/early-userspace/
buffer-format.rst) takes the "newc" format: a 110-byte ASCII header of
hexadecimal fields, the NUL-terminated name, padding to 4 bytes, the data,
padding to 4 bytes, and a final "TRAILER!!!" entry. Writing it here rather
than through cpio(1) lets every field that could vary between two builds be
set explicitly: entries sorted by name, owner root, one fixed mtime, inode
numbers counted from 1, device numbers zero, no hard links. Device nodes
(/dev/console) can be written without root privileges on the build host.

This module only writes archives; it never reads the host's users or clock.
"""

import os
import stat

_TRAILER = "TRAILER!!!"


class Entry:
    """One archive member: a directory, regular file, symlink or character device."""

    def __init__(self, name, mode, data=b"", rdev=(0, 0)):
        self.name = name
        self.mode = mode
        self.data = data
        self.rdev = rdev


def entries_from_tree(root):
    """Entries for everything under root, names relative and sorted (byte order)."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            entries.append(_entry_for(path, os.path.relpath(path, root)))
    return entries


def _entry_for(path, name):
    info = os.lstat(path)
    perm = stat.S_IMODE(info.st_mode)
    if stat.S_ISLNK(info.st_mode):
        return Entry(name, stat.S_IFLNK | 0o777, os.readlink(path).encode())
    if stat.S_ISDIR(info.st_mode):
        return Entry(name, stat.S_IFDIR | perm)
    if stat.S_ISREG(info.st_mode):
        with open(path, "rb") as f:
            return Entry(name, stat.S_IFREG | perm, f.read())
    raise ValueError(f"{path}: only directories, files and symlinks go into an initramfs")


def write_newc(out, entries, mtime):
    """Write entries (sorted here by name) to the binary file out; returns bytes written."""
    written = 0
    for inode, entry in enumerate(sorted(entries, key=lambda e: e.name.encode()), start=1):
        written += _write_member(out, entry, inode, mtime)
    written += _write_member(out, Entry(_TRAILER, 0), 0, 0)
    return written


def _write_member(out, entry, inode, mtime):
    name = entry.name.encode() + b"\0"
    nlink = 2 if stat.S_ISDIR(entry.mode) else 1
    fields = (
        inode,
        entry.mode,
        0,  # uid: root
        0,  # gid: root
        nlink,
        mtime,
        len(entry.data),
        0,  # dev major
        0,  # dev minor
        entry.rdev[0],
        entry.rdev[1],
        len(name),
        0,  # check: unused in newc (only "crc" format fills it)
    )
    header = b"070701" + b"".join(b"%08X" % value for value in fields)
    chunk = header + name
    chunk += b"\0" * (-len(chunk) % 4)
    chunk += entry.data + b"\0" * (-len(entry.data) % 4)
    out.write(chunk)
    return len(chunk)
