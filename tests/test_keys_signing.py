"""Vendor Ed25519 signatures over provider packages and the trusted vendor keys."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keys.audit import AccessLog
from keys.errors import KeysError, PackageRejected
from keys.signing import TrustStore, keygen, sign_package

PACKAGE = b"#!/bin/sh\necho configuring RAID\n" * 40
MANIFEST = {"name": "raid-perc", "version": "1.2.0", "files": {"run": "sha256:ab"}}
NEXT_YEAR = (datetime.now(UTC) + timedelta(days=365)).isoformat(timespec="seconds")


@pytest.fixture
def vendor():
    return keygen("Acme Storage", NEXT_YEAR)


@pytest.fixture
def trust(tmp_path, vendor):
    store = TrustStore(tmp_path)
    store.add(vendor.public_record(), actor="admin:kim")
    return store


def rejected(reason, call, *args, **kwargs):
    with pytest.raises(PackageRejected) as raised:
        call(*args, **kwargs)
    assert raised.value.reason == reason, str(raised.value)
    assert "\n" not in str(raised.value)
    return str(raised.value)


def test_a_signed_package_verifies(trust, vendor):
    record = sign_package(PACKAGE, MANIFEST, vendor)
    entry = trust.verify_package(PACKAGE, MANIFEST, record)
    assert entry["vendor"] == "Acme Storage" and entry["key_id"] == vendor.key_id
    # The record survives a trip through a JSON file, as it travels in a package.
    assert trust.verify_package(PACKAGE, MANIFEST, json.loads(json.dumps(record)))


def test_unsigned_package_is_refused(trust):
    rejected("unsigned", trust.verify_package, PACKAGE, MANIFEST, None)
    rejected("unsigned", trust.verify_package, PACKAGE, MANIFEST, {"vendor": "Acme Storage"})


@settings(max_examples=60, deadline=None)
@given(position=st.integers(min_value=0, max_value=len(PACKAGE) - 1), bit=st.integers(0, 7))
def test_any_changed_byte_is_refused(tmp_path_factory, position, bit):
    vendor = keygen("Acme Storage", NEXT_YEAR)
    store = TrustStore(tmp_path_factory.mktemp("trust"))
    store.add(vendor.public_record(), actor="admin")
    record = sign_package(PACKAGE, MANIFEST, vendor)
    changed = bytearray(PACKAGE)
    changed[position] ^= 1 << bit
    message = rejected("digest_mismatch", store.verify_package, bytes(changed), MANIFEST, record)
    assert "changed since Acme Storage signed" in message


def test_changed_manifest_or_truncation_is_refused(trust, vendor):
    record = sign_package(PACKAGE, MANIFEST, vendor)
    rejected(
        "digest_mismatch", trust.verify_package, PACKAGE, {**MANIFEST, "version": "9"}, record
    )
    rejected("digest_mismatch", trust.verify_package, PACKAGE[:-1], MANIFEST, record)
    rejected("digest_mismatch", trust.verify_package, PACKAGE + b"\0", MANIFEST, record)


def test_record_edited_to_match_changed_bytes_has_a_wrong_signature(trust, vendor):
    from keys.signing import sha256

    changed = PACKAGE.replace(b"RAID", b"rm -rf")
    record = sign_package(PACKAGE, MANIFEST, vendor)
    forged = {**record, "package_sha256": sha256(changed)}
    rejected("bad_signature", trust.verify_package, changed, MANIFEST, forged)


def test_resigned_by_another_key_is_an_unknown_vendor(trust, vendor):
    impostor = keygen("Acme Storage", NEXT_YEAR)
    record = sign_package(PACKAGE, MANIFEST, impostor)
    message = rejected("unknown_vendor", trust.verify_package, PACKAGE, MANIFEST, record)
    assert impostor.key_id in message


def test_another_trusted_vendor_cannot_sign_as_this_one(trust, vendor):
    other = keygen("Other Corp", NEXT_YEAR)
    trust.add(other.public_record(), actor="admin")
    record = sign_package(PACKAGE, MANIFEST, other)
    record_claiming_acme = {**record, "vendor": "Acme Storage"}
    rejected("bad_signature", trust.verify_package, PACKAGE, MANIFEST, record_claiming_acme)


def test_expired_key_is_refused(tmp_path):
    old = keygen("Acme Storage", "2020-01-01T00:00:00+00:00")
    store = TrustStore(tmp_path)
    store.add(old.public_record(), actor="admin")
    record = sign_package(PACKAGE, MANIFEST, old)
    message = rejected("expired_key", store.verify_package, PACKAGE, MANIFEST, record)
    assert "expired at 2020-01-01" in message
    # The same record verified at a time inside the key's life passes.
    then = datetime(2019, 6, 1, tzinfo=UTC)
    assert store.verify_package(PACKAGE, MANIFEST, record, now=then)


def test_revoked_key_is_refused_and_stays_revoked(trust, vendor):
    record = sign_package(PACKAGE, MANIFEST, vendor)
    trust.revoke(vendor.key_id, actor="admin:kim", reason="key leaked")
    message = rejected("revoked_key", trust.verify_package, PACKAGE, MANIFEST, record)
    assert vendor.key_id in message
    with pytest.raises(KeysError, match="revoked; it cannot be trusted again"):
        trust.add(vendor.public_record(), actor="admin:kim")
    assert [e["revoked_by"] for e in trust.list()] == ["admin:kim"]


def test_trust_changes_are_audited(tmp_path, trust, vendor):
    trust.revoke(vendor.key_id, actor="admin:lee", reason="rotation")
    records = AccessLog(tmp_path).read()
    assert [(r["action"], r["actor"], r["key_id"]) for r in records] == [
        ("vendor-trust-add", "admin:kim", vendor.key_id),
        ("vendor-trust-revoke", "admin:lee", vendor.key_id),
    ]
    assert records[1]["reason"] == "rotation"


def test_bad_public_key_records_are_refused(trust, vendor):
    public = vendor.public_record()
    with pytest.raises(KeysError, match="does not match"):
        trust.add({**public, "key_id": "ed25519-" + "0" * 32}, actor="admin")
    with pytest.raises(KeysError, match="no valid Ed25519 key"):
        trust.add({**public, "public_key": "not base64!"}, actor="admin")
    with pytest.raises(KeysError, match="not a CloudBoot vendor public key"):
        trust.add({"hello": "world"}, actor="admin")
    with pytest.raises(KeysError, match="key id must look like"):
        trust.revoke("../../etc/passwd", actor="admin")
