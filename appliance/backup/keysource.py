"""Where backup and audit-archive data keys are wrapped: the switch to the keys work.

A backup is encrypted under a fresh random data key; the data key travels in
the backup wrapped by a key the appliance keeps (see appliance/backup/envelope.py).
`key_source(data_dir)` picks that key:

- the appliance's master key (keys/master.py, any of its sources) once
  `keys init` has written <data_dir>/keys/master.json;
- until then the DEVELOPMENT key source: a random key in
  <data_dir>/keys/dev-backup.key (0400), made on first use. It lives beside
  the database it protects, so it protects a copied backup file, not a stolen
  data directory; every process that uses it logs a warning saying so.

Under the master key the per-file data key is sealed with the keyring's
"backups" data key (keys/envelope.py), not wrapped by the master key
directly: `keys rotate` re-wraps that data key, and `keys rotate --retire N`
refuses while it is still under version N, so no rotation leaves a backup
that cannot be opened. Backups written before this ("master-key" records,
wrapped by one master key version) still open while that version lives.

Unwrapping follows the source named in the backup, so backups made with the
development key still restore after the master key is configured.

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
MASTER_CONFIG = "master.json"
KEY_BYTES = 32
NONCE_BYTES = sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES

# Key files already warned about in this process: once per file is enough.
_warned = set()


class KeySourceError(Exception):
    """The wrapping key is missing, unreadable, or is not the one that wrapped a data key."""


def key_source(data_dir):
    """The key source backups and audit archives use on this appliance."""
    return _Chooser(data_dir)


class _Chooser:
    """Wraps with the master key when configured, else the development key; unwraps
    with whichever source the wrapped record names."""

    def __init__(self, data_dir):
        self.data_dir = Path(data_dir)

    def _preferred(self):
        if (self.data_dir / "keys" / MASTER_CONFIG).exists():
            return MasterKeyWrap(self.data_dir)
        return DevKeySource(self.data_dir)

    @property
    def key_id(self):
        return self._preferred().key_id

    def wrap(self, data_key):
        return self._preferred().wrap(data_key)

    def unwrap(self, wrapped):
        source = wrapped.get("source") if isinstance(wrapped, dict) else None
        if source in (MasterKeyWrap.name, MasterKeyWrap.legacy_name):
            return MasterKeyWrap(self.data_dir).unwrap(wrapped)
        return DevKeySource(self.data_dir).unwrap(wrapped)


class MasterKeyWrap:
    """The appliance's master key, through the keyring's "backups" data key; audited by keys/."""

    name = "master-keyring"
    # Records written before the keyring was used: wrapped by one master key version.
    legacy_name = "master-key"
    purpose = "backups"
    aad = b"cloudboot-backup-wrap"

    def __init__(self, data_dir):
        from keys import KeysError
        from keys.envelope import Keyring
        from keys.master import load_master

        self._keys_error = KeysError
        try:
            self.master = load_master(data_dir)
        except KeysError as e:
            raise KeySourceError(f"the master key is not usable: {e}") from None
        self.keyring = Keyring(data_dir, self.master)

    @property
    def key_id(self):
        return self.master.key_id

    def wrap(self, data_key):
        try:
            blob = self.keyring.seal(self.purpose, bytes(data_key), self.aad, actor="appliance")
        except self._keys_error as e:
            raise KeySourceError(f"the master key could not wrap the backup key: {e}") from None
        return {"source": self.name, "key_id": self.master.key_id, "blob": blob}

    def unwrap(self, wrapped):
        try:
            if wrapped["source"] == self.legacy_name:
                return self._unwrap_legacy(wrapped["wrapped"])
            if wrapped["key_id"] != self.master.key_id:
                raise KeySourceError(
                    f"the data key was wrapped by master key {wrapped['key_id']!r}, this "
                    f"appliance's master key is {self.master.key_id!r}"
                )
            return self.keyring.open(bytes(wrapped["blob"]), self.aad, actor="appliance")
        except (KeyError, TypeError) as e:
            raise KeySourceError(f"wrapped data key record is damaged: {e!r}") from None
        except self._keys_error as e:
            raise KeySourceError(str(e)) from None

    def _unwrap_legacy(self, record):
        from keys.master import WrappedKey

        wrapped = WrappedKey.from_dict(record)
        return bytes(self.master.unwrap(wrapped, purpose="backup", actor="appliance"))


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
        if not self.path.exists():
            # Opening must not make a key: a file naming the development source on an
            # appliance that never had one is simply not ours.
            raise KeySourceError(
                f"the data key was wrapped by development key {key_id!r}; this appliance "
                "has no development key"
            )
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
