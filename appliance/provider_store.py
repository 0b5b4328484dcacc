"""Imported provider packages: checked at import, kept in the data directory, checked again
before every run.

A vendor ships one package file (providers/package.py) carrying its signature
(SIGN block) and the download's watermark (WMRK block). Import checks, in
order: the package layout, the vendor signature over Package.digest and the
packaged manifest against the trust store (keys.signing), then the watermark
against this appliance's licensee and id (keys.watermark). Only a package that
passes lands in the data directory:

    <data_dir>/providers/<name>/<version>/package.cbp   the file as imported (0600)
                                         /unpacked/     its files, for reading
                                         /imported.json who, when, vendor, watermark

It is staged in a hidden folder beside them and renamed into place, so a
failed import leaves nothing behind. Before every run the stored package file
is checked again exactly as at import (a revoked vendor key, an expired
watermark or a foreign licensee stops it) and a fresh copy is unpacked from
those verified bytes under the sandbox's runtime root, so what runs is what
was checked, whatever happened to unpacked/ since.

Every import, refusal, removal and run is audited through the sink given by
appliance/key_audit.py (a callable for keys/ events, `.record(**fields)` for
the appliance's own). This module must never let a package that failed a
check run, nor leave a refused package in the data directory.
"""

import json
import logging
import os
import re
import secrets
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from keys import violations
from keys.errors import KeysError, PackageRejected, WatermarkViolation
from keys.signing import (
    TrustStore,
    current_time,
    decode_block,
    normalise_digest,
    parse_time,
)
from keys.watermark import check as check_watermark
from providers import package as package_module

log = logging.getLogger(__name__)

PROVIDERS_DIR = "providers"
PACKAGE_FILE = "package.cbp"
UNPACKED_DIR = "unpacked"
RECORD_FILE = "imported.json"
# Same shapes as providers/manifest.py enforces, so a name can never climb out of the store.
NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+~-]{0,31}")


class ProviderStoreError(Exception):
    """An operator error about imported providers (not imported, already imported)."""


class ProviderRefused(ProviderStoreError):
    """A package failed a check; `reason` is the stable code (unsigned, bad_signature, ...)."""

    def __init__(self, reason, message, details=None):
        super().__init__(message)
        self.reason = reason
        self.details = details or {}


@dataclass(frozen=True)
class Checked:
    """A package that passed every check, with what the checks found."""

    package: package_module.Package
    blob: bytes
    vendor: dict  # the trust store entry of the signing key
    watermark: dict

    @property
    def name(self):
        return self.package.manifest.name

    @property
    def version(self):
        return self.package.manifest.version


def providers_dir(data_dir) -> Path:
    return Path(data_dir) / PROVIDERS_DIR


def appliance_id(data_dir):
    """This appliance's id, as the store made it (<data_dir>/appliance-id)."""
    try:
        found = (Path(data_dir) / "appliance-id").read_text().strip()
    except OSError:
        found = ""
    if not found:
        raise ProviderStoreError(
            f"no appliance id in {data_dir}/appliance-id: start the appliance once "
            "(or run any `cloudboot` command with --data-dir) first"
        )
    return found


def read_blob(path) -> bytes:
    try:
        with open(path, "rb") as handle:
            blob = handle.read(package_module.MAX_PACKAGE_BYTES + 1)
    except OSError as exc:
        raise ProviderRefused(
            "bad_package", f"cannot read package {path}: {exc.strerror}"
        ) from None
    if len(blob) > package_module.MAX_PACKAGE_BYTES:
        raise ProviderRefused(
            "bad_package",
            f"package {path} is larger than {package_module.MAX_PACKAGE_BYTES} bytes",
        )
    return blob


