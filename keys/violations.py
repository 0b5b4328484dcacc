"""Active licence violations: packages stamped for another licensee or appliance.

A violation is recorded the first time such a package is seen (at import or
before a run) and counted each time after. It stays active until the package
is removed (package_removed) or a valid vendor licence covering it is imported
(keys.watermark.import_licence), and is then kept as resolved, with who and
why, so the history survives. list_active() is what the API returns and the
web page shows as a banner that cannot be dismissed.

State: <data_dir>/keys/violations.json, replaced atomically under a lock.
This module never decides what a violation is; keys.watermark does.
"""

import fcntl
import secrets
from contextlib import contextmanager
from pathlib import Path

from keys import audit as audit_mod
from keys._files import keys_dir, read_json, write_json

FILE_NAME = "violations.json"


def _path(data_dir) -> Path:
    return Path(keys_dir(data_dir)) / FILE_NAME


@contextmanager
def _locked(data_dir):
    with open(Path(keys_dir(data_dir)) / ".violations.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _load(data_dir) -> list[dict]:
    path = _path(data_dir)
    return read_json(path, "violations") if path.exists() else []


def record(data_dir, violation: dict, audit=None) -> dict:
    """Record (or count again) a violation; returns the stored record.

    `violation` names provider, package_sha256, downloader_id, stamped_licensee,
    stamped_appliance_ids, licensee, appliance_id, vendor, key_id and reason.
    """
    now = audit_mod.now_utc()
    with _locked(data_dir):
        records = _load(data_dir)
        stored = _find_active(records, violation)
        if stored is None:
            stored = {
                **violation,
                "id": f"violation-{secrets.token_hex(6)}",
                "status": "active",
                "first_seen": now,
                "count": 0,
            }
            records.append(stored)
        stored.update(last_seen=now, count=stored["count"] + 1)
        write_json(_path(data_dir), records)
    audit_fn = audit_mod.default_audit(data_dir, audit)
    audit_fn(
        audit_mod.event(
            "watermark-violation",
            actor="appliance",
            key_id=violation.get("key_id"),
            version=None,
            purpose=f"provider {violation['provider']} stamped for another licensee or appliance",
            provider=violation["provider"],
            downloader_id=violation.get("downloader_id"),
            violation_id=stored["id"],
        )
    )
    return stored


def _find_active(records, violation):
    for stored in records:
        same = all(
            stored.get(field) == violation.get(field)
            for field in ("provider", "package_sha256", "appliance_id", "licensee")
        )
        if same and stored["status"] == "active":
            return stored
    return None


def list_active(data_dir) -> list[dict]:
    """Every violation not yet resolved, oldest first."""
    return [stored for stored in _load(data_dir) if stored["status"] == "active"]


def list_all(data_dir) -> list[dict]:
    return _load(data_dir)


def resolve(data_dir, matches, resolution: str, actor: str, audit=None) -> list[dict]:
    """Mark active violations for which matches(record) is true as resolved."""
    now = audit_mod.now_utc()
    resolved = []
    with _locked(data_dir):
        records = _load(data_dir)
        for stored in records:
            if stored["status"] == "active" and matches(stored):
                stored.update(
                    status="resolved", resolved_at=now, resolved_by=actor, resolution=resolution
                )
                resolved.append(stored)
        write_json(_path(data_dir), records)
    audit_fn = audit_mod.default_audit(data_dir, audit)
    for stored in resolved:
        audit_fn(
            audit_mod.event(
                "watermark-violation-resolved",
                actor=actor,
                key_id=stored.get("key_id"),
                version=None,
                purpose=resolution,
                provider=stored["provider"],
                violation_id=stored["id"],
            )
        )
    return resolved


def package_removed(data_dir, provider: str, actor: str, audit=None) -> list[dict]:
    """The provider's package was removed: its violations end."""
    return resolve(
        data_dir,
        lambda stored: stored["provider"] == provider,
        f"package {provider} removed",
        actor,
        audit,
    )
