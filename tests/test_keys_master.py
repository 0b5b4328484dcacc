"""Master key sources: key file (mode checks), dual control (M of N officers), rotation."""

import itertools
import os

import pytest

from keys.audit import AccessLog
from keys.dualcontrol import DualControlMaster
from keys.errors import KeysError, SealedError
from keys.master import KeyFileMaster, WrappedKey
from tests.keys_support import FAST_LIMITS, OFFICERS, make_key_file

DATA_KEY = bytes(range(32))


@pytest.fixture
def data_dir(tmp_path):
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def secrets_dir(tmp_path):
    path = tmp_path / "etc"
    path.mkdir()
    return path


def use(master, wrapped=None):
    if wrapped is None:
        return master.wrap(DATA_KEY, purpose="test", actor="pytest")
    return bytes(master.unwrap(wrapped, purpose="test", actor="pytest"))


def test_key_file_is_created_0400_and_wraps(data_dir, secrets_dir):
    master = make_key_file(secrets_dir, data_dir)
    assert os.stat(secrets_dir / "master.key").st_mode & 0o777 == 0o400
    wrapped = use(master)
    assert wrapped.version == 1 and wrapped.key_id == master.key_id
    assert use(KeyFileMaster(secrets_dir / "master.key", print, data_dir), wrapped) == DATA_KEY


@pytest.mark.parametrize("mode", [0o440, 0o404, 0o644, 0o600 | 0o004])
def test_key_file_readable_by_others_is_refused(data_dir, secrets_dir, mode):
    make_key_file(secrets_dir, data_dir)
    os.chmod(secrets_dir / "master.key", mode)
    with pytest.raises(KeysError) as raised:
        KeyFileMaster(secrets_dir / "master.key", print, data_dir)
    message = str(raised.value)
    assert f"mode {mode:04o}" in message and "0400" in message and "\n" not in message


def test_key_file_inside_the_data_directory_is_refused(data_dir):
    with pytest.raises(KeysError, match="inside the data directory"):
        KeyFileMaster.create(data_dir / "master.key", print, data_dir)


def test_missing_key_file_is_a_clear_error(data_dir, secrets_dir):
    with pytest.raises(KeysError, match="not found"):
        KeyFileMaster(secrets_dir / "nope.key", print, data_dir)


def test_altered_or_relabelled_blob_is_refused(data_dir, secrets_dir):
    master = make_key_file(secrets_dir, data_dir)
    wrapped = use(master)
    flipped = bytes([wrapped.blob[-1] ^ 1])
    with pytest.raises(KeysError, match="altered"):
        use(master, WrappedKey(wrapped.key_id, 1, wrapped.blob[:-1] + flipped))
    master.rotate(actor="pytest")
    # The version is bound into the AAD: claiming version 2 for a v1 blob fails.
    with pytest.raises(KeysError, match="altered"):
        use(master, WrappedKey(wrapped.key_id, 2, wrapped.blob))
    with pytest.raises(KeysError, match="master key 'other'"):
        use(master, WrappedKey("other", 1, wrapped.blob))


def test_key_file_rotation_keeps_old_versions_until_retired(data_dir, secrets_dir):
    master = make_key_file(secrets_dir, data_dir)
    other_process = KeyFileMaster(secrets_dir / "master.key", print, data_dir)
    old = use(master)

    assert master.rotate(actor="pytest") == 2
    new = use(master)
    assert new.version == 2 and use(master, old) == DATA_KEY
    # A process loaded before the rotation picks the new version up from the file.
    assert use(other_process, new) == DATA_KEY
    assert os.stat(secrets_dir / "master.key").st_mode & 0o777 == 0o400

    with pytest.raises(KeysError, match="current"):
        master.retire(2, actor="pytest")
    master.retire(1, actor="pytest")
    assert master.versions() == [2]
    with pytest.raises(KeysError, match="retired"):
        use(KeyFileMaster(secrets_dir / "master.key", print, data_dir), old)


