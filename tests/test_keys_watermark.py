"""Watermarks, violations and licences for provider packages."""

from datetime import UTC, datetime, timedelta

import pytest

from keys import violations
from keys.audit import AccessLog
from keys.errors import KeysError, PackageRejected, WatermarkViolation
from keys.signing import TrustStore, keygen, sha256
from keys.watermark import check, import_licence, make_licence, stamp

PACKAGE = b"provider package bytes" * 20
DIGEST = sha256(PACKAGE)
SOON = (datetime.now(UTC) + timedelta(days=30)).isoformat(timespec="seconds")
OURS = {"licensee": "Bank of Testing", "appliance_id": "appl-0001"}


@pytest.fixture
def vendor(tmp_path):
    key = keygen("Acme Storage", SOON)
    TrustStore(tmp_path).add(key.public_record(), actor="admin")
    return key


def mark(vendor, licensee="Bank of Testing", appliance_ids=("appl-0001",), **overrides):
    fields = {
        "licensee": licensee,
        "downloader_id": "user-417",
        "appliance_ids": list(appliance_ids),
        "expires": SOON,
    }
    fields.update(overrides)
    return stamp(DIGEST, "raid-perc", vendor, **fields)


def run_check(data_dir, watermark, digest=DIGEST, **ours):
    return check(
        data_dir,
        provider="raid-perc",
        package_sha256=digest,
        watermark=watermark,
        **{**OURS, **ours},
    )


def test_our_own_watermark_passes(tmp_path, vendor):
    watermark = mark(vendor)
    assert run_check(tmp_path, watermark) == watermark
    assert violations.list_active(tmp_path) == []


@pytest.mark.parametrize(
    ("stamped", "reason"),
    [
        ({"licensee": "Other Bank"}, "foreign licensee"),
        ({"appliance_ids": ("appl-9999",)}, "appliance not listed"),
    ],
)
def test_foreign_watermark_is_a_recorded_violation(tmp_path, vendor, stamped, reason):
    watermark = mark(vendor, **stamped)
    with pytest.raises(WatermarkViolation) as raised:
        run_check(tmp_path, watermark)
    assert "will not run" in str(raised.value) and "user-417" in str(raised.value)

    active = violations.list_active(tmp_path)
    assert len(active) == 1
    assert active[0]["provider"] == "raid-perc"
    assert active[0]["downloader_id"] == "user-417"
    assert active[0]["reason"] == reason
    assert active[0]["status"] == "active" and active[0]["count"] == 1

    # Before every run the check repeats: still refused, counted, not duplicated.
    with pytest.raises(WatermarkViolation):
        run_check(tmp_path, watermark)
    again = violations.list_active(tmp_path)
    assert len(again) == 1 and again[0]["count"] == 2

    audit = [r for r in AccessLog(tmp_path).read() if r["action"] == "watermark-violation"]
    assert len(audit) == 2
    assert audit[0]["provider"] == "raid-perc" and audit[0]["downloader_id"] == "user-417"


def test_violation_ends_when_the_package_is_removed(tmp_path, vendor):
    with pytest.raises(WatermarkViolation):
        run_check(tmp_path, mark(vendor, licensee="Other Bank"))
    resolved = violations.package_removed(tmp_path, "raid-perc", actor="admin:kim")
    assert len(resolved) == 1 and violations.list_active(tmp_path) == []
    history = violations.list_all(tmp_path)
    assert history[0]["resolution"] == "package raid-perc removed"
    assert history[0]["resolved_by"] == "admin:kim"


def test_a_valid_licence_ends_the_violation_and_lets_the_package_run(tmp_path, vendor):
    watermark = mark(vendor, licensee="Other Bank")
    with pytest.raises(WatermarkViolation):
        run_check(tmp_path, watermark)

    licence = make_licence(
        vendor,
        licensee="Bank of Testing",
        appliance_ids=["appl-0001"],
        providers=["raid-perc"],
        expires=SOON,
    )
    summary = import_licence(tmp_path, licence, actor="admin:kim", **OURS)
    assert len(summary["resolved"]) == 1
    assert violations.list_active(tmp_path) == []
    assert run_check(tmp_path, watermark) == watermark
    # The licence covers this appliance only.
    with pytest.raises(WatermarkViolation):
        run_check(tmp_path, watermark, appliance_id="appl-0002")


def test_licences_that_do_not_fit_are_refused(tmp_path, vendor):
    def licence(**changes):
        fields = {
            "licensee": "Bank of Testing",
            "appliance_ids": ["appl-0001"],
            "providers": ["raid-perc"],
            "expires": SOON,
        }
        return make_licence(vendor, **{**fields, **changes})

    with pytest.raises(KeysError, match="not 'Bank of Testing' on appliance 'appl-0001'"):
        import_licence(tmp_path, licence(appliance_ids=["appl-7"]), actor="admin", **OURS)
    with pytest.raises(PackageRejected, match="licence expired"):
        import_licence(tmp_path, licence(expires="2021-01-01T00:00:00+00:00"), actor="a", **OURS)
    forged = {**licence(), "appliance_ids": ["appl-0001", "appl-0002"]}
    with pytest.raises(PackageRejected, match="does not verify"):
        import_licence(tmp_path, forged, actor="admin", **OURS)
    stranger = keygen("Acme Storage", SOON)
    unknown = make_licence(
        stranger,
        licensee="Bank of Testing",
        appliance_ids=["appl-0001"],
        providers=["raid-perc"],
        expires=SOON,
    )
    with pytest.raises(PackageRejected, match="not in the trust store"):
        import_licence(tmp_path, unknown, actor="admin", **OURS)


def test_missing_forged_expired_or_misplaced_watermarks_are_refused(tmp_path, vendor):
    def reason(watermark, digest=DIGEST):
        with pytest.raises(PackageRejected) as raised:
            run_check(tmp_path, watermark, digest)
        assert not isinstance(raised.value, WatermarkViolation)
        return raised.value.reason

    assert reason(None) == "unwatermarked"
    # Editing the licensee to ours breaks the vendor's signature: tampering, not a violation.
    assert reason({**mark(vendor, licensee="Other Bank"), "licensee": "Bank of Testing"}) == (
        "bad_signature"
    )
    assert reason(mark(vendor, expires="2021-01-01T00:00:00+00:00")) == "watermark_expired"
    assert reason(mark(vendor), digest=sha256(b"other bytes")) == "digest_mismatch"
    assert violations.list_active(tmp_path) == []
