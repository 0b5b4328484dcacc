"""Adversarial review of keys/: vendor scope of signatures, and the master key file."""

import os
from datetime import UTC, datetime, timedelta

import pytest

from keys.errors import KeysError, PackageRejected
from keys.signing import TrustStore, keygen, sign_package
from tests.keys_support import make_key_file

SOON = (datetime.now(UTC) + timedelta(days=30)).isoformat(timespec="seconds")
PACKAGE = b"#!/bin/sh\necho configuring RAID\n"


def test_a_trusted_vendor_cannot_sign_a_package_in_another_vendors_name(tmp_path):
    trust = TrustStore(tmp_path / "data")
    small = keygen("Small Tools", SOON)
    trust.add(small.public_record(), actor="admin")
    manifest = {"name": "raid-perc", "version": "1.0", "vendor": "Dell"}
    record = sign_package(PACKAGE, manifest, small)

    with pytest.raises(PackageRejected) as refused:
        trust.verify_package(PACKAGE, manifest, record)
    assert refused.value.reason == "bad_signature"
    assert "'Dell'" in str(refused.value)

    own = {**manifest, "vendor": "Small Tools"}
    assert trust.verify_package(PACKAGE, own, sign_package(PACKAGE, own, small))


def test_a_key_file_hard_linked_into_the_data_directory_is_refused(tmp_path):
    from keys.audit import AccessLog
    from keys.master import KeyFileMaster

    data, etc = tmp_path / "data", tmp_path / "etc"
    etc.mkdir()
    make_key_file(etc, data)
    (data / "keys").mkdir(parents=True, exist_ok=True)
    os.link(etc / "master.key", data / "keys" / "copy.key")

    with pytest.raises(KeysError, match="2 hard links"):
        KeyFileMaster(etc / "master.key", AccessLog(data), data)


def test_a_directory_given_as_the_pin_file_is_a_clear_error(tmp_path):
    from keys.pkcs11token import read_pin

    pin_dir = tmp_path / "pin"
    pin_dir.mkdir(mode=0o700)

    with pytest.raises(KeysError, match="not a regular file"):
        read_pin(pin_dir, tmp_path / "data")


def _dual(data_dir):
    from keys.audit import AccessLog
    from keys.dualcontrol import DualControlMaster
    from tests.keys_support import FAST_LIMITS, OFFICERS

    master = DualControlMaster.create(data_dir, OFFICERS, 2, AccessLog(data_dir), FAST_LIMITS)
    master.close()
    return DualControlMaster(data_dir, AccessLog(data_dir))


def test_one_officer_twice_is_one_share(tmp_path):
    from tests.keys_support import OFFICERS

    master = _dual(tmp_path)
    master.unseal("alice", OFFICERS["alice"])
    master.unseal("alice", OFFICERS["alice"])

    assert master.is_sealed()
    assert master.status()["shares_entered"] == ["alice"]


def test_a_share_from_another_init_does_not_unseal_and_leaves_nothing_behind(tmp_path):
    import json

    from tests.keys_support import OFFICERS

    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    master = _dual(ours)
    _dual(theirs)
    # Alice's record (same passphrase) is taken from the other appliance's state file.
    state_path = ours / "keys" / "dual-control.json"
    state = json.loads(state_path.read_text())
    other = json.loads((theirs / "keys" / "dual-control.json").read_text())
    state["officers"][0] = other["officers"][0]
    state_path.write_text(json.dumps(state))

    master.unseal("alice", OFFICERS["alice"])
    with pytest.raises(KeysError, match="do not rebuild the master key"):
        master.unseal("bob", OFFICERS["bob"])
    assert master.is_sealed()
    assert master.status()["shares_entered"] == []


DAMAGED_CONFIGS = [
    "[]",
    '{"source": "key-file"}',
    '{"source": "key-file", "key_file": 5}',
    '{"source": "pkcs11", "pin_file": "/etc/cloudboot/pin"}',
]


@pytest.mark.parametrize("text", DAMAGED_CONFIGS)
def test_a_damaged_master_json_is_a_one_line_error(tmp_path, text):
    from keys.cli import keys_status

    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "master.json").write_text(text)

    with pytest.raises(KeysError, match="is damaged"):
        keys_status(data_dir=tmp_path)


def test_a_damaged_dual_control_state_is_a_one_line_error(tmp_path):
    from keys.cli import keys_status

    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "master.json").write_text('{"source": "dual-control"}')
    (tmp_path / "keys" / "dual-control.json").write_text('{"format": "cloudboot.dual-control/1"}')

    with pytest.raises(KeysError, match="is damaged"):
        keys_status(data_dir=tmp_path)


DAMAGED_KEYRINGS = [
    {"data_keys": {"x": {"wrapped": {"version": "zz"}}}, "active": {}},
    {"data_keys": {"x": []}, "active": {}},
    {"data_keys": {}, "active": {"backups": "backups-missing"}},
]


@pytest.mark.parametrize("keyring", DAMAGED_KEYRINGS)
def test_a_damaged_keyring_is_a_one_line_error(tmp_path, keyring):
    import json

    from keys.cli import keys_rotate, keys_status
    from keys.master import save_config

    data, etc = tmp_path / "data", tmp_path / "etc"
    etc.mkdir()
    make_key_file(etc, data)
    save_config(data, {"source": "key-file", "key_file": str(etc / "master.key")})
    document = {"format": "cloudboot.keyring/1", **keyring}
    (data / "keys" / "keyring.json").write_text(json.dumps(document))

    with pytest.raises(KeysError, match="is damaged"):
        keys_status(data_dir=data)
    with pytest.raises(KeysError, match="is damaged"):
        keys_rotate(data_dir=data)
