"""Dual control: the master key split among officers, M of N needed to unseal.

The key-encryption key (KEK) of each master key version is split with Shamir
secret sharing (keys.shamir) into one share per officer. Each officer's share
is sealed to a Curve25519 key pair derived from that officer's passphrase with
Argon2id: the state file keeps only the officer's public key and salt, so
re-issuing shares at rotation needs no passphrase, while opening a share needs
the passphrase typed by its officer. (The box is nacl SealedBox:
X25519 + XSalsa20-Poly1305, the cipher of SecretBox with a public-key front.)

After a restart the process is sealed: it holds no key. Officers call
unseal(name, passphrase) one after another; when M shares are in, the KEK is
rebuilt, checked against a keyed BLAKE2b value in the state file, and held in
process memory only. Older versions are reached through links: every live
version's key encrypted under every other live version's key, so a process
unsealed before a rotation follows the link to the new version without the
officers, and retiring a version deletes its links.

Nothing here may write a KEK, a share or a passphrase anywhere but process
memory; the state file <data_dir>/keys/dual-control.json holds sealed shares,
public keys, salts, links and check values only.
"""

import base64
import hmac
import logging
import secrets
from pathlib import Path

import nacl.encoding
import nacl.exceptions
import nacl.hash
import nacl.pwhash
from nacl.public import PrivateKey, PublicKey, SealedBox

from keys import audit as audit_mod
from keys import shamir
from keys._files import keys_dir, read_json, write_json
from keys.errors import KeysError, SealedError
from keys.hygiene import zero
from keys.master import KEY_BYTES, MasterKeySource, aead_open, aead_seal, b64

log = logging.getLogger(__name__)

STATE_NAME = "dual-control.json"
STATE_FORMAT = "cloudboot.dual-control/1"
MIN_PASSPHRASE = 12
# Argon2id cost per officer passphrase: libsodium's "moderate" (256 MiB, 3
# passes) takes about a second here, paid once per officer per unseal.
DEFAULT_LIMITS = (nacl.pwhash.argon2id.OPSLIMIT_MODERATE, nacl.pwhash.argon2id.MEMLIMIT_MODERATE)


def _enc(data: bytes) -> str:
    return base64.b64encode(bytes(data)).decode()


def _check_value(kek: bytearray) -> str:
    digest = nacl.hash.blake2b(
        b"cloudboot-kek-check", key=bytes(kek), encoder=nacl.encoding.RawEncoder
    )
    return _enc(digest)


def _link_aad(key_id: str, source: int, target: int) -> bytes:
    return f"cloudboot-kek-link|{key_id}|{source}->{target}".encode()


def _officer_keypair(passphrase: str, salt: bytes, ops: int, mem: int) -> PrivateKey:
    seed = nacl.pwhash.argon2id.kdf(
        KEY_BYTES, passphrase.encode(), salt, opslimit=ops, memlimit=mem
    )
    return PrivateKey(seed)


def enrol_officer(name: str, passphrase: str, limits=DEFAULT_LIMITS) -> dict:
    """An officer record: name, salt, Argon2id cost and the derived public key."""
    if len(passphrase) < MIN_PASSPHRASE:
        raise KeysError(
            f"passphrase for officer {name!r} has {len(passphrase)} characters; "
            f"at least {MIN_PASSPHRASE} are required"
        )
    salt = secrets.token_bytes(nacl.pwhash.argon2id.SALTBYTES)
    ops, mem = limits
    private = _officer_keypair(passphrase, salt, ops, mem)
    return {
        "name": name,
        "salt": _enc(salt),
        "opslimit": ops,
        "memlimit": mem,
        "public_key": _enc(bytes(private.public_key)),
    }


