"""Provider packages: one file holding the manifest, the provider's files, and room for a
signature and a watermark.

Layout (all integers big-endian; docs/providers.md has the full description):

    header   16 bytes  b"CBPROVPK", format version u16 (1), section count u16, zero u32
    section  tag 4 bytes ASCII, flags u32 (0), length u64, then `length` bytes
             MANI  the canonical manifest JSON (always first)
             FILE  a deterministic ustar archive of the provider's files (always second)
             SIGN  signature block, opaque here (optional, at most one)
             WMRK  watermark block, opaque here (optional, at most one)

The signed region is the header's magic and version plus the MANI and FILE sections exactly
as stored; `Package.digest` is its SHA-256, so the signature and watermark blocks can be
added or replaced without changing what was signed. Packing is deterministic: the same
directory always gives the same bytes. Unpacking accepts regular files and directories
only, with safe relative names and bounded sizes, and never follows or creates a link.
This module must never run anything from a package.
"""

import hashlib
import io
import os
import shutil
import struct
import tarfile
from dataclasses import dataclass

from providers import manifest as manifest_module

MAGIC = b"CBPROVPK"
FORMAT_VERSION = 1
HEADER = struct.Struct(">8sHHI")
SECTION = struct.Struct(">4sIQ")
REQUIRED_TAGS = (b"MANI", b"FILE")
OPTIONAL_TAGS = (b"SIGN", b"WMRK")
MAX_PACKAGE_BYTES = 512 << 20
MAX_FILES = 10_000
MAX_BLOCK_BYTES = 64 * 1024


class PackageError(ValueError):
    """A package that cannot be packed, read or unpacked; the message says why."""


@dataclass(frozen=True)
class Package:
    manifest: manifest_module.Manifest
    manifest_bytes: bytes
    files: bytes  # the ustar archive
    signature: bytes | None
    watermark: bytes | None
    digest: str  # SHA-256 of the signed region, hex


def pack(directory, out_path, signature=None, watermark=None):
    """Pack DIR (with DIR/provider.json) into one package file; returns the Package."""
    found = manifest_module.load(directory)
    manifest_bytes = found.to_json().encode()
    files = _archive(directory)
    if found.entry not in _names(files):
        raise PackageError(f"entry {found.entry!r} is not a file in {directory}")
    blob = encode(manifest_bytes, files, signature, watermark)
    temporary = f"{out_path}.partial"
    with open(temporary, "wb") as handle:
        handle.write(blob)
    os.replace(temporary, out_path)
    return decode(blob)


def encode(manifest_bytes, files, signature=None, watermark=None):
    sections = [(b"MANI", manifest_bytes), (b"FILE", files)]
    for tag, block in ((b"SIGN", signature), (b"WMRK", watermark)):
        if block is not None:
            if len(block) > MAX_BLOCK_BYTES:
                raise PackageError(f"{tag.decode()} block larger than {MAX_BLOCK_BYTES} bytes")
            sections.append((tag, block))
    out = [HEADER.pack(MAGIC, FORMAT_VERSION, len(sections), 0)]
    for tag, data in sections:
        out += [SECTION.pack(tag, 0, len(data)), data]
    return b"".join(out)


def read(path):
    """Read and check a package file; returns the Package."""
    try:
        size = os.path.getsize(path)
        if size > MAX_PACKAGE_BYTES:
            raise PackageError(f"{path}: {size} bytes, more than {MAX_PACKAGE_BYTES}")
        with open(path, "rb") as handle:
            return decode(handle.read())
    except OSError as exc:
        raise PackageError(f"cannot read package {path}: {exc.strerror}") from None


def decode(blob):
    """Parse package bytes; raises PackageError on any deviation from the layout."""
    if len(blob) < HEADER.size:
        raise PackageError(f"package is {len(blob)} bytes, shorter than its header")
    magic, version, count, zero = HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise PackageError(f"not a provider package (magic {magic!r}, expected {MAGIC!r})")
    if version != FORMAT_VERSION or zero:
        raise PackageError(f"package format {version} is not supported (expected 1)")
    sections, signed_end, offset = _sections(blob, count)
    tags = [tag for tag, _ in sections]
    if tags[:2] != list(REQUIRED_TAGS) or len(set(tags)) != len(tags):
        raise PackageError(f"sections must be MANI, FILE, then SIGN/WMRK once each; got {tags}")
    blocks = dict(sections)
    try:
        found = manifest_module.parse(blocks[b"MANI"])
    except manifest_module.ManifestError as exc:
        raise PackageError(f"package manifest: {exc}") from None
    signed = blob[:10] + blob[HEADER.size : signed_end]
    return Package(
        manifest=found,
        manifest_bytes=blocks[b"MANI"],
        files=blocks[b"FILE"],
        signature=blocks.get(b"SIGN"),
        watermark=blocks.get(b"WMRK"),
        digest=hashlib.sha256(signed).hexdigest(),
    )


