"""How inventory snapshots and identifier lists are packed into the database.

A snapshot is the inventory JSON text compressed with zlib. The first one of
a machine is a keyframe, compressed on its own; later ones are deltas,
compressed with the machine's newest keyframe as the preset dictionary
(RFC 1950 FDICT), so a report where one BIOS version changed costs about a
hundred bytes instead of ten kilobytes. A delta always names its keyframe and
a keyframe needs nothing, so any snapshot is read back with at most two
inflates, however long the history. zlib's own header (dictionary id) and
trailer (Adler-32) stay on: a delta inflated against the wrong keyframe, or a
damaged row, is an error, never a wrong document.

Identifier lookups go through a 64-bit digest of the normalised (kind, value)
instead of the text, so the index holds eight bytes per DIMM or disk serial;
the text itself is kept once per machine in a compressed list.

Pure functions over bytes: no SQL, no I/O. The format is part of the schema:
migration 0005 writes it, so a change to it needs a new migration.
"""

import hashlib
import json
import zlib

# The preset dictionary of every keyframe: the field names of the inventory
# schema (cloudboot.inventory/1) as the store writes them, sorted, each list
# with one item. Each keyframe then spends no bytes spelling them out the
# first time. Frozen: zlib names it by its Adler-32 in every keyframe written
# with it, so changing one byte makes those keyframes unreadable.
KEYFRAME_DICTIONARY = (
    b'{"baseboard": {"asset_tag": null, "manufacturer": null, "product": null, "serial": null,'
    b' "version": null}, "bios": {"date": null, "vendor": null, "version": null},'
    b' "bmc": {"ipv4": null, "mac": null}, "chassis": {"asset_tag": null, "manufacturer": null,'
    b' "serial": null, "type": null}, "cpus": [{"cores": null, "manufacturer": null,'
    b' "max_speed_mhz": null, "model": null, "socket": null, "threads": null}],'
    b' "disks": [{"by_path": null, "model": null, "name": null, "nvme_namespaces": null,'
    b' "rotational": null, "serial": null, "size_bytes": null, "transport": null, "wwn": null}],'
    b' "memory": [{"bank": null, "locator": null, "manufacturer": null, "part_number": null,'
    b' "present": null, "serial": null, "size_mb": null, "speed_mts": null, "type": null}],'
    b' "nics": [{"driver": null, "link": null, "mac": null, "name": null, "pci_address": null,'
    b' "permanent_mac": null, "speed_mbps": null}], "pci": [{"address": null, "class": null,'
    b' "device_id": null, "vendor_id": null}], "raid_controllers": [{"device_id": null,'
    b' "driver": null, "model": null, "pci_address": null, "vendor_id": null}],'
    b' "schema": "cloudboot.inventory/1", "smbios_version": null, "system": {"family": null,'
    b' "manufacturer": null, "product": null, "serial": null, "sku": null, "uuid": null,'
    b' "version": null}, "warnings": []}'
)

# A delta larger than this share of its keyframe's compressed size starts a new
# keyframe instead: the hardware changed enough that the old one no longer helps.
DELTA_LIMIT_RATIO = 0.25
_LEVEL = 9


class CodecError(Exception):
    """A stored blob that does not inflate to what it claims to be."""


def compress_keyframe(text):
    """bytes -> the stored form of a keyframe."""
    packer = zlib.compressobj(_LEVEL, zdict=KEYFRAME_DICTIONARY)
    return packer.compress(text) + packer.flush()


def compress_delta(text, keyframe_text):
    """bytes, the keyframe's text -> the stored form of a delta against it."""
    # zlib uses the last 32 KiB of a preset dictionary; a larger inventory
    # still round-trips, it only compresses less (and then becomes a keyframe).
    packer = zlib.compressobj(_LEVEL, zdict=keyframe_text)
    return packer.compress(text) + packer.flush()


def encode_snapshot(text, keyframe):
    """(base_is_keyframe, blob) for a new snapshot's text.

    keyframe: None, or (stored blob, text) of the machine's newest keyframe.
    """
    if keyframe is not None:
        stored, keyframe_text = keyframe
        delta = compress_delta(text, keyframe_text)
        if len(delta) <= len(stored) * DELTA_LIMIT_RATIO:
            return True, delta
    return False, compress_keyframe(text)


def inflate(blob, keyframe_text=None):
    """The text of a stored snapshot; keyframe_text for a delta."""
    # zlib asks for the dictionary only when the stream's header names one
    # (RFC 1950 FDICT), and checks that it is that one.
    dictionary = KEYFRAME_DICTIONARY if keyframe_text is None else keyframe_text
    try:
        unpacker = zlib.decompressobj(zdict=dictionary)
        text = unpacker.decompress(blob) + unpacker.flush()
    except zlib.error as e:
        raise CodecError(f"stored snapshot does not inflate: {e}") from None
    if not unpacker.eof or unpacker.unused_data:
        raise CodecError("stored snapshot is cut short or carries trailing bytes")
    return text


def signal_digest(kind, value):
    """A signed 64-bit digest of a normalised identifier, as SQLite stores integers.

    BLAKE2b is a cryptographic hash: planting a value whose digest equals
    another machine's MAC takes about 2**64 tries. Lookups still compare the
    text, so a collision could cost a lookup, never a wrong identity.
    """
    raw = hashlib.blake2b(f"{kind}\0{value}".encode(), digest_size=8).digest()
    return int.from_bytes(raw, "big", signed=True)


def pack_identifiers(rows):
    """[(kind, value, first_seen_at, last_seen_at), ...] -> compressed bytes."""
    text = json.dumps(sorted(list(row) for row in rows), separators=(",", ":"))
    return zlib.compress(text.encode(), _LEVEL)


def unpack_identifiers(blob):
    """The inverse of pack_identifiers: a list of 4-tuples."""
    try:
        rows = json.loads(inflate(blob))
    except (CodecError, ValueError) as e:
        raise CodecError(f"stored identifier list is damaged: {e}") from None
    return [tuple(row) for row in rows]
