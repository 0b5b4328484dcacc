"""Adversarial review of backups: key rotation, appended bytes, and keys made by opening."""

import pytest

from appliance.backup import backups, envelope
from appliance.backup.keysource import DEV_KEY_FILE
from appliance.config import BackupSettings
from keys.envelope import Keyring
from keys.master import load_master, save_config
from tests.audit_support import add_events, open_store
from tests.keys_support import make_key_file


async def _appliance(tmp_path, master_key=True):
    data = tmp_path / "data"
    store = await open_store(data)
    await add_events(store, 3)
    await store.close()
    if master_key:
        (tmp_path / "etc").mkdir()
        make_key_file(tmp_path / "etc", data)
        save_config(data, {"source": "key-file", "key_file": str(tmp_path / "etc" / "master.key")})
    return data


async def test_a_backup_survives_rotation_and_retirement_of_the_old_master_version(tmp_path):
    data = await _appliance(tmp_path)
    made = backups.create(data, BackupSettings())

    keyring = Keyring(data, load_master(data))
    keyring.rotate_master(actor="test")
    keyring.retire(1, actor="test")

    info = backups.verify(data, made.path)
    assert info.appliance_id == backups.appliance_id(data)
    backups.restore(data, made.path)


async def test_retiring_is_refused_while_backups_still_need_the_old_version(tmp_path):
    data = await _appliance(tmp_path)
    backups.create(data, BackupSettings())
    master = load_master(data)
    master.rotate(actor="test")  # a new version, but nothing re-wrapped yet

    with pytest.raises(Exception, match="still wraps 1 data key"):
        Keyring(data, master).retire(1, actor="test")


class _LegacyWrap:
    """The record backups carried before the keyring was used: the master key directly."""

    def __init__(self, master):
        self.master = master

    def wrap(self, data_key):
        wrapped = self.master.wrap(bytearray(data_key), purpose="backup", actor="test")
        return {"source": "master-key", "key_id": wrapped.key_id, "wrapped": wrapped.to_dict()}


async def test_a_backup_in_the_earlier_master_key_format_still_opens(tmp_path):
    data = await _appliance(tmp_path)
    database, schema = backups.snapshot(data / backups.DATABASE_FILE)
    blob = envelope.seal(
        database,
        appliance_id=backups.appliance_id(data),
        created_at="2026-12-01T00:00:00.000000Z",
        schema_version=schema,
        keys=_LegacyWrap(load_master(data)),
    )
    path = tmp_path / "legacy.cbbak"
    path.write_bytes(blob)

    assert backups.verify(data, path).schema_version == schema


async def test_bytes_appended_to_a_backup_are_refused(tmp_path):
    data = await _appliance(tmp_path, master_key=False)
    made = backups.create(data, BackupSettings())
    extended = tmp_path / "extended.cbbak"
    extended.write_bytes(made.path.read_bytes() + b"hidden payload")

    with pytest.raises(backups.BackupError, match="14 bytes after the backup's end"):
        backups.verify(data, extended)
    assert (
        "bytes after"
        in backups.list_backups(data, BackupSettings(directory=str(tmp_path)))[0].problem
    )


async def test_opening_a_file_that_names_the_development_key_makes_no_key(tmp_path):
    data = await _appliance(tmp_path)
    other = await _appliance(tmp_path / "other", master_key=False)
    foreign = backups.create(other, BackupSettings())  # under the other's development key

    with pytest.raises(backups.BackupError, match="has no development key"):
        backups.verify(data, foreign.path)
    assert not (data / "keys" / DEV_KEY_FILE).exists()
