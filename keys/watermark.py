"""Watermarks and licences: who a provider package was licensed to, and where it may run.

The vendor's download service stamps each package with a signed watermark:

    {"format": "cloudboot.watermark/1", "provider", "package_sha256", "licensee",
     "downloader_id", "downloaded_at", "appliance_ids": [...], "expires",
     "vendor", "key_id", "signature"}

check() runs at import and before every run. A watermark that is missing,
forged, for other bytes or past its expiry is refused (PackageRejected). One
that is genuine but names another licensee, or does not list this appliance,
is a violation: the package never runs, the violation is recorded with the
provider and the downloader id (keys.violations), and it stays active until
the package is removed or a licence covering it is imported.

A licence is a vendor-signed file naming the licensee, the appliance ids and
the providers it covers, and an expiry:

    {"format": "cloudboot.licence/1", "licensee", "appliance_ids": [...],
     "providers": [...], "expires", "vendor", "key_id", "signature"}

Licences are kept in <data_dir>/keys/licences/. This module must never let a
package run after recording a violation for it.
"""

import hashlib
from datetime import datetime
from pathlib import Path

from keys import audit as audit_mod
from keys import violations
from keys._files import keys_dir, read_json, write_json
from keys.errors import KeysError, PackageRejected, WatermarkViolation
from keys.signing import (
    TrustStore,
    VendorKey,
    canonical,
    current_time,
    normalise_digest,
    parse_time,
    sign_record,
)

WATERMARK_FORMAT = "cloudboot.watermark/1"
LICENCE_FORMAT = "cloudboot.licence/1"


def stamp(
    package_sha256: str,
    provider: str,
    vendor_key: VendorKey,
    *,
    licensee: str,
    downloader_id: str,
    appliance_ids: list[str],
    expires: str,
    downloaded_at: str | None = None,
) -> dict:
    """The vendor's download service: a signed watermark for one download."""
    parse_time(expires, "expires")
    record = {
        "format": WATERMARK_FORMAT,
        "provider": provider,
        "package_sha256": normalise_digest(package_sha256),
        "licensee": licensee,
        "downloader_id": downloader_id,
        "downloaded_at": downloaded_at or audit_mod.now_utc(),
        "appliance_ids": sorted(appliance_ids),
        "expires": expires,
    }
    return sign_record(WATERMARK_FORMAT, record, vendor_key)


def make_licence(
    vendor_key: VendorKey,
    *,
    licensee: str,
    appliance_ids: list[str],
    providers: list[str],
    expires: str,
) -> dict:
    """A vendor-signed licence letting these appliances of licensee run these providers."""
    parse_time(expires, "expires")
    record = {
        "format": LICENCE_FORMAT,
        "licensee": licensee,
        "appliance_ids": sorted(appliance_ids),
        "providers": sorted(providers),
        "expires": expires,
    }
    return sign_record(LICENCE_FORMAT, record, vendor_key)


def _licence_dir(data_dir) -> Path:
    path = Path(keys_dir(data_dir)) / "licences"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def _verify_licence(trust: TrustStore, licence, now) -> dict:
    entry = trust.verify_record(LICENCE_FORMAT, licence, now)
    if licence.get("format") != LICENCE_FORMAT:
        raise PackageRejected("bad_signature", f"not a licence: {licence.get('format')!r}")
    if current_time(now) > parse_time(licence.get("expires"), "licence expires"):
        raise PackageRejected("licence_expired", f"licence expired at {licence['expires']}")
    return entry


def _covers(licence: dict, vendor: str, provider: str, licensee: str, appliance_id: str) -> bool:
    return (
        licence.get("vendor") == vendor
        and licence.get("licensee") == licensee
        and appliance_id in licence.get("appliance_ids", [])
        and provider in licence.get("providers", [])
    )


