"""The backup file format: one CBOR map holding an encrypted, compressed database.

    {"format": "cloudboot.backup/1", "appliance_id", "created_at", "schema_version",
     "key_id", "wrapped_key", "compression": "zlib", "nonce", "size", "sha256",
     "ciphertext"}

The database bytes are zlib-compressed, then encrypted with
XChaCha20-Poly1305 under a random 32-byte data key used for this file only;
the data key is stored wrapped by the appliance's backup key
(appliance/backup/keysource.py). Every field other than the ciphertext is the
AEAD's associated data (canonical CBOR), so changing the appliance id, the
schema version or the key id makes the file fail to open, not restore
somewhere it should not. `size` and `sha256` describe the plain database, so
a verified file also proves the decompressed bytes are the ones backed up.

open_envelope() raises EnvelopeError with one sentence for the operator; it
must never return bytes that did not pass authentication.
"""

import hashlib
import io
import secrets
import zlib

import cbor2
import nacl.bindings as sodium
import nacl.exceptions

from appliance.backup.keysource import KEY_BYTES, NONCE_BYTES, KeySourceError

FORMAT = "cloudboot.backup/1"
COMPRESSION = "zlib"
# Level 3: most of the size win of level 9 at a fraction of its time on SQLite pages.
ZLIB_LEVEL = 3

_HEADER_TYPES = {
    "format": str,
    "appliance_id": str,
    "created_at": str,
    "schema_version": int,
    "key_id": str,
    "wrapped_key": dict,
    "compression": str,
    "nonce": bytes,
    "size": int,
    "sha256": str,
}


class EnvelopeError(Exception):
    """The file is not a backup this appliance can open (damaged, truncated, wrong key)."""


def seal(database, *, appliance_id, created_at, schema_version, keys):
    """The whole backup file (bytes) for the plain database bytes."""
    data_key = secrets.token_bytes(KEY_BYTES)
    wrapped = keys.wrap(data_key)
    header = {
        "format": FORMAT,
        "appliance_id": appliance_id,
        "created_at": created_at,
        "schema_version": schema_version,
        "key_id": wrapped["key_id"],
        "wrapped_key": wrapped,
        "compression": COMPRESSION,
        "nonce": secrets.token_bytes(NONCE_BYTES),
        "size": len(database),
        "sha256": hashlib.sha256(database).hexdigest(),
    }
    ciphertext = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
        zlib.compress(database, ZLIB_LEVEL), _aad(header), header["nonce"], data_key
    )
    return cbor2.dumps({**header, "ciphertext": ciphertext}, canonical=True)


def read_header(blob):
    """The header fields of a backup file, checked for shape; no key needed."""
    stream = io.BytesIO(blob)
    try:
        document = cbor2.CBORDecoder(stream).decode()
    except cbor2.CBORDecodeEOF:
        raise EnvelopeError(
            f"the file is truncated ({len(blob)} bytes): it was not completely written or copied"
        ) from None
    except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError) as e:
        raise EnvelopeError(f"the file is not a CloudBoot backup (not CBOR: {e})") from None

    if not isinstance(document, dict) or document.get("format") != FORMAT:
        found = document.get("format") if isinstance(document, dict) else type(document).__name__
        raise EnvelopeError(
            f"the file is not a CloudBoot backup (format {found!r}, expected {FORMAT!r})"
        )
    if stream.tell() != len(blob):
        # Bytes after the map are covered by no authentication: a file carrying them is
        # not the file that was written, whatever it hides there.
        raise EnvelopeError(
            f"the file has {len(blob) - stream.tell()} bytes after the backup's end: "
            "it was altered or joined to something else"
        )
    for name, kind in {**_HEADER_TYPES, "ciphertext": bytes}.items():
        if not isinstance(document.get(name), kind):
            raise EnvelopeError(
                f"the backup header is damaged: field {name!r} is missing or not {kind.__name__}"
            )
    return document


def open_envelope(blob, keys):
    """(header, plain database bytes); EnvelopeError when anything does not check out."""
    document = read_header(blob)
    header = {name: document[name] for name in _HEADER_TYPES}

    try:
        data_key = keys.unwrap(header["wrapped_key"])
    except KeySourceError as e:
        raise EnvelopeError(
            f"the backup cannot be decrypted with this appliance's key: {e}"
        ) from None
    try:
        compressed = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
            document["ciphertext"], _aad(header), header["nonce"], data_key
        )
    except nacl.exceptions.CryptoError:
        raise EnvelopeError(
            "the backup was altered: its contents or header fail authentication"
        ) from None

    database = _decompress(compressed, header["size"])
    if hashlib.sha256(database).hexdigest() != header["sha256"]:
        raise EnvelopeError("the backup's database does not match its recorded SHA-256")
    return header, database


def _decompress(compressed, size):
    # Bounded by the authenticated size, so a crafted file cannot balloon in memory.
    decompressor = zlib.decompressobj()
    try:
        database = decompressor.decompress(compressed, size + 1)
    except zlib.error as e:
        raise EnvelopeError(f"the backup's compressed database is damaged: {e}") from None
    if len(database) != size or not decompressor.eof:
        raise EnvelopeError(f"the backup's database is not the recorded {size} bytes")
    return database


def _aad(header):
    return cbor2.dumps(header, canonical=True)