class DualControlMaster(MasterKeySource):
    """Master key held by M of N officers; sealed until they unseal it."""

    source = "dual-control"

    def __init__(self, data_dir, audit_fn):
        self.path = Path(keys_dir(data_dir)) / STATE_NAME
        state = self._state()
        super().__init__(state["key_id"], audit_fn)
        self._versions: dict[int, bytearray] = {}
        self._pending: dict[str, tuple[int, bytearray]] = {}
        self._pending_version = None

    @classmethod
    def create(cls, data_dir, officers: dict, threshold: int, audit_fn, limits=DEFAULT_LIMITS):
        """Make version 1 and issue its shares; the new instance comes back unsealed."""
        path = Path(keys_dir(data_dir)) / STATE_NAME
        if path.exists():
            raise KeysError(f"dual-control state already exists at {path}")
        records = _enrol_all(officers, threshold, limits)
        kek = bytearray(secrets.token_bytes(KEY_BYTES))
        state = {
            "format": STATE_FORMAT,
            "key_id": f"dual-{secrets.token_hex(4)}",
            "current": 1,
            "retired": [],
            "links": [],
        }
        _issue_shares(state, records, threshold, kek)
        write_json(path, state)
        master = cls(data_dir, audit_fn)
        master._versions = {1: kek}
        return master

    def _state(self) -> dict:
        state = read_json(self.path, "dual-control state", STATE_FORMAT)
        fields = ("key_id", "current", "retired", "links", "threshold", "officers", "check")
        if any(field not in state for field in fields):
            raise KeysError(f"dual-control state {self.path} is damaged")
        return state

    def is_sealed(self) -> bool:
        return not self._versions

    def status(self) -> dict:
        status = super().status()
        state = self._state()
        status.update(
            threshold=state["threshold"],
            officers=[officer["name"] for officer in state["officers"]],
            shares_entered=sorted(self._pending),
        )
        return status

    def unseal(self, officer: str, passphrase: str) -> dict:
        """Take one officer's share; rebuild the KEK when enough are in.

        A wrong passphrase is refused at once (the sealed box does not open).
        The M-th share is combined with the others and the result compared
        with the state file's check value before anything is unsealed.
        """
        state = self._state()
        record = _find_officer(state, officer)
        try:
            share = _open_share(record, passphrase)
        except KeysError:
            # A security review asks for failed attempts as much as for successes.
            self.audit(
                audit_mod.event(
                    "unseal-refused",
                    actor=officer,
                    key_id=self.key_id,
                    version=state["current"],
                    purpose="unseal: wrong passphrase",
                )
            )
            raise
        if self._pending_version != state["current"]:
            self._forget_pending()
            self._pending_version = state["current"]
        self._pending[officer] = share
        self.audit(
            audit_mod.event(
                "unseal-share",
                actor=officer,
                key_id=self.key_id,
                version=state["current"],
                purpose="unseal",
            )
        )

        if len(self._pending) >= state["threshold"] and self.is_sealed():
            self._combine(state)
        return self.status()

    def _combine(self, state: dict) -> None:
        kek = shamir.combine(list(self._pending.values()))
        self._forget_pending()
        if not hmac.compare_digest(_check_value(kek), state["check"]):
            zero(kek)
            raise KeysError("the shares entered do not rebuild the master key; unseal again")
        self._versions = {state["current"]: kek}
        self._follow_links(state)
        log.info("master key %s unsealed (version %d)", self.key_id, state["current"])

    def seal(self) -> None:
        """Forget every key and share held in memory: the process is sealed again."""
        self._forget_pending()
        self.close()

    def _forget_pending(self) -> None:
        for _, share in self._pending.values():
            zero(share)
        self._pending = {}

    def close(self) -> None:
        for key in self._versions.values():
            zero(key)
        self._versions = {}

    def _require_unsealed(self) -> None:
        if self.is_sealed():
            state = self._state()
            raise SealedError(
                f"master key {self.key_id} is sealed: {len(self._pending)} of "
                f"{state['threshold']} officers have entered their passphrase"
            )

    def _follow_links(self, state: dict) -> None:
        """Open every link from a version this process holds to one it does not."""
        live = set(range(1, state["current"] + 1)) - set(state["retired"])
        for version in list(self._versions):
            if version not in live:
                zero(self._versions.pop(version))
        progress = True
        while progress:
            progress = False
            for link in state["links"]:
                source, target = link["from"], link["to"]
                if source in self._versions and target not in self._versions:
                    aad = _link_aad(self.key_id, source, target)
                    self._versions[target] = aead_open(
                        self._versions[source], b64(link["blob"]), aad
                    )
                    progress = True

    def current_version(self) -> int:
        self._require_unsealed()
        state = self._state()
        if state["current"] not in self._versions:
            self._follow_links(state)
        return state["current"]

    def versions(self) -> list[int]:
        self._require_unsealed()
        self._follow_links(self._state())
        return sorted(self._versions)

    def _key(self, version: int) -> bytearray:
        self._require_unsealed()
        if version not in self._versions:
            self._follow_links(self._state())
        if version not in self._versions:
            raise KeysError(f"master key version {version} is retired or unknown")
        return self._versions[version]

    def _wrap(self, version, data_key, aad) -> bytes:
        return aead_seal(self._key(version), data_key, aad)

    def _unwrap(self, version, blob, aad) -> bytearray:
        return aead_open(self._key(version), blob, aad)

    def _rotate(
        self, officers: dict | None = None, threshold: int | None = None, limits=DEFAULT_LIMITS
    ) -> int:
        """New KEK version and new shares; with `officers`, a new set of officers too.

        Every share of the old version stays able to rebuild only the old
        version, which is retired separately once nothing uses it.
        """
        self._require_unsealed()
        state = self._state()
        self._follow_links(state)
        threshold = threshold or state["threshold"]
        records = _enrol_all(officers, threshold, limits) if officers else _public_records(state)
        version = state["current"] + 1
        kek = bytearray(secrets.token_bytes(KEY_BYTES))
        for old, old_key in self._versions.items():
            state["links"].append(_link(self.key_id, old, version, old_key, kek))
            state["links"].append(_link(self.key_id, version, old, kek, old_key))
        state["current"] = version
        _issue_shares(state, records, threshold, kek)
        write_json(self.path, state)
        self._versions[version] = kek
        return version

    def _retire(self, version) -> None:
        state = self._state()
        state["retired"] = sorted(set(state["retired"]) | {version})
        state["links"] = [
            link for link in state["links"] if version not in (link["from"], link["to"])
        ]
        write_json(self.path, state)
        self._follow_links(state)


