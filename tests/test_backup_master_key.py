"""Backups under the appliance's master key (keys/) once `keys init` has configured one."""

import pytest

from appliance.backup import backups
from appliance.config import BackupSettings
from keys.master import save_config
from tests.audit_support import open_store
from tests.keys_support import make_key_file


def _put(conn, key):
    conn.execute("INSERT INTO settings (key, value) VALUES (?, 'x')", (key,))


def _keys(conn):
    return {r[0] for r in conn.execute("SELECT key FROM settings WHERE key LIKE 'k-%'")}


def _init_key_file(secrets_dir, data_dir, name="master.key"):
    secrets_dir.mkdir(exist_ok=True)
    master = make_key_file(secrets_dir, data_dir) if name == "master.key" else None
    save_config(data_dir, {"source": "key-file", "key_file": str(secrets_dir / name)})
    return master


async def test_backups_use_the_master_key_and_old_dev_backups_still_restore(tmp_path):
    data = tmp_path / "data"
    store = await open_store(data)
    await store.write(_put, "k-dev")
    await store.close()
    dev_backup = backups.create(data, BackupSettings())
    assert dev_backup.key_id.startswith("dev-")

    master = _init_key_file(tmp_path / "etc", data)
    store = await open_store(data)
    await store.write(_put, "k-master")
    await store.close()
    master_backup = backups.create(data, BackupSettings())
    assert master_backup.key_id == master.key_id

    backups.restore(data, dev_backup.path)
    store = await open_store(data)
    assert await store.read(_keys) == {"k-dev"}
    await store.close()

    backups.restore(data, master_backup.path)
    store = await open_store(data)
    assert await store.read(_keys) == {"k-dev", "k-master"}
    await store.close()


async def test_a_backup_under_another_master_key_is_refused(tmp_path):
    data = tmp_path / "data"
    store = await open_store(data)
    await store.close()
    _init_key_file(tmp_path / "etc", data)
    made = backups.create(data, BackupSettings())

    # The master key is replaced by an unrelated one (a different appliance's).
    (data / "keys" / "master.json").unlink()
    _init_key_file(tmp_path / "etc2", data)
    with pytest.raises(backups.BackupError, match="cannot be decrypted with this appliance's key"):
        backups.restore(data, made.path)