def dual(data_dir, threshold=2, officers=OFFICERS):
    log = AccessLog(data_dir)
    DualControlMaster.create(data_dir, officers, threshold, log, FAST_LIMITS)
    return DualControlMaster(data_dir, log)


def test_dual_control_is_sealed_after_a_restart(data_dir):
    master = dual(data_dir)
    status = master.status()
    assert status["sealed"] is True and status["threshold"] == 2
    with pytest.raises(SealedError, match="sealed: 0 of 2"):
        use(master)


@pytest.mark.parametrize("pair", list(itertools.permutations(OFFICERS, 2)))
def test_any_two_of_three_officers_unseal(tmp_path, pair):
    data_dir = tmp_path / "data"
    creator = DualControlMaster.create(data_dir, OFFICERS, 2, print, FAST_LIMITS)
    wrapped = use(creator)

    master = DualControlMaster(data_dir, print)
    master.unseal(pair[0], OFFICERS[pair[0]])
    assert master.is_sealed() and master.status()["shares_entered"] == [pair[0]]
    master.unseal(pair[1], OFFICERS[pair[1]])
    assert not master.is_sealed()
    assert use(master, wrapped) == DATA_KEY


def test_one_officer_too_few_stays_sealed(data_dir):
    master = dual(data_dir, threshold=3)
    master.unseal("alice", OFFICERS["alice"])
    master.unseal("bob", OFFICERS["bob"])
    # Entering the same officer twice does not count as a third share.
    master.unseal("bob", OFFICERS["bob"])
    assert master.status()["sealed"] is True
    with pytest.raises(SealedError, match="2 of 3"):
        use(master)
    master.unseal("carol", OFFICERS["carol"])
    assert master.status()["sealed"] is False


def test_wrong_passphrase_and_unknown_officer_are_refused(data_dir):
    master = dual(data_dir)
    with pytest.raises(KeysError, match="wrong passphrase for officer 'alice'"):
        master.unseal("alice", "not alice's passphrase")
    with pytest.raises(KeysError, match="'mallory' is not an officer"):
        master.unseal("mallory", "anything at all here")
    assert master.status()["shares_entered"] == []
    refused = [r for r in AccessLog(data_dir).read() if r["action"] == "unseal-refused"]
    assert [(r["actor"], r["purpose"]) for r in refused] == [("alice", "unseal: wrong passphrase")]


def test_short_passphrase_and_bad_threshold_are_refused(data_dir):
    with pytest.raises(KeysError, match="at least 12"):
        DualControlMaster.create(data_dir, {"a": "short", "b": "long enough pass"}, 2, print)
    with pytest.raises(KeysError, match="threshold"):
        DualControlMaster.create(data_dir, OFFICERS, 4, print, FAST_LIMITS)
    with pytest.raises(KeysError, match="at least 2 officers"):
        DualControlMaster.create(data_dir, {"a": "long enough pass"}, 1, print, FAST_LIMITS)


def test_state_file_holds_no_key_and_sealing_forgets(data_dir):
    master = dual(data_dir)
    master.unseal("alice", OFFICERS["alice"])
    master.unseal("carol", OFFICERS["carol"])
    kek = bytes(master._versions[1])
    state = (data_dir / "keys" / "dual-control.json").read_bytes()
    assert kek not in state and kek.hex().encode() not in state
    master.seal()
    assert master.is_sealed()