def _link(key_id: str, source: int, target: int, source_key, target_key) -> dict:
    blob = aead_seal(source_key, target_key, _link_aad(key_id, source, target))
    return {"from": source, "to": target, "blob": _enc(blob)}


def _enrol_all(officers: dict, threshold: int, limits) -> list[dict]:
    if len(officers) < 2:
        raise KeysError(f"dual control needs at least 2 officers, {len(officers)} given")
    if not 2 <= threshold <= len(officers):
        raise KeysError(
            f"threshold must be between 2 and the number of officers ({len(officers)}), "
            f"got {threshold}"
        )
    return [enrol_officer(name, phrase, limits) for name, phrase in officers.items()]


def _public_records(state: dict) -> list[dict]:
    keep = ("name", "salt", "opslimit", "memlimit", "public_key")
    return [{field: officer[field] for field in keep} for officer in state["officers"]]


def _issue_shares(state: dict, records: list[dict], threshold: int, kek: bytearray) -> None:
    """Split kek among the officers and seal each share to its officer's public key."""
    shares = shamir.split(bytes(kek), threshold, len(records))
    officers = []
    for record, (x, share) in zip(records, shares, strict=True):
        box = SealedBox(PublicKey(b64(record["public_key"])))
        officers.append({**record, "share": _enc(box.encrypt(bytes([x]) + bytes(share)))})
        zero(share)
    state.update(threshold=threshold, officers=officers, check=_check_value(kek))


def _find_officer(state: dict, name: str) -> dict:
    for record in state["officers"]:
        if record["name"] == name:
            return record
    names = ", ".join(officer["name"] for officer in state["officers"])
    raise KeysError(f"{name!r} is not an officer of this appliance (officers: {names})")


def _open_share(record: dict, passphrase: str) -> tuple[int, bytearray]:
    private = _officer_keypair(
        passphrase, b64(record["salt"]), record["opslimit"], record["memlimit"]
    )
    try:
        opened = bytearray(SealedBox(private).decrypt(b64(record["share"])))
    except nacl.exceptions.CryptoError:
        raise KeysError(f"wrong passphrase for officer {record['name']!r}") from None
    x = opened[0]
    share = opened[1:]
    zero(opened)
    return x, share