def verify_blob(data_dir, blob, *, licensee, appliance, audit=None, now=None) -> Checked:
    """Every check a package must pass to be imported or run; raises ProviderRefused."""
    if not licensee:
        raise ProviderRefused(
            "no_licensee",
            "server.licensee is not set: the licensee name vendors stamp into packages "
            "(see docs/configuration.md)",
        )
    try:
        found = package_module.decode(blob)
    except package_module.PackageError as exc:
        raise ProviderRefused("bad_package", f"not a valid provider package: {exc}") from None
    name = found.manifest.name
    try:
        return _checks(data_dir, found, blob, licensee, appliance, audit, now)
    except ProviderRefused as exc:
        exc.details.setdefault("provider", f"{name}/{found.manifest.version}")
        raise


def _checks(data_dir, found, blob, licensee, appliance, audit, now) -> Checked:
    name = found.manifest.name
    try:
        signature = decode_block(found.signature, "signature")
        if signature is None:
            raise PackageRejected("unsigned", f"provider {name} is not signed by its vendor")
        manifest = json.loads(found.manifest_bytes)
        vendor = TrustStore(data_dir, audit).verify_digest(found.digest, manifest, signature, now)
        stamped = decode_block(found.watermark, "watermark")
        _same_vendor(name, vendor, stamped)
        watermark = check_watermark(
            data_dir,
            provider=name,
            package_sha256=found.digest,
            watermark=stamped,
            licensee=licensee,
            appliance_id=appliance,
            audit=audit,
            now=now,
        )
    except WatermarkViolation as exc:
        raise ProviderRefused(
            exc.reason, str(exc), {"violation_id": exc.violation["id"]}
        ) from None
    except PackageRejected as exc:
        raise ProviderRefused(exc.reason, _about(name, exc)) from None
    except KeysError as exc:
        raise ProviderRefused("bad_signature", _about(name, exc)) from None
    return Checked(found, blob, vendor, watermark)


def _same_vendor(name, vendor: dict, watermark) -> None:
    """Another trusted vendor cannot license this vendor's package (checked before the
    watermark, so such a stamp never counts as a violation; check() then authenticates it)."""
    if isinstance(watermark, dict) and watermark.get("vendor") != vendor["vendor"]:
        raise PackageRejected(
            "bad_signature",
            f"provider {name} is signed by {vendor['vendor']!r} but watermarked by "
            f"{watermark.get('vendor')!r}",
        )


def _about(name, exc) -> str:
    text = str(exc)
    return text if text.startswith(f"provider {name}") else f"provider {name}: {text}"


def _summary(checked: Checked) -> dict:
    watermark = checked.watermark
    return {
        "name": checked.name,
        "version": checked.version,
        "vendor": checked.vendor["vendor"],
        "key_id": checked.vendor["key_id"],
        "package_sha256": normalise_digest(checked.package.digest),
        "licensee": watermark["licensee"],
        "downloader_id": watermark["downloader_id"],
        "appliance_ids": watermark["appliance_ids"],
        "expires": watermark["expires"],
    }


def _refusal_fields(exc: ProviderRefused, where, action, actor) -> dict:
    """A denied event, named after the package when it could be read, else its file."""
    return {
        "actor": actor,
        "action": action,
        "resource_type": "provider",
        "resource_id": exc.details.get("provider") or str(where),
        "result": "denied",
        "details": {"reason": exc.reason, "message": str(exc), "file": str(where), **exc.details},
    }


def verify_file(data_dir, path, *, licensee, actor, audit, now=None) -> dict:
    """`provider verify`: the checks of an import, nothing stored; audited as provider.verify."""
    try:
        checked = verify_blob(
            data_dir,
            read_blob(path),
            licensee=licensee,
            appliance=appliance_id(data_dir),
            audit=audit,
            now=now,
        )
    except ProviderRefused as exc:
        audit.record(**_refusal_fields(exc, path, "provider.verify", actor))
        raise
    summary = _summary(checked)
    audit.record(
        actor=actor,
        action="provider.verify",
        resource_type="provider",
        resource_id=f"{checked.name}/{checked.version}",
        details={**summary, "file": str(path)},
    )
    return summary