def test_rotation_reissues_shares_and_old_data_still_opens(data_dir):
    master = dual(data_dir)
    master.unseal("alice", OFFICERS["alice"])
    master.unseal("bob", OFFICERS["bob"])
    before = use(master)
    old_shares = [o["share"] for o in master._state()["officers"]]

    running = DualControlMaster(data_dir, print)
    running.unseal("bob", OFFICERS["bob"])
    running.unseal("carol", OFFICERS["carol"])

    assert master.rotate(actor="pytest") == 2
    assert [o["share"] for o in master._state()["officers"]] != old_shares
    after = use(master)
    assert after.version == 2

    # A process unsealed before the rotation follows the link to version 2.
    assert use(running, after) == DATA_KEY and use(running, before) == DATA_KEY

    # After a restart, the officers' (unchanged) passphrases open the new shares.
    restarted = DualControlMaster(data_dir, print)
    restarted.unseal("carol", OFFICERS["carol"])
    restarted.unseal("alice", OFFICERS["alice"])
    assert use(restarted, before) == DATA_KEY and use(restarted, after) == DATA_KEY

    master.retire(1, actor="pytest")
    after_retirement = DualControlMaster(data_dir, print)
    after_retirement.unseal("carol", OFFICERS["carol"])
    after_retirement.unseal("bob", OFFICERS["bob"])
    assert after_retirement.versions() == [2]
    with pytest.raises(KeysError, match="retired"):
        use(after_retirement, before)


def test_change_of_officers_locks_out_the_old_ones(data_dir):
    master = dual(data_dir)
    master.unseal("alice", OFFICERS["alice"])
    master.unseal("bob", OFFICERS["bob"])
    newcomers = {"dave": "dave new passphrase", "erin": "erin new passphrase"}
    master.rotate(actor="pytest", officers=newcomers, threshold=2, limits=FAST_LIMITS)
    wrapped = use(master)

    restarted = DualControlMaster(data_dir, print)
    with pytest.raises(KeysError, match="'alice' is not an officer"):
        restarted.unseal("alice", OFFICERS["alice"])
    restarted.unseal("dave", newcomers["dave"])
    restarted.unseal("erin", newcomers["erin"])
    assert use(restarted, wrapped) == DATA_KEY


def test_every_key_use_is_audited(data_dir, secrets_dir):
    master = make_key_file(secrets_dir, data_dir)
    wrapped = master.wrap(DATA_KEY, purpose="backup 42", actor="backup-job")
    master.unwrap(wrapped, purpose="restore 42", actor="operator:jo")
    master.rotate(actor="operator:jo")

    log = data_dir / "keys" / "access.log"
    assert os.stat(log).st_mode & 0o777 == 0o600
    records = AccessLog(data_dir).read()
    assert [(r["action"], r["actor"], r["purpose"], r["version"]) for r in records] == [
        ("wrap", "backup-job", "backup 42", 1),
        ("unwrap", "operator:jo", "restore 42", 1),
        ("rotate", "operator:jo", "master key rotation", 2),
    ]
    assert all(r["key_id"] == master.key_id and r["time"].endswith("+00:00") for r in records)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not json",
        b"[]",
        b'{"format": "cloudboot.master-keyfile/1"}',
        b'{"format": "cloudboot.master-keyfile/1", "key_id": "k", "current": 1, "versions": {}}',
        b'{"format": "cloudboot.master-keyfile/1", "key_id": "k", "current": 1,'
        b' "versions": {"1": "c2hvcnQ="}}',
    ],
    ids=["empty", "text", "list", "no-fields", "no-versions", "short-key"],
)
def test_damaged_key_file_is_a_clear_error(data_dir, secrets_dir, content):
    path = secrets_dir / "master.key"
    path.write_bytes(content)
    path.chmod(0o400)
    with pytest.raises(KeysError) as raised:
        KeyFileMaster(path, print, data_dir)
    assert str(raised.value).startswith(("master key file", f"{path} is not a CloudBoot"))


def test_damaged_dual_control_state_is_a_clear_error(data_dir):
    master = dual(data_dir)
    state = data_dir / "keys" / "dual-control.json"
    state.write_text('{"format": "cloudboot.dual-control/1", "key_id": "x"}')
    with pytest.raises(KeysError, match="damaged"):
        master.unseal("alice", OFFICERS["alice"])
    state.write_text("[1]")
    with pytest.raises(KeysError, match="is not a CloudBoot dual-control state"):
        DualControlMaster(data_dir, print)