def _sections(blob, count):
    if not 2 <= count <= 4:
        raise PackageError(f"package has {count} sections, expected 2 to 4")
    offset, sections, signed_end = HEADER.size, [], None
    for index in range(count):
        if offset + SECTION.size > len(blob):
            raise PackageError(f"section {index} header runs past the end of the package")
        tag, flags, length = SECTION.unpack_from(blob, offset)
        offset += SECTION.size
        if tag not in REQUIRED_TAGS + OPTIONAL_TAGS or flags:
            raise PackageError(f"section {index}: unknown tag {tag!r} or flags {flags:#x}")
        if tag in OPTIONAL_TAGS and length > MAX_BLOCK_BYTES:
            raise PackageError(
                f"{tag.decode()} block is {length} bytes, more than {MAX_BLOCK_BYTES}"
            )
        if offset + length > len(blob):
            raise PackageError(f"section {tag.decode()} claims {length} bytes; the file ends")
        sections.append((tag, blob[offset : offset + length]))
        offset += length
        if index == 1:
            signed_end = offset
    if offset != len(blob):
        raise PackageError(f"{len(blob) - offset} bytes of trailing data after the last section")
    return sections, signed_end, offset


def unpack(package, destination):
    """Unpack a Package (or a path to one) into DESTINATION, which must not exist yet."""
    if not isinstance(package, Package):
        package = read(package)
    members = _checked_members(package.files)
    if package.manifest.entry not in {m.name for m in members if m.isfile()}:
        raise PackageError(f"entry {package.manifest.entry!r} is not in the package")
    try:
        os.mkdir(destination, 0o755)
    except FileExistsError:
        raise PackageError(f"{destination} already exists; unpack into a new directory") from None
    try:
        with tarfile.open(fileobj=io.BytesIO(package.files), mode="r:") as archive:
            for member in members:
                _extract(archive, member, destination)
        path = os.path.join(destination, manifest_module.MANIFEST_NAME)
        with open(path, "xb") as handle:
            handle.write(package.manifest_bytes)
    except BaseException:
        shutil.rmtree(destination, ignore_errors=True)
        raise
    return package.manifest


def _checked_members(files):
    try:
        with tarfile.open(fileobj=io.BytesIO(files), mode="r:") as archive:
            members = archive.getmembers()
    except tarfile.TarError as exc:
        raise PackageError(f"package files are not a valid archive: {exc}") from None
    if len(members) > MAX_FILES:
        raise PackageError(f"package holds {len(members)} entries, more than {MAX_FILES}")
    seen = set()
    for member in members:
        try:
            manifest_module.entry_path(member.name, where="package file")
        except manifest_module.ManifestError as exc:
            raise PackageError(str(exc)) from None
        if not (member.isfile() or member.isdir()):
            raise PackageError(f"package file {member.name!r}: only files and directories")
        if member.name in seen or member.name == manifest_module.MANIFEST_NAME:
            raise PackageError(f"package file {member.name!r} appears twice")
        seen.add(member.name)
    return members


def _extract(archive, member, destination):
    target = os.path.join(destination, member.name)
    parent = os.path.dirname(target)
    os.makedirs(parent, 0o755, exist_ok=True)
    if member.isdir():
        os.makedirs(target, 0o755, exist_ok=True)
        return
    mode = 0o755 if member.mode & 0o111 else 0o644
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    source = archive.extractfile(member)
    fd = os.open(target, flags, mode)
    with os.fdopen(fd, "wb") as handle:
        while chunk := source.read(1 << 20):
            handle.write(chunk)
    os.chmod(target, mode)


def _archive(directory):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:", format=tarfile.USTAR_FORMAT) as archive:
        for relative in _walk(directory):
            _add(archive, directory, relative)
    return buffer.getvalue()


def _walk(directory):
    names = []
    for root, dirs, files in os.walk(directory, followlinks=False):
        dirs.sort()
        for name in dirs + files:
            relative = os.path.relpath(os.path.join(root, name), directory)
            if relative != manifest_module.MANIFEST_NAME:
                names.append(relative)
    if len(names) > MAX_FILES:
        raise PackageError(f"{directory} holds more than {MAX_FILES} entries")
    return sorted(names)


def _add(archive, directory, relative):
    path = os.path.join(directory, relative)
    try:
        manifest_module.entry_path(relative, where="package file")
    except manifest_module.ManifestError as exc:
        raise PackageError(str(exc)) from None
    info = tarfile.TarInfo(relative)
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    if os.path.islink(path):
        raise PackageError(f"{relative}: links cannot be packed; copy the file instead")
    if os.path.isdir(path):
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        archive.addfile(info)
        return
    if not os.path.isfile(path):
        raise PackageError(f"{relative}: only regular files and directories can be packed")
    info.size = os.path.getsize(path)
    info.mode = 0o755 if os.stat(path).st_mode & 0o111 else 0o644
    with open(path, "rb") as handle:
        try:
            archive.addfile(info, handle)
        except ValueError as exc:  # a name too long for ustar
            raise PackageError(f"{relative}: {exc}") from None


def _names(files):
    with tarfile.open(fileobj=io.BytesIO(files), mode="r:") as archive:
        return {m.name for m in archive.getmembers() if m.isfile()}