def import_licence(
    data_dir,
    licence,
    *,
    licensee: str,
    appliance_id: str,
    actor: str,
    audit=None,
    now: datetime | None = None,
) -> dict:
    """Verify and keep a licence; resolve the violations it covers. Returns a summary."""
    trust = TrustStore(data_dir, audit)
    _verify_licence(trust, licence, now)
    if licence["licensee"] != licensee or appliance_id not in licence["appliance_ids"]:
        raise KeysError(
            f"licence is for licensee {licence['licensee']!r} and appliances "
            f"{licence['appliance_ids']}, not {licensee!r} on appliance {appliance_id!r}"
        )
    name = hashlib.sha256(canonical(licence)).hexdigest()[:24]
    write_json(_licence_dir(data_dir) / f"{name}.json", licence)
    resolved = violations.resolve(
        data_dir,
        lambda stored: _covers(
            licence, stored.get("vendor"), stored["provider"], licensee, stored["appliance_id"]
        ),
        f"licence {name} imported",
        actor,
        audit,
    )
    return {"licence": name, "resolved": [stored["id"] for stored in resolved]}


def _licensed(data_dir, trust, vendor, provider, licensee, appliance_id, now) -> bool:
    for path in sorted(_licence_dir(data_dir).glob("*.json")):
        licence = read_json(path, "licence")
        if not _covers(licence, vendor, provider, licensee, appliance_id):
            continue
        try:
            _verify_licence(trust, licence, now)
        except PackageRejected:
            continue
        return True
    return False


def check(
    data_dir,
    *,
    provider: str,
    package_sha256: str,
    watermark,
    licensee: str,
    appliance_id: str,
    audit=None,
    now: datetime | None = None,
) -> dict:
    """At import and before every run: may this package run on this appliance?

    Returns the watermark when it may. Raises PackageRejected when the
    watermark is missing, forged, for other bytes or expired, and
    WatermarkViolation (after recording it) when it is for someone else.
    """
    if watermark is None:
        raise PackageRejected("unwatermarked", f"provider {provider} carries no watermark")
    trust = TrustStore(data_dir, audit)
    trust.verify_record(WATERMARK_FORMAT, watermark, now)
    _check_binding(watermark, provider, package_sha256)
    if current_time(now) > parse_time(watermark.get("expires"), "watermark expires"):
        raise PackageRejected(
            "watermark_expired", f"provider {provider}'s licence expired at {watermark['expires']}"
        )

    foreign = watermark["licensee"] != licensee or appliance_id not in watermark["appliance_ids"]
    if not foreign:
        return watermark
    vendor = watermark["vendor"]
    if _licensed(data_dir, trust, vendor, provider, licensee, appliance_id, now):
        return watermark
    stored = violations.record(data_dir, _violation(watermark, licensee, appliance_id), audit)
    raise WatermarkViolation(
        f"provider {provider} was licensed to {watermark['licensee']!r} for appliances "
        f"{watermark['appliance_ids']} (downloaded by {watermark['downloader_id']!r}), "
        f"not to {licensee!r} on appliance {appliance_id!r}: it will not run",
        stored,
    )


def _check_binding(watermark: dict, provider: str, package_sha256: str) -> None:
    if watermark.get("format") != WATERMARK_FORMAT:
        raise PackageRejected("bad_signature", f"not a watermark: {watermark.get('format')!r}")
    if watermark.get("provider") != provider:
        raise PackageRejected(
            "digest_mismatch",
            f"watermark is for provider {watermark.get('provider')!r}, not {provider!r}",
        )
    if watermark.get("package_sha256") != normalise_digest(package_sha256):
        raise PackageRejected(
            "digest_mismatch", f"watermark of provider {provider} is for other package bytes"
        )


def _violation(watermark: dict, licensee: str, appliance_id: str) -> dict:
    return {
        "provider": watermark["provider"],
        "package_sha256": watermark["package_sha256"],
        "downloader_id": watermark["downloader_id"],
        "downloaded_at": watermark["downloaded_at"],
        "stamped_licensee": watermark["licensee"],
        "stamped_appliance_ids": watermark["appliance_ids"],
        "licensee": licensee,
        "appliance_id": appliance_id,
        "vendor": watermark["vendor"],
        "key_id": watermark["key_id"],
        "reason": "foreign licensee"
        if watermark["licensee"] != licensee
        else "appliance not listed",
    }
