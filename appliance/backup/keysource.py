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

A process that already holds the master key says so with hold() / holding():
`cloudboot serve` (its key unsealed by the officers through the API, its key
events going to the audit log) and the backup commands (unsealed on the
console). Then key_source() uses that master key instead of loading one, which
under dual control would come up sealed. The backup child process never loads
the master key: its parent unwraps the keyring's "backups" data key
(hand_over()) and sends it down a pipe; the child seals with it under
handed() and reports its key use back as events for the parent to record.

This module must never log, print or write a key other than into its own file.
"""

import contextvars
import hashlib
import logging
import os
import secrets
from contextlib import contextmanager
from dataclasses import dataclass, field
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


@dataclass
class HeldMaster:
    """A master key source this process holds (unsealed), the audit callback its
    key events go to, and the actor named in them."""

    master: object
    audit: object
    actor: str = "appliance"


@dataclass
class HandedKey:
    """The keyring's "backups" data key, unwrapped by a parent and handed to a child."""

    master_key_id: str
    master_version: int
    data_key_id: str
    data_key: bytearray
    events: list = field(default_factory=list)

    def forget(self):
        from keys.hygiene import zero

        zero(self.data_key)


# Context, not a module global: serve's tasks and worker threads inherit it
# (trio copies the context into both), and a test's process keeps none after.
_held = contextvars.ContextVar("cloudboot_held_master", default=None)
_handed = contextvars.ContextVar("cloudboot_handed_backup_key", default=None)


def hold(master, audit, actor="appliance"):
    """From here on in this context, backups and archives use `master` (already loaded)."""
    _held.set(HeldMaster(master, audit, actor))


@contextmanager
def holding(master, audit, actor="appliance"):
    token = _held.set(HeldMaster(master, audit, actor))
    try:
        yield
    finally:
        _held.reset(token)


def held():
    """The HeldMaster of this context, or None."""
    return _held.get()


@contextmanager
def handed(key):
    """Inside, key_source() seals backups with the handed data key (the backup child)."""
    token = _handed.set(key)
    try:
        yield
    finally:
        _handed.reset(token)


def hand_over(data_dir, holding_master):
    """Unwrap the "backups" data key for a child process (audited as key.unwrap).

    Raises KeySourceError, with the master key's own sentence, when the key is
    sealed or the keyring cannot be read.
    """
    from keys import KeysError
    from keys.envelope import Keyring

    master = holding_master.master
    keyring = Keyring(data_dir, master, audit=holding_master.audit, actor=holding_master.actor)
    try:
        key_id, data_key, wrapped = keyring.data_key_for(
            MasterKeyWrap.purpose, "hand to the backup child:"
        )
    except KeysError as e:
        raise KeySourceError(f"the backups data key could not be unwrapped: {e}") from None
    return HandedKey(master.key_id, wrapped.version, key_id, data_key)


def key_source(data_dir):
    """The key source backups and audit archives use on this appliance."""
    handed_key = _handed.get()
    if handed_key is not None:
        return HandedKeySource(handed_key)
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
        holder = _held.get()
        if holder is not None:
            self.master, self.actor = holder.master, holder.actor
            self.keyring = Keyring(data_dir, self.master, holder.audit, actor=self.actor)
            return
        try:
            self.master = load_master(data_dir)
        except KeysError as e:
            raise KeySourceError(f"the master key is not usable: {e}") from None
        self.actor = "appliance"
        self.keyring = Keyring(data_dir, self.master)

    @property
    def key_id(self):
        return self.master.key_id

    def wrap(self, data_key):
        try:
            blob = self.keyring.seal(self.purpose, bytes(data_key), self.aad, actor=self.actor)
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
            return self.keyring.open(bytes(wrapped["blob"]), self.aad, actor=self.actor)
        except (KeyError, TypeError) as e:
            raise KeySourceError(f"wrapped data key record is damaged: {e!r}") from None
        except self._keys_error as e:
            raise KeySourceError(str(e)) from None

    def _unwrap_legacy(self, record):
        from keys.master import WrappedKey

        wrapped = WrappedKey.from_dict(record)
        return bytes(self.master.unwrap(wrapped, purpose="backup", actor=self.actor))


class HandedKeySource:
    """Seals like MasterKeyWrap, with a data key the parent unwrapped: the backup child."""

    actor = "appliance:backup-child"

    def __init__(self, handed_key):
        self.handed = handed_key

    @property
    def key_id(self):
        return self.handed.master_key_id

    def wrap(self, data_key):
        from keys import audit as key_events
        from keys.envelope import seal_with

        handed_key = self.handed
        blob = seal_with(
            handed_key.data_key_id, handed_key.data_key, bytes(data_key), MasterKeyWrap.aad
        )
        handed_key.events.append(
            key_events.event(
                "seal",
                actor=self.actor,
                key_id=handed_key.master_key_id,
                version=handed_key.master_version,
                purpose=f"seal:backups {handed_key.data_key_id} (the backup file's own key)",
            )
        )
        return {"source": MasterKeyWrap.name, "key_id": handed_key.master_key_id, "blob": blob}

    def unwrap(self, wrapped):
        raise KeySourceError("the backup child only writes backups; it opens none")


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