def import_package(data_dir, path, *, licensee, actor, audit, now=None) -> dict:
    """Check a package file and keep it; a refused package leaves nothing behind."""
    try:
        checked = verify_blob(
            data_dir,
            read_blob(path),
            licensee=licensee,
            appliance=appliance_id(data_dir),
            audit=audit,
            now=now,
        )
        target = _install(data_dir, checked, actor)
    except ProviderRefused as exc:
        audit.record(**_refusal_fields(exc, path, "provider.import", actor))
        raise
    summary = _summary(checked)
    audit.record(
        actor=actor,
        action="provider.import",
        resource_type="provider",
        resource_id=f"{checked.name}/{checked.version}",
        details={**summary, "file": str(path)},
    )
    log.info("provider %s %s imported into %s", checked.name, checked.version, target)
    return summary


def _install(data_dir, checked: Checked, actor) -> Path:
    root = providers_dir(data_dir)
    target = root / checked.name / checked.version
    if target.exists():
        raise ProviderRefused(
            "already_imported",
            f"provider {checked.name} {checked.version} is already imported; "
            f"`cloudboot provider remove {checked.name} --version {checked.version}` first",
        )
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    staging = root / f".incoming-{secrets.token_hex(6)}"
    staging.mkdir(mode=0o700)
    try:
        package_module.unpack(checked.package, staging / UNPACKED_DIR)
        _write_private(staging / PACKAGE_FILE, checked.blob)
        record = {**_summary(checked), "imported_by": actor, "watermark": checked.watermark}
        _write_private(staging / RECORD_FILE, json.dumps(record, indent=2).encode())
        target.parent.mkdir(mode=0o700, exist_ok=True)
        os.rename(staging, target)
    except (OSError, package_module.PackageError) as exc:
        raise ProviderRefused("store_failed", f"cannot store provider: {exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _installed(data_dir, name, version=None) -> list[Path]:
    if not NAME.fullmatch(name or "") or (version is not None and not VERSION.fullmatch(version)):
        raise ProviderStoreError(f"no such provider {_label(name, version)!r}")
    folder = providers_dir(data_dir) / name
    if version is not None:
        return [folder / version] if (folder / version / PACKAGE_FILE).exists() else []
    return sorted(p.parent for p in folder.glob(f"*/{PACKAGE_FILE}"))


def _label(name, version=None) -> str:
    return f"{name} {version}" if version else str(name)


def list_imported(data_dir, *, now=None) -> dict:
    """Imported providers with vendor and licence status, and the active violations."""
    active = violations.list_active(data_dir)
    found = []
    for path in sorted(providers_dir(data_dir).glob(f"*/*/{RECORD_FILE}")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            found.append({"path": str(path.parent), "licence": f"unreadable record: {exc}"})
            continue
        found.append({**_without_watermark(record), "licence": _licence(record, active, now)})
    return {"providers": found, "active_violations": active}


def _without_watermark(record):
    return {key: value for key, value in record.items() if key != "watermark"}


def _licence(record, active, now) -> str:
    if any(v["provider"] == record["name"] for v in active):
        return "violation"
    if current_time(now) > parse_time(record["expires"], "watermark expires"):
        return "expired"
    return "ok"


def remove(data_dir, name, version=None, *, actor, audit) -> dict:
    """Remove an imported provider (one version or all); its violations end."""
    paths = _installed(data_dir, name, version)
    pending = [v for v in violations.list_active(data_dir) if v["provider"] == name]
    if not paths and not pending:
        raise ProviderStoreError(f"provider {_label(name, version)} is not imported")
    for path in paths:
        shutil.rmtree(path)
    folder = providers_dir(data_dir) / name
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
    resolved = []
    if not _installed(data_dir, name):
        resolved = violations.package_removed(data_dir, name, actor, audit)
    result = {
        "removed": [f"{name}/{path.name}" for path in paths],
        "violations_resolved": [v["id"] for v in resolved],
    }
    audit.record(
        actor=actor,
        action="provider.remove",
        resource_type="provider",
        resource_id=f"{name}/{version}" if version else name,
        details=result,
    )
    return result


def import_licence(data_dir, path, *, licensee, actor, audit) -> dict:
    """A vendor-signed licence for this licensee and appliance; ends the violations it covers."""
    try:
        result = _keep_licence(data_dir, path, licensee, actor, audit)
    except ProviderRefused as exc:
        audit.record(**_refusal_fields(exc, path, "provider.licence-import", actor))
        raise
    audit.record(
        actor=actor,
        action="provider.licence-import",
        resource_type="licence",
        resource_id=result["licence"],
        details=result,
    )
    return result


def _keep_licence(data_dir, path, licensee, actor, audit) -> dict:
    from keys.watermark import import_licence as keep_licence

    try:
        licence = json.loads(read_blob(path))
    except ValueError:
        raise ProviderRefused("bad_licence", f"licence {path} is not JSON") from None
    try:
        return keep_licence(
            data_dir,
            licence,
            licensee=licensee,
            appliance_id=appliance_id(data_dir),
            actor=actor,
            audit=audit,
        )
    except PackageRejected as exc:
        raise ProviderRefused(exc.reason, f"licence {path}: {exc}") from None
    except KeysError as exc:
        raise ProviderRefused("bad_licence", f"licence {path}: {exc}") from None


def check_before_run(
    data_dir, name, version, *, licensee, actor="appliance", audit=None, now=None
):
    """The checks of import, again, on the stored package file; returns the Checked package.

    A refusal (revoked vendor key, expired or foreign watermark, a changed
    byte of the stored file) is audited as a denied provider.run and raised.
    """
    paths = _installed(data_dir, name, version)
    if not paths:
        raise ProviderStoreError(f"provider {name} {version} is not imported")
    try:
        checked = verify_blob(
            data_dir,
            read_blob(paths[0] / PACKAGE_FILE),
            licensee=licensee,
            appliance=appliance_id(data_dir),
            audit=audit,
            now=now,
        )
        if (checked.name, checked.version) != (name, version):
            raise ProviderRefused(
                "digest_mismatch",
                f"stored package for {name} {version} is {checked.name} {checked.version}",
            )
    except ProviderRefused as exc:
        if audit is not None:
            audit.record(**_refusal_fields(exc, f"{name}/{version}", "provider.run", actor))
        raise
    return checked


def only_version(data_dir, name) -> str:
    """The imported version of NAME when there is exactly one (else say which to choose)."""
    paths = _installed(data_dir, name)
    if not paths:
        raise ProviderStoreError(f"provider {name} is not imported")
    if len(paths) > 1:
        versions = ", ".join(path.name for path in paths)
        raise ProviderStoreError(f"provider {name} has versions {versions}: choose with --version")
    return paths[0].name


def check_imported_for_job(data_dir, name, *, licensee, actor, audit=None) -> Checked:
    """check_before_run on the one imported version of NAME, as a job names it (no version).

    ProviderStoreError when it is not imported or has several versions; ProviderRefused
    (already audited) when a check fails.
    """
    version = only_version(data_dir, name)
    return check_before_run(data_dir, name, version, licensee=licensee, actor=actor, audit=audit)


@contextmanager
def unpacked_for_run(checked: Checked, runtime_root):
    """A fresh copy of the checked package under the runtime root, removed afterwards.

    The data directory is private to the appliance (0700); the sandboxed run
    has its own uid, so its files must sit where that uid can read them.
    """
    root = Path(runtime_root).absolute()
    root.mkdir(mode=0o711, parents=True, exist_ok=True)
    target = root / f"pkg-{checked.name}-{secrets.token_hex(4)}"
    package_module.unpack(checked.package, target)
    try:
        yield target
    finally:
        shutil.rmtree(target, ignore_errors=True)
