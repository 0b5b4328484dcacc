"""Envelope encryption: random data keys, wrapped by the master key.

Each purpose (backups, secrets, providers, ...) has a data key: 32 random
bytes used with XChaCha20-Poly1305, stored only wrapped by the master key in
<data_dir>/keys/keyring.json together with the master key id and version that
wrapped it. seal() and open() unwrap the data key through the master key (an
audited event), use it, and zero it again.

A sealed blob is self-describing:

    b"CBE1" | len(data key id) (1 byte) | data key id (ASCII) | nonce (24) | ciphertext+tag

The header and the caller's AAD are both authenticated, so a blob cannot be
moved to another data key or another record without failing to open.

Rotation of the master key re-wraps every data key under the new version
(rewrap_all); the data keys themselves do not change, so every blob sealed
before a rotation still opens after it. The keyring file is replaced
atomically and changes are serialised with a lock file, so other processes
keep reading during a rotation.

This module must never write a data key unwrapped to disk or to a log.
"""

import fcntl
import secrets
from contextlib import contextmanager
from pathlib import Path

import nacl.bindings as sodium
import nacl.exceptions

from keys import audit as audit_mod
from keys._files import keys_dir, read_json, write_json
from keys.errors import KeysError
from keys.hygiene import zero
from keys.master import KEY_BYTES, NONCE_BYTES, MasterKeySource, WrappedKey

MAGIC = b"CBE1"
KEYRING_NAME = "keyring.json"
KEYRING_FORMAT = "cloudboot.keyring/1"


