"""Master key sources: the one key that wraps every data key.

A source keeps one or more versions of the master key and offers the same
four operations whichever way the key is held:

    wrap(data_key)   -> WrappedKey(key_id, version, blob) under the current version
    unwrap(wrapped)  -> the data key, with whichever version wrapped it
    rotate()         -> a new current version; older ones stay usable for reading
    retire(version)  -> forget an old version (the keyring refuses while it is in use)

and status() for `keys status` and /readyz. Sources: KeyFileMaster (here),
DualControlMaster (keys.dualcontrol) and Pkcs11Master (keys.pkcs11token).
load_master() builds the one named in <data_dir>/keys/master.json, which holds
the source's settings and never a key.

Every wrap and unwrap is reported to the audit callback. Nothing here may
write a master key into the data directory, a log line or an exception.
"""

import base64
import errno
import json
import logging
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

import nacl.bindings as sodium
import nacl.exceptions

from keys import audit as audit_mod
from keys._files import keys_dir, read_json, write_json
from keys.errors import KeysError
from keys.hygiene import zero

log = logging.getLogger(__name__)

KEY_BYTES = 32
NONCE_BYTES = sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
KEYFILE_FORMAT = "cloudboot.master-keyfile/1"
CONFIG_NAME = "master.json"


@dataclass(frozen=True)
class WrappedKey:
    """A data key encrypted under one version of a master key."""

    key_id: str
    version: int
    blob: bytes

    def to_dict(self) -> dict:
        return {
            "key_id": self.key_id,
            "version": self.version,
            "blob": base64.b64encode(self.blob).decode(),
        }

    @classmethod
    def from_dict(cls, document: dict) -> "WrappedKey":
        try:
            return cls(document["key_id"], int(document["version"]), b64(document["blob"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise KeysError(f"wrapped key record is damaged: {exc!r}") from None


def b64(text: str) -> bytes:
    return base64.b64decode(text.encode(), validate=True)


def wrap_aad(key_id: str, version: int) -> bytes:
    """Bind a wrapped blob to its key id and version, so relabelling it fails to open."""
    return f"cloudboot-master|{key_id}|{version}".encode()


def aead_seal(key: bytearray, plaintext: bytes, aad: bytes) -> bytes:
    nonce = secrets.token_bytes(NONCE_BYTES)
    sealed = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
        bytes(plaintext), aad, nonce, bytes(key)
    )
    return nonce + sealed


def aead_open(key: bytearray, blob: bytes, aad: bytes) -> bytearray:
    nonce, sealed = blob[:NONCE_BYTES], blob[NONCE_BYTES:]
    try:
        opened = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(sealed, aad, nonce, bytes(key))
    except nacl.exceptions.CryptoError:
        raise KeysError("wrapped data was altered or belongs to another key") from None
    return bytearray(opened)


class MasterKeySource:
    """Common behaviour: audit every use; subclasses hold the key versions."""

    source = "abstract"

    def __init__(self, key_id: str, audit_fn):
        self.key_id = key_id
        self.audit = audit_fn

    def wrap(self, data_key, *, purpose: str, actor: str) -> WrappedKey:
        version = self.current_version()
        blob = self._wrap(version, data_key, wrap_aad(self.key_id, version))
        self.audit(
            audit_mod.event(
                "wrap", actor=actor, key_id=self.key_id, version=version, purpose=purpose
            )
        )
        return WrappedKey(self.key_id, version, blob)

    def unwrap(self, wrapped: WrappedKey, *, purpose: str, actor: str) -> bytearray:
        if wrapped.key_id != self.key_id:
            raise KeysError(
                f"data key was wrapped by master key {wrapped.key_id!r}, "
                f"this appliance's master key is {self.key_id!r}"
            )
        aad = wrap_aad(self.key_id, wrapped.version)
        data_key = self._unwrap(wrapped.version, wrapped.blob, aad)
        self.audit(
            audit_mod.event(
                "unwrap", actor=actor, key_id=self.key_id, version=wrapped.version, purpose=purpose
            )
        )
        return data_key

    def rotate(self, *, actor: str, **options) -> int:
        version = self._rotate(**options)
        self.audit(
            audit_mod.event(
                "rotate",
                actor=actor,
                key_id=self.key_id,
                version=version,
                purpose="master key rotation",
            )
        )
        log.info("master key %s rotated to version %d", self.key_id, version)
        return version

    def retire(self, version: int, *, actor: str) -> None:
        if version == self.current_version():
            raise KeysError(f"version {version} is the current master key version; rotate first")
        if version not in self.versions():
            raise KeysError(f"master key {self.key_id!r} has no version {version}")
        self._retire(version)
        self.audit(
            audit_mod.event(
                "retire",
                actor=actor,
                key_id=self.key_id,
                version=version,
                purpose="master key retirement",
            )
        )

    def status(self) -> dict:
        sealed = self.is_sealed()
        return {
            "source": self.source,
            "key_id": self.key_id,
            "sealed": sealed,
            "current_version": None if sealed else self.current_version(),
            "versions": None if sealed else self.versions(),
        }

    def is_sealed(self) -> bool:
        return False

    def close(self) -> None:
        """Forget key material held in memory (zeroed where Python allows)."""


def check_private_file(path: Path, what: str) -> os.stat_result:
    """Refuse a secret file that anyone but its owner can read or that another user owns."""
    fd = _open_private(path, what)
    try:
        return _check_private(os.fstat(fd), path, what)
    finally:
        os.close(fd)


def read_private_file(path: Path, what: str) -> bytes:
    """The bytes of a secret file, checked and read through one open file descriptor.

    Checking by path and then opening by path again would let someone who can
    write the directory swap the file in between; here the checks apply to
    the very file that is read. A symbolic link is refused (O_NOFOLLOW), not
    followed, because whoever can plant one chooses what is read.
    """
    fd = _open_private(path, what)
    try:
        _check_private(os.fstat(fd), path, what)
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise KeysError(f"cannot read {what} {path}: {exc.strerror}") from None
    finally:
        os.close(fd)


def _open_private(path: Path, what: str) -> int:
    # O_NONBLOCK: a FIFO planted under the key's name must not hang the start;
    # it is refused below as "not a regular file".
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        return os.open(path, flags)
    except FileNotFoundError:
        raise KeysError(f"{what} not found at {path}") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise KeysError(
                f"{what} {path} is a symbolic link; name the regular file itself"
            ) from None
        raise KeysError(f"cannot open {what} {path}: {exc.strerror}") from None


def _check_private(info: os.stat_result, path: Path, what: str) -> os.stat_result:
    """The bank requirement: a regular file, one name, mode 0400/0600, owned by the service user.

    Group or other bits of any kind are refused rather than repaired, because
    the file may already have been read.
    """
    if not stat.S_ISREG(info.st_mode):
        raise KeysError(f"{what} {path} is not a regular file")
    if info.st_nlink != 1:
        # Another name for the same secret may sit anywhere on the file system, the data
        # directory included, where refuse_inside() cannot see it.
        raise KeysError(
            f"{what} {path} has {info.st_nlink} hard links; a secret file must have one name"
        )
    mode = info.st_mode & 0o777
    if mode & 0o077:
        raise KeysError(
            f"{what} {path} has mode {mode:04o}, readable beyond its owner; "
            f"it must be mode 0400 (chmod 0400 {path}) and owned by the service user"
        )
    if info.st_uid != os.geteuid():
        raise KeysError(
            f"{what} {path} is owned by uid {info.st_uid}, not the service user "
            f"(uid {os.geteuid()})"
        )
    return info


class KeyFileMaster(MasterKeySource):
    """Master key versions in a JSON file outside the data directory, mode 0400.

    For the smallest installations and the unattended lab. The file is the key
    in clear, so it must live outside <data_dir> (it would otherwise travel
    with every backup of the data directory); load refuses a path inside it.
    """

    source = "key-file"

    def __init__(self, path, audit_fn, data_dir=None):
        self.path = Path(path)
        refuse_inside(self.path, data_dir)
        self._versions: dict[int, bytearray] = {}
        self._current = 0
        key_id = self._load()
        super().__init__(key_id, audit_fn)

    @classmethod
    def create(cls, path, audit_fn, data_dir=None) -> "KeyFileMaster":
        path = Path(path)
        refuse_inside(path, data_dir)
        if path.exists():
            raise KeysError(f"key file {path} already exists; refusing to overwrite a master key")
        key_id = f"keyfile-{secrets.token_hex(4)}"
        _write_keyfile(path, key_id, 1, {1: bytearray(secrets.token_bytes(KEY_BYTES))})
        return cls(path, audit_fn, data_dir)

    def _load(self) -> str:
        document = _parse_keyfile(read_private_file(self.path, "master key file"), self.path)
        try:
            versions = {int(v): bytearray(b64(k)) for v, k in document["versions"].items()}
            current, key_id = int(document["current"]), str(document["key_id"])
        except (KeyError, TypeError, ValueError, AttributeError):
            raise KeysError(f"master key file {self.path} is damaged") from None
        if current not in versions or any(len(k) != KEY_BYTES for k in versions.values()):
            raise KeysError(f"master key file {self.path} is damaged")
        self.close()
        self._versions, self._current = versions, current
        return key_id

    def current_version(self) -> int:
        return self._current

    def versions(self) -> list[int]:
        return sorted(self._versions)

    def _key(self, version: int) -> bytearray:
        if version not in self._versions:
            # Another process (the CLI) may have rotated since this one loaded.
            self._load()
        if version not in self._versions:
            raise KeysError(f"master key version {version} is retired or unknown")
        return self._versions[version]

    def _wrap(self, version, data_key, aad) -> bytes:
        return aead_seal(self._key(version), data_key, aad)

    def _unwrap(self, version, blob, aad) -> bytearray:
        return aead_open(self._key(version), blob, aad)

    def _rotate(self) -> int:
        self._load()
        version = max(self._versions) + 1
        self._versions[version] = bytearray(secrets.token_bytes(KEY_BYTES))
        self._current = version
        _write_keyfile(self.path, self.key_id, version, self._versions)
        return version

    def _retire(self, version) -> None:
        zero(self._versions.pop(version))
        _write_keyfile(self.path, self.key_id, self._current, self._versions)

    def close(self) -> None:
        for key in self._versions.values():
            zero(key)
        self._versions = {}


def _parse_keyfile(content: bytes, path: Path) -> dict:
    try:
        document = json.loads(content)
    except ValueError as exc:
        raise KeysError(f"master key file at {path} cannot be read: {exc}") from None
    if not isinstance(document, dict) or document.get("format") != KEYFILE_FORMAT:
        raise KeysError(f"{path} is not a CloudBoot master key file ({KEYFILE_FORMAT})")
    return document


def _write_keyfile(path: Path, key_id: str, current: int, versions: dict) -> None:
    document = {
        "format": KEYFILE_FORMAT,
        "key_id": key_id,
        "current": current,
        "versions": {str(v): base64.b64encode(bytes(k)).decode() for v, k in versions.items()},
    }
    write_json(path, document, mode=0o400)


def refuse_inside(path: Path, data_dir) -> None:
    if data_dir is None:
        return
    resolved, root = Path(path).resolve(), Path(data_dir).resolve()
    if resolved == root or root in resolved.parents:
        raise KeysError(
            f"secret file {path} is inside the data directory {data_dir}; keep it elsewhere "
            f"(e.g. /etc/cloudboot/) so backups of the data directory do not carry it"
        )


def refuse_if_initialised(data_dir) -> None:
    path = keys_dir(data_dir) / CONFIG_NAME
    if path.exists():
        raise KeysError(f"keys are already initialised ({path} exists)")


def save_config(data_dir, config: dict) -> None:
    refuse_if_initialised(data_dir)
    write_json(keys_dir(data_dir) / CONFIG_NAME, config)


# The settings each source needs in master.json, all text.
CONFIG_FIELDS = {
    "key-file": ("key_file",),
    "dual-control": (),
    "pkcs11": ("library", "token_label", "pin_file"),
}


def load_config(data_dir) -> dict:
    """master.json, checked: a known source with the settings it needs, or a KeysError."""
    path = keys_dir(data_dir) / CONFIG_NAME
    config = read_json(path, "keys configuration (run `keys init`)")
    source = config.get("source") if isinstance(config, dict) else None
    if source not in CONFIG_FIELDS:
        raise KeysError(f"keys configuration {path} is damaged: unknown source {source!r}")
    for name in CONFIG_FIELDS[source]:
        if not isinstance(config.get(name), str) or not config[name]:
            raise KeysError(f"keys configuration {path} is damaged: no {name} for {source}")
    return config


def load_master(data_dir, audit=None) -> MasterKeySource:
    """The master key source named in <data_dir>/keys/master.json.

    A dual-control source comes back sealed; a PKCS#11 source opens its token
    session now, so a wrong PIN or a missing token is reported at start.
    """
    audit_fn = audit_mod.default_audit(data_dir, audit)
    config = load_config(data_dir)
    source = config.get("source")
    if source == KeyFileMaster.source:
        return KeyFileMaster(config["key_file"], audit_fn, data_dir)
    if source == "dual-control":
        from keys.dualcontrol import DualControlMaster

        return DualControlMaster(data_dir, audit_fn)
    if source == "pkcs11":
        from keys.pkcs11token import Pkcs11Master

        return Pkcs11Master.from_config(config, audit_fn, data_dir)
    raise KeysError(f"unknown master key source {source!r} in {CONFIG_NAME}")
