"""Where backup and audit-archive data keys are wrapped: the one switch to the keys work.

A backup is encrypted under a fresh random data key; the data key travels in
the backup wrapped by a key the appliance keeps (see appliance/backup/envelope.py).
`key_source(data_dir)` picks that key. Until the appliance's master key
(keys/master.py) is wired in, it is the DEVELOPMENT key source below: a
random key in <data_dir>/keys/dev-backup.key (0400), made on first use. It
lives beside the database it protects, so it protects a copied backup file,
not a stolen data directory; every use logs a warning saying so. Switching to
the master key is a change to key_source() alone.

This module must never log, print or write a key other than into its own file.
"""

import hashlib
import logging
import os
import secrets
from pathlib import Path

import nacl.bindings as sodium
import nacl.exceptions

log = logging.getLogger(__name__)

DEV_KEY_FILE = "dev-backup.key"
KEY_BYTES = 32
NONCE_BYTES = sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES

# Key files already warned about in this process: once per file is enough.
_warned = set()


class KeySourceError(Exception):
    """The wrapping key is missing, unreadable, or is not the one that wrapped a data key."""


def key_source(data_dir):
    """The key source backups and audit archives use on this appliance."""
    return DevKeySource(data_dir)


class DevKeySource:
    """Development key source: a key file in the data directory. Not for production."""

    name = "development-keyfile"

    def __init__(self, data_dir):
        self.path = Path(data_dir) / "keys" / DEV_KEY_FILE
        self._key = None

    @property
    def key_id(self):
        return "dev-" + hashlib.sha256(self._load()).hexdigest()[:16]

    def wrap(self, data_key):
        """The data key encrypted under this source's key, as a CBOR-able dict."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        key_id = self.key_id
        blob = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
            bytes(data_key), _aad(key_id), nonce, self._load()
        )
        return {"source": self.name, "key_id": key_id, "blob": nonce + blob}

    def unwrap(self, wrapped):
        try:
            source, key_id, blob = wrapped["source"], wrapped["key_id"], bytes(wrapped["blob"])
        except (KeyError, TypeError) as e:
            raise KeySourceError(f"wrapped data key record is damaged: {e!r}") from None
        if source != self.name or key_id != self.key_id:
            raise KeySourceError(
                f"the data key was wrapped by key {key_id!r} ({source}); this appliance's "
                f"backup key is {self.key_id!r} ({self.name})"
            )
        try:
            return sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
                blob[NONCE_BYTES:], _aad(key_id), blob[:NONCE_BYTES], self._load()
            )
        except nacl.exceptions.CryptoError:
            raise KeySourceError(f"the wrapped data key under {key_id!r} was altered") from None

    def _load(self):
        if self._key is None:
            self._key = self._read_or_make()
        if self.path not in _warned:
            _warned.add(self.path)
            log.warning(
                "backups use the development key source %s: it sits beside the database, "
                "so configure the master key before production",
                self.path,
            )
        return self._key

    def _read_or_make(self):
        try:
            return bytes.fromhex(self.path.read_text().strip())
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as e:
            raise KeySourceError(f"backup key {self.path} is unreadable or damaged: {e}") from None

        key = secrets.token_bytes(KEY_BYTES)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not write_private_once(self.path, key.hex() + "\n"):
                # Another process made it between our read and our write: use theirs.
                return bytes.fromhex(self.path.read_text().strip())
        except OSError as e:
            raise KeySourceError(f"cannot create the backup key {self.path}: {e}") from None
        return key


def write_private_once(path, text):
    """Create a 0400 file with `text`, whole or not at all; False when it already exists.

    Written under a temporary name and linked into place, so a full disk or a
    crash never leaves an empty or half-written key where a key is expected.
    """
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.link(temporary, path)
    except FileExistsError:
        return False
    finally:
        temporary.unlink(missing_ok=True)
    return True


def _aad(key_id):
    return f"cloudboot-backup-wrap|{key_id}".encode()
