"""Vendor signatures (Ed25519) over provider packages, and the trusted vendor keys.

A vendor signs records: a package signature names the SHA-256 of the package
bytes and of its manifest; watermarks and licences (keys.watermark) are signed
the same way. The signed message is a domain tag naming the kind of record,
then the record without its signature as canonical JSON (sorted keys, no
spaces, UTF-8), so a signature over one kind can never pass as another.

The appliance trusts the vendor public keys in <data_dir>/keys/vendors/, one
JSON file per key, added and revoked by an administrator (both audited). A
revoked key stays on file, marked revoked, so the refusal names it.

Checks, in the order a tampered package meets them: no signature (unsigned),
key not trusted (unknown_vendor), key revoked (revoked_key), key past its
not_after (expired_key), signature does not verify (bad_signature), package or
manifest bytes differ from the signed digests (digest_mismatch).

This module never sees a master key; a vendor secret key file is written
mode 0400 and its seed never logged.
"""

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import nacl.exceptions
import nacl.signing

from keys import audit as audit_mod
from keys._files import keys_dir, read_json, write_json
from keys.errors import KeysError, PackageRejected
from keys.master import check_private_file

SIGNATURE_FORMAT = "cloudboot.signature/1"
SECRET_FORMAT = "cloudboot.vendor-secret/1"
PUBLIC_FORMAT = "cloudboot.vendor-public/1"
KEY_ID = re.compile(r"ed25519-[0-9a-f]{32}")


