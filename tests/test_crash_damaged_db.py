"""A damaged database file is found at start, with a message that says how to restore."""

import pytest

from appliance.backup import backups
from appliance.config import BackupSettings
from appliance.store import StoreError
from tests.audit_support import DB, add_events, open_store


def _put(conn, key):
    conn.execute("INSERT INTO settings (key, value) VALUES (?, ?)", (key, "v" * 500))


async def _make(data_dir):
    store = await open_store(data_dir)
    for n in range(200):
        await store.write(_put, f"k{n}")
    await add_events(store, 20)
    await store.close()


def _damage_pages(path):
    data = bytearray(path.read_bytes())
    page = 4096
    for number in range(2, min(8, len(data) // page)):
        data[number * page : number * page + 100] = b"\xa5" * 100
    path.write_bytes(bytes(data))


def _damage_header(path):
    data = bytearray(path.read_bytes())
    data[:16] = b"not a database!!"
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_damage_pages, _damage_header])
async def test_damage_is_reported_at_start_with_the_way_to_restore(tmp_path, damage):
    await _make(tmp_path)
    backup = backups.create(tmp_path, BackupSettings())
    # Fold the WAL into the file, so the damage hits the pages the store reads.
    store = await open_store(tmp_path)
    await store.close()
    damage(tmp_path / DB)

    with pytest.raises(StoreError) as caught:
        await open_store(tmp_path)
    message = str(caught.value)
    assert "damaged" in message
    assert "cloudboot backup restore" in message

    backups.restore(tmp_path, backup.path)
    store = await open_store(tmp_path)
    count = await store.read(lambda c: c.execute("SELECT count(*) FROM settings").fetchall())
    assert count[0][0] >= 200
    await store.close()