class Keyring:
    """Data keys of one appliance, wrapped by its master key."""

    def __init__(self, data_dir, master: MasterKeySource, audit=None, actor: str = "appliance"):
        self.dir = keys_dir(data_dir)
        self.path = Path(self.dir) / KEYRING_NAME
        self.master = master
        self.audit = audit_mod.default_audit(data_dir, audit)
        self.actor = actor

    @contextmanager
    def _locked(self):
        with open(Path(self.dir) / ".keyring.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _load(self) -> dict:
        if not self.path.exists():
            return {"format": KEYRING_FORMAT, "data_keys": {}, "active": {}}
        keyring = read_json(self.path, "keyring", KEYRING_FORMAT)
        if not isinstance(keyring.get("data_keys"), dict) or not isinstance(
            keyring.get("active"), dict
        ):
            raise KeysError(f"keyring {self.path} is damaged")
        for key_id, record in keyring["data_keys"].items():
            if not _record_is_sound(record):
                raise KeysError(f"keyring {self.path} is damaged: data key {key_id!r}")
        for purpose, key_id in keyring["active"].items():
            if key_id not in keyring["data_keys"]:
                raise KeysError(
                    f"keyring {self.path} is damaged: active key {key_id!r} for {purpose!r} "
                    "is not in it"
                )
        return keyring

    def _data_key_id(self, purpose: str, actor: str) -> str:
        """The active data key for purpose, made on first use."""
        active = self._load()["active"].get(purpose)
        if active:
            return active
        with self._locked():
            keyring = self._load()
            if purpose in keyring["active"]:
                return keyring["active"][purpose]
            key_id = f"{purpose}-{secrets.token_hex(6)}"
            data_key = bytearray(secrets.token_bytes(KEY_BYTES))
            wrapped = self.master.wrap(data_key, purpose=f"new data key {key_id}", actor=actor)
            zero(data_key)
            keyring["data_keys"][key_id] = {
                "purpose": purpose,
                "created": audit_mod.now_utc(),
                "wrapped": wrapped.to_dict(),
            }
            keyring["active"][purpose] = key_id
            write_json(self.path, keyring)
            return key_id

    def _data_key(self, key_id: str, why: str, actor: str) -> tuple[bytearray, WrappedKey]:
        record = self._load()["data_keys"].get(key_id)
        if record is None:
            raise KeysError(f"data key {key_id!r} is not in the keyring at {self.path}")
        wrapped = WrappedKey.from_dict(record["wrapped"])
        return self.master.unwrap(wrapped, purpose=f"{why} {key_id}", actor=actor), wrapped

    def seal(self, purpose: str, plaintext: bytes, aad: bytes = b"", actor: str | None = None):
        """Encrypt plaintext under the purpose's data key; returns a self-describing blob."""
        _check_purpose(purpose)
        actor = actor or self.actor
        key_id = self._data_key_id(purpose, actor)
        data_key, _ = self._data_key(key_id, f"seal:{purpose}", actor)
        try:
            return seal_with(key_id, data_key, plaintext, aad)
        finally:
            zero(data_key)

    def data_key_for(self, purpose: str, why: str, actor: str | None = None):
        """(data key id, the data key, its WrappedKey) of purpose, unwrapped (audited).

        For a process that hands the key to a child of its own (the backup
        child) so the child never loads the master key; the caller zeroes it.
        """
        _check_purpose(purpose)
        actor = actor or self.actor
        key_id = self._data_key_id(purpose, actor)
        data_key, wrapped = self._data_key(key_id, f"{why} {purpose}", actor)
        return key_id, data_key, wrapped

    def open(self, blob: bytes, aad: bytes = b"", actor: str | None = None) -> bytes:
        """Decrypt a blob made by seal() with the same aad."""
        actor = actor or self.actor
        key_id, header, rest = _parse(blob)
        nonce, sealed = rest[:NONCE_BYTES], rest[NONCE_BYTES:]
        data_key, _ = self._data_key(key_id, "open", actor)
        try:
            return sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
                sealed, header + aad, nonce, bytes(data_key)
            )
        except nacl.exceptions.CryptoError:
            raise KeysError(
                f"sealed data under data key {key_id!r} was altered or its AAD differs"
            ) from None
        finally:
            zero(data_key)

    def rewrap_all(self, actor: str | None = None) -> int:
        """Wrap every data key under the current master version; returns how many changed."""
        actor = actor or self.actor
        with self._locked():
            keyring = self._load()
            current = self.master.current_version()
            changed = 0
            for key_id, record in keyring["data_keys"].items():
                if record["wrapped"]["version"] == current:
                    continue
                data_key, _ = self._data_key(key_id, "rewrap", actor)
                record["wrapped"] = self.master.wrap(
                    data_key, purpose=f"rewrap {key_id}", actor=actor
                ).to_dict()
                zero(data_key)
                changed += 1
            write_json(self.path, keyring)
        return changed

    def rotate_master(self, actor: str | None = None, **options) -> dict:
        """`keys rotate`: a new master version, then every data key re-wrapped under it."""
        actor = actor or self.actor
        self._load()  # a damaged keyring is reported before a new master version is made
        version = self.master.rotate(actor=actor, **options)
        rewrapped = self.rewrap_all(actor)
        return {"key_id": self.master.key_id, "version": version, "rewrapped": rewrapped}

    def retire(self, version: int, actor: str | None = None) -> None:
        """Retire an old master version once no data key is wrapped under it."""
        in_use = self.versions_in_use()
        if version in in_use:
            raise KeysError(
                f"master key version {version} still wraps {in_use[version]} data key(s); "
                f"run `keys rotate` (which re-wraps them) before retiring it"
            )
        self.master.retire(version, actor=actor or self.actor)

    def versions_in_use(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for record in self._load()["data_keys"].values():
            version = record["wrapped"]["version"]
            counts[version] = counts.get(version, 0) + 1
        return counts

    def status(self) -> dict:
        keyring = self._load()
        return {
            "data_keys": [
                {
                    "id": key_id,
                    "purpose": record["purpose"],
                    "created": record["created"],
                    "master_key_id": record["wrapped"]["key_id"],
                    "master_version": record["wrapped"]["version"],
                }
                for key_id, record in sorted(keyring["data_keys"].items())
            ],
        }


def seal_with(key_id: str, data_key: bytearray, plaintext: bytes, aad: bytes = b"") -> bytes:
    """A CBE1 blob under an already unwrapped data key; Keyring.open() opens it."""
    header = MAGIC + bytes([len(key_id)]) + key_id.encode()
    nonce = secrets.token_bytes(NONCE_BYTES)
    sealed = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
        bytes(plaintext), header + aad, nonce, bytes(data_key)
    )
    return header + nonce + sealed


def _record_is_sound(record) -> bool:
    """A data key record has the fields every reader of the keyring relies on."""
    if not isinstance(record, dict) or not isinstance(record.get("wrapped"), dict):
        return False
    wrapped = record["wrapped"]
    return (
        isinstance(record.get("purpose"), str)
        and isinstance(record.get("created"), str)
        and isinstance(wrapped.get("key_id"), str)
        and type(wrapped.get("version")) is int
        and isinstance(wrapped.get("blob"), str)
    )


def _check_purpose(purpose: str) -> None:
    if not purpose or len(purpose) > 40 or not all(c.isalnum() or c in "-_." for c in purpose):
        raise KeysError(f"purpose must be 1-40 letters, digits, '-', '_' or '.', got {purpose!r}")


def _parse(blob: bytes) -> tuple[str, bytes, bytes]:
    if not isinstance(blob, bytes | bytearray) or blob[:4] != MAGIC or len(blob) < 5:
        raise KeysError("not a CloudBoot sealed blob (missing CBE1 header)")
    length = blob[4]
    header = bytes(blob[: 5 + length])
    if len(blob) < 5 + length + NONCE_BYTES + 16:
        raise KeysError(f"sealed blob is truncated ({len(blob)} bytes)")
    try:
        key_id = header[5:].decode("ascii")
    except UnicodeDecodeError:
        raise KeysError("sealed blob header names no valid data key") from None
    return key_id, header, bytes(blob[5 + length :])