def canonical(document) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def parse_time(text: str, what: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise KeysError(f"{what} must be an ISO 8601 time, got {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def current_time(now: datetime | None) -> datetime:
    return now or datetime.now(UTC)


@dataclass
class VendorKey:
    """A vendor's signing key, as loaded from its secret key file."""

    vendor: str
    key_id: str
    signing_key: nacl.signing.SigningKey
    not_after: str

    def public_record(self) -> dict:
        return {
            "format": PUBLIC_FORMAT,
            "vendor": self.vendor,
            "key_id": self.key_id,
            "public_key": base64.b64encode(bytes(self.signing_key.verify_key)).decode(),
            "not_after": self.not_after,
        }


def key_id_for(verify_key: bytes) -> str:
    return "ed25519-" + hashlib.sha256(verify_key).hexdigest()[:32]


def keygen(vendor: str, not_after: str) -> VendorKey:
    """A new vendor signing key, valid until not_after (ISO 8601)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}", vendor):
        raise KeysError(f"vendor name must be 1-64 letters, digits, ' ._-', got {vendor!r}")
    parse_time(not_after, "not_after")
    signing_key = nacl.signing.SigningKey.generate()
    return VendorKey(vendor, key_id_for(bytes(signing_key.verify_key)), signing_key, not_after)


def save_vendor_key(key: VendorKey, secret_path: Path, public_path: Path) -> None:
    secret = {
        "format": SECRET_FORMAT,
        "vendor": key.vendor,
        "key_id": key.key_id,
        "seed": base64.b64encode(bytes(key.signing_key)).decode(),
        "not_after": key.not_after,
    }
    if Path(secret_path).exists():
        raise KeysError(f"{secret_path} exists; refusing to overwrite a vendor key")
    write_json(Path(secret_path), secret, mode=0o400)
    write_json(Path(public_path), key.public_record(), mode=0o644)


def load_vendor_key(secret_path) -> VendorKey:
    check_private_file(Path(secret_path), "vendor secret key file")
    document = read_json(Path(secret_path), "vendor secret key file", SECRET_FORMAT)
    try:
        signing_key = nacl.signing.SigningKey(base64.b64decode(document["seed"], validate=True))
        return VendorKey(
            document["vendor"], document["key_id"], signing_key, document["not_after"]
        )
    except (KeyError, TypeError, ValueError):
        raise KeysError(f"vendor secret key file {secret_path} is damaged") from None


def sign_record(kind: str, record: dict, key: VendorKey) -> dict:
    """Add vendor, key_id and an Ed25519 signature over `kind` + canonical(record)."""
    body = {**record, "vendor": key.vendor, "key_id": key.key_id}
    body.pop("signature", None)
    signature = key.signing_key.sign(kind.encode() + b"\n" + canonical(body)).signature
    return {**body, "signature": base64.b64encode(signature).decode()}


def normalise_digest(digest: str) -> str:
    """ "sha256:<hex>" for a digest given with or without the prefix (providers use bare hex)."""
    if not isinstance(digest, str):
        raise KeysError(f"package digest must be text, got {digest!r}")
    hex_part = digest.removeprefix("sha256:").lower()
    if not re.fullmatch(r"[0-9a-f]{64}", hex_part):
        raise KeysError(f"package digest must be 64 hex digits, got {digest!r}")
    return "sha256:" + hex_part


def encode_block(record: dict) -> bytes:
    """A signed record as the bytes of a package's SIGN or WMRK block."""
    return canonical(record)


def decode_block(block, what: str) -> dict | None:
    """Parse a SIGN or WMRK block back into its record; None for an absent block."""
    if block is None:
        return None
    try:
        record = json.loads(bytes(block).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise PackageRejected("bad_signature", f"the package's {what} block is not JSON") from None
    if not isinstance(record, dict):
        raise PackageRejected("bad_signature", f"the package's {what} block is not a record")
    return record


def sign_package(package_bytes: bytes, manifest: dict, vendor_key: VendorKey, signed_at=None):
    """The signature record for a package: digests of its bytes and manifest, signed."""
    return sign_digest(sha256(package_bytes), manifest, vendor_key, signed_at)


def sign_digest(package_sha256: str, manifest: dict, vendor_key: VendorKey, signed_at=None):
    """As sign_package, for a caller that has the digest of the signed region already."""
    record = {
        "format": SIGNATURE_FORMAT,
        "package_sha256": normalise_digest(package_sha256),
        "manifest_sha256": sha256(canonical(manifest)),
        "signed_at": signed_at or audit_mod.now_utc(),
    }
    return sign_record(SIGNATURE_FORMAT, record, vendor_key)


class TrustStore:
    """Trusted vendor public keys in <data_dir>/keys/vendors/."""

    def __init__(self, data_dir, audit=None):
        self.dir = Path(keys_dir(data_dir)) / "vendors"
        self.dir.mkdir(mode=0o700, exist_ok=True)
        self.audit = audit_mod.default_audit(data_dir, audit)

    def _path(self, key_id: str) -> Path:
        if not isinstance(key_id, str) or not KEY_ID.fullmatch(key_id):
            raise KeysError(f"vendor key id must look like ed25519-<32 hex>, got {key_id!r}")
        return self.dir / f"{key_id}.json"

    def add(self, public_record: dict, actor: str) -> dict:
        entry = _checked_public(public_record)
        path = self._path(entry["key_id"])
        if path.exists() and read_json(path, "vendor key").get("revoked_at"):
            raise KeysError(
                f"vendor key {entry['key_id']} was revoked; it cannot be trusted again"
            )
        entry.update(added_at=audit_mod.now_utc(), added_by=actor, revoked_at=None)
        write_json(path, entry)
        self.audit(
            audit_mod.event(
                "vendor-trust-add",
                actor=actor,
                key_id=entry["key_id"],
                version=None,
                purpose=f"trust vendor {entry['vendor']}",
            )
        )
        return entry

    def revoke(self, key_id: str, actor: str, reason: str = "") -> dict:
        path = self._path(key_id)
        if not path.exists():
            raise KeysError(f"vendor key {key_id} is not in the trust store")
        entry = read_json(path, "vendor key")
        entry.update(revoked_at=audit_mod.now_utc(), revoked_by=actor, revoke_reason=reason)
        write_json(path, entry)
        self.audit(
            audit_mod.event(
                "vendor-trust-revoke",
                actor=actor,
                key_id=key_id,
                version=None,
                purpose=f"revoke vendor {entry['vendor']}",
                reason=reason,
            )
        )
        return entry

    def list(self) -> list[dict]:
        return [read_json(path, "vendor key") for path in sorted(self.dir.glob("*.json"))]

    def get(self, key_id) -> dict | None:
        try:
            path = self._path(key_id)
        except KeysError:
            return None
        return read_json(path, "vendor key") if path.exists() else None

    def verify_record(self, kind: str, record, now: datetime | None = None) -> dict:
        """Check a signed record; returns the trusted vendor entry or raises PackageRejected."""
        if not isinstance(record, dict) or not record.get("signature"):
            raise PackageRejected("unsigned", f"no vendor signature on this {kind} record")
        entry = self.get(record.get("key_id"))
        if entry is None:
            raise PackageRejected(
                "unknown_vendor",
                f"signed by key {record.get('key_id')!r} of vendor {record.get('vendor')!r}, "
                f"which is not in the trust store",
            )
        _check_entry(entry, record, now)
        _check_signature(kind, record, entry)
        return entry

    def verify_package(self, package_bytes, manifest, record, now=None) -> dict:
        """Check a package's signature record against its bytes and manifest."""
        return self.verify_digest(sha256(package_bytes), manifest, record, now)

    def verify_digest(self, package_sha256, manifest, record, now=None) -> dict:
        """As verify_package, given the digest of the signed region; returns the vendor entry."""
        found = normalise_digest(package_sha256)
        entry = self.verify_record(SIGNATURE_FORMAT, record, now)
        if record.get("format") != SIGNATURE_FORMAT:
            raise PackageRejected(
                "bad_signature", f"not a package signature: {record.get('format')!r}"
            )
        if record.get("package_sha256") != found:
            raise PackageRejected(
                "digest_mismatch",
                f"package bytes changed since {entry['vendor']} signed them "
                f"(signed {record.get('package_sha256')}, found {found})",
            )
        if record.get("manifest_sha256") != sha256(canonical(manifest)):
            raise PackageRejected("digest_mismatch", "manifest changed since the vendor signed it")
        _check_manifest_vendor(manifest, entry)
        return entry


def _check_manifest_vendor(manifest, entry: dict) -> None:
    """A trusted key signs for its own vendor only: it cannot ship a package in another
    vendor's name (the operator trusted "Acme", not whatever Acme's manifests claim)."""
    claimed = manifest.get("vendor") if isinstance(manifest, dict) else None
    if claimed is not None and claimed != entry["vendor"]:
        raise PackageRejected(
            "bad_signature",
            f"the manifest names vendor {claimed!r} but the package is signed by key "
            f"{entry['key_id']} of {entry['vendor']!r}",
        )


def _checked_public(record) -> dict:
    if not isinstance(record, dict) or record.get("format") != PUBLIC_FORMAT:
        raise KeysError("not a CloudBoot vendor public key record")
    try:
        verify_key = base64.b64decode(record["public_key"], validate=True)
        nacl.signing.VerifyKey(verify_key)
    except (KeyError, ValueError, TypeError, nacl.exceptions.CryptoError):
        raise KeysError("vendor public key record holds no valid Ed25519 key") from None
    if key_id_for(verify_key) != record.get("key_id"):
        raise KeysError(f"vendor key id {record.get('key_id')!r} does not match its public key")
    parse_time(record.get("not_after"), "not_after")
    keep = ("format", "vendor", "key_id", "public_key", "not_after")
    return {field: record[field] for field in keep}


def _check_entry(entry: dict, record: dict, now) -> None:
    if entry.get("revoked_at"):
        raise PackageRejected(
            "revoked_key",
            f"vendor key {entry['key_id']} of {entry['vendor']} "
            f"was revoked at {entry['revoked_at']}",
        )
    if entry["vendor"] != record.get("vendor"):
        raise PackageRejected(
            "bad_signature",
            f"record claims vendor {record.get('vendor')!r} but key {entry['key_id']} "
            f"belongs to {entry['vendor']!r}",
        )
    if current_time(now) > parse_time(entry["not_after"], "not_after"):
        raise PackageRejected(
            "expired_key",
            f"vendor key {entry['key_id']} of {entry['vendor']} expired at {entry['not_after']}",
        )


def _check_signature(kind: str, record: dict, entry: dict) -> None:
    body = {field: value for field, value in record.items() if field != "signature"}
    verify_key = nacl.signing.VerifyKey(base64.b64decode(entry["public_key"]))
    try:
        signature = base64.b64decode(record["signature"], validate=True)
        verify_key.verify(kind.encode() + b"\n" + canonical(body), signature)
    except (ValueError, TypeError, nacl.exceptions.BadSignatureError):
        raise PackageRejected(
            "bad_signature", f"the {kind} signature does not verify with {entry['vendor']}'s key"
        ) from None
