"""The data disk fills up: writes fail with a clear error, nothing is lost, service resumes.

The data directory is a 2 MiB tmpfs mounted by the test (root only), filled
with a filler file while the store is open, then freed again.
"""

import os
import subprocess

import pytest

from appliance.backup import backups
from appliance.config import BackupSettings
from appliance.core import audit_chain
from appliance.store import StorageFullError
from tests.audit_support import add_event, open_store


@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "data"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(path):
    with open(path, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


def _change(conn, n):
    conn.execute("INSERT INTO settings (key, value) VALUES (?, ?)", (f"k{n}", "v" * 2000))
    add_event(conn, n)


def _keys(conn):
    return {r[0] for r in conn.execute("SELECT key FROM settings WHERE key LIKE 'k%'")}


async def test_a_full_disk_fails_writes_clearly_and_service_resumes(small_disk):
    store = await open_store(small_disk)
    acknowledged = set()
    for n in range(40):
        await store.write(_change, n)
        acknowledged.add(f"k{n}")

    _fill(small_disk / "filler")
    failures = []
    for n in range(40, 400):
        try:
            await store.write(_change, n)
            acknowledged.add(f"k{n}")
        except StorageFullError as e:
            failures.append(str(e))
    assert failures, "the disk never filled up"
    assert "is full" in failures[0] and "free space" in failures[0]

    # A backup on the full disk fails and leaves nothing that looks like a backup.
    with pytest.raises(backups.BackupError):
        backups.create(small_disk, BackupSettings())
    assert backups.list_backups(small_disk, BackupSettings()) == []

    # Space returns: the same running store writes again, no restart.
    (small_disk / "filler").unlink()
    await store.write(_change, 1000)
    acknowledged.add("k1000")

    assert await store.read(_keys) == acknowledged
    integrity = await store.read(lambda conn: conn.execute("PRAGMA integrity_check").fetchall())
    assert integrity == [("ok",)]
    verdict = await store.read(audit_chain.verify, audit_chain.verify_key(small_disk))
    assert verdict.ok, verdict.message
    await store.close()

    # And after a restart everything acknowledged is still there.
    store = await open_store(small_disk)
    assert await store.read(_keys) == acknowledged
    await store.close()
