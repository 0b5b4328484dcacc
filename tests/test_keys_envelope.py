"""Envelope encryption: data keys wrapped by the master key, sealing, rotation, retirement."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keys.audit import AccessLog
from keys.envelope import Keyring
from keys.errors import KeysError
from keys.master import KeyFileMaster
from tests.keys_support import make_key_file


@pytest.fixture
def setup(tmp_path):
    data_dir, etc = tmp_path / "data", tmp_path / "etc"
    data_dir.mkdir()
    etc.mkdir()
    master = make_key_file(etc, data_dir)
    return data_dir, etc, master, Keyring(data_dir, master)


def test_seal_and_open_round_trip(setup):
    _, _, _, keyring = setup
    blob = keyring.seal("secrets", b"bmc password: calvin", aad=b"machine-7")
    assert b"calvin" not in blob
    assert keyring.open(blob, aad=b"machine-7") == b"bmc password: calvin"


def test_keyring_holds_only_wrapped_keys_with_id_and_version(setup):
    data_dir, _, master, keyring = setup
    keyring.seal("backups", b"x")
    keyring.seal("secrets", b"y")
    document = json.loads((data_dir / "keys" / "keyring.json").read_text())
    assert sorted(document["active"]) == ["backups", "secrets"]
    for record in document["data_keys"].values():
        assert record["wrapped"]["key_id"] == master.key_id
        assert record["wrapped"]["version"] == 1
        assert set(record["wrapped"]) == {"key_id", "version", "blob"}


def test_wrong_aad_and_tampering_are_refused(setup):
    _, _, _, keyring = setup
    blob = keyring.seal("secrets", b"webhook secret", aad=b"hook-1")
    with pytest.raises(KeysError, match="altered or its AAD differs"):
        keyring.open(blob, aad=b"hook-2")
    for index in (5, len(blob) // 2, len(blob) - 1):
        damaged = bytearray(blob)
        damaged[index] ^= 0x01
        with pytest.raises(KeysError):
            keyring.open(bytes(damaged), aad=b"hook-1")


@settings(max_examples=50, deadline=None)
@given(junk=st.binary(max_size=80))
def test_junk_is_refused_with_a_keys_error(tmp_path_factory, junk):
    folder = tmp_path_factory.mktemp("junk")
    (folder / "etc").mkdir()
    keyring = Keyring(folder / "data", make_key_file(folder / "etc", folder / "data"))
    keyring.seal("secrets", b"x")
    with pytest.raises(KeysError):
        keyring.open(junk)
    with pytest.raises(KeysError):
        keyring.open(keyring.seal("secrets", b"x") + junk + b"!")


def test_bad_purpose_is_refused(setup):
    _, _, _, keyring = setup
    with pytest.raises(KeysError, match="purpose"):
        keyring.seal("../../etc", b"x")


def test_backups_before_and_after_rotation_restore(setup):
    data_dir, etc, master, keyring = setup
    before = keyring.seal("backups", b"backup taken monday")

    result = keyring.rotate_master(actor="operator:jo")
    assert result["version"] == 2 and result["rewrapped"] == 1
    after = keyring.seal("backups", b"backup taken tuesday")
    assert keyring.versions_in_use() == {2: 1}

    # Nothing uses version 1 any more: retire it. Both backups still restore,
    # in this process and in one started afresh.
    keyring.retire(1, actor="operator:jo")
    fresh = Keyring(data_dir, KeyFileMaster(etc / "master.key", AccessLog(data_dir), data_dir))
    for ring in (keyring, fresh):
        assert ring.open(before) == b"backup taken monday"
        assert ring.open(after) == b"backup taken tuesday"
    assert master.versions() == [2]


def test_readers_in_another_process_keep_working_through_a_rotation(setup):
    data_dir, etc, _, keyring = setup
    blob = keyring.seal("providers", b"package key")
    reader = Keyring(data_dir, KeyFileMaster(etc / "master.key", print, data_dir))
    assert reader.open(blob) == b"package key"

    keyring.rotate_master(actor="operator:jo")
    # The reader's master was loaded before version 2 existed; the keyring now
    # names version 2, and the reader loads it from the key file on demand.
    assert reader.open(blob) == b"package key"
    assert reader.open(keyring.seal("providers", b"new")) == b"new"


def test_a_version_in_use_cannot_be_retired(setup):
    _, _, master, keyring = setup
    keyring.seal("backups", b"x")
    master.rotate(actor="pytest")  # a rotation without the re-wrap step
    with pytest.raises(KeysError, match="still wraps 1 data key"):
        keyring.retire(1, actor="pytest")


def test_every_seal_and_open_is_audited(setup):
    data_dir, _, master, keyring = setup
    blob = keyring.seal("secrets", b"s", actor="api:alice")
    keyring.open(blob, actor="job:restore")
    records = AccessLog(data_dir).read()
    purposes = [(r["action"], r["actor"], r["purpose"].split()[0]) for r in records]
    assert purposes == [
        ("wrap", "api:alice", "new"),
        ("unwrap", "api:alice", "seal:secrets"),
        ("unwrap", "job:restore", "open"),
    ]
    assert {r["key_id"] for r in records} == {master.key_id}
