"""SIGKILL during a backup and during a restore: nothing half-done is ever taken as good.

The backup and the restore run in a child process (the real code, as the CLI
runs it) that is killed at spread-out moments, from before the snapshot to
the final rename. After each kill the database must open (Store.open runs a
quick_check), hold exactly one whole state, and every backup listed must
verify.
"""

import os
import signal
import subprocess
import sys
import time

from appliance.backup import backups
from appliance.config import BackupSettings
from tests.audit_support import open_store

ROWS = 12_000
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_CHILD = """
import sys
from pathlib import Path
from appliance.backup import backups
from appliance.config import BackupSettings
action, data_dir = sys.argv[1], Path(sys.argv[2])
if action == "create":
    backups.create(data_dir, BackupSettings())
else:
    backups.restore(data_dir, Path(sys.argv[3]))
print("done", flush=True)
"""


def _fill(conn, state):
    conn.execute("DELETE FROM settings WHERE key LIKE 'row-%' OR key = 'state'")
    conn.execute("INSERT INTO settings (key, value) VALUES ('state', ?)", (state,))
    # Random-looking values, so the file is big and compresses poorly: a slow backup.
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)"
        " INSERT INTO settings (key, value) SELECT 'row-' || ? || '-' || i, hex(randomblob(800))"
        " FROM n",
        (ROWS, state),
    )


def _state(conn):
    state = conn.execute("SELECT value FROM settings WHERE key = 'state'").fetchall()[0][0]
    rows = conn.execute("SELECT count(*) FROM settings WHERE key LIKE 'row-%'").fetchall()[0][0]
    mixed = conn.execute(
        "SELECT count(*) FROM settings WHERE key LIKE 'row-%' AND key NOT LIKE ?",
        (f"row-{state}-%",),
    ).fetchall()[0][0]
    return state, rows, mixed


def _run_child(*args):
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, *map(str, args)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _timed(*args):
    started = time.monotonic()
    child = _run_child(*args)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err.decode()
    return time.monotonic() - started


def _kill_after(delay, *args):
    child = _run_child(*args)
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=60)
    return child.returncode


async def _set_state(data_dir, state):
    store = await open_store(data_dir)
    await store.write(_fill, state)
    await store.close()


async def _check_state(data_dir):
    store = await open_store(data_dir)  # quick_check runs here
    try:
        state, rows, mixed = await store.read(_state)
        integrity = await store.read(lambda c: c.execute("PRAGMA integrity_check").fetchall())
    finally:
        await store.close()
    assert integrity == [("ok",)]
    assert rows == ROWS and mixed == 0, (state, rows, mixed)
    return state


async def test_sigkill_during_backups_never_leaves_a_bad_backup_listed(tmp_path):
    await _set_state(tmp_path, "A")
    full = _timed("create", tmp_path)

    for step in range(8):
        _kill_after(full * step / 7, "create", tmp_path)
        listed = backups.list_backups(tmp_path, BackupSettings())
        assert all(b.problem is None for b in listed), [b.problem for b in listed]
        assert not any(b.name.endswith(".partial") for b in listed)
        assert await _check_state(tmp_path) == "A"

    # Every backup that is listed restores the whole state.
    for backup in backups.list_backups(tmp_path, BackupSettings()):
        backups.verify(tmp_path, backup.path)


async def test_sigkill_during_restore_leaves_the_old_or_the_new_database_whole(tmp_path):
    await _set_state(tmp_path, "A")
    backup_a = backups.create(tmp_path, BackupSettings())
    await _set_state(tmp_path, "B")
    backup_b = backups.create(tmp_path, BackupSettings())
    full = _timed("restore", tmp_path, backup_a.path)
    backups.restore(tmp_path, backup_b.path)

    # Spread over twice the measured time (a loaded machine runs slower), then
    # aimed at the switch-over: after the restored copy appeared beside the live one.
    kills = [("time", full * step / 6) for step in range(13)]
    kills += [("after copy", delay) for delay in (0.0, 0.01, 0.03, 0.1, 0.3)]
    # On a loaded machine the integrity check of the copy can take seconds:
    # later kills still land inside the restore, after the switch-over.
    kills += [("after copy", delay) for delay in (0.6, 1.2, 2.4, 4.8)]
    seen = set()
    for when, delay in kills:
        _kill_restore(tmp_path, backup_a.path, when, delay)
        state = await _check_state(tmp_path)
        seen.add(state)
        if state == "A":
            backups.restore(tmp_path, backup_b.path)
        if seen == {"A", "B"}:
            break
    # The kills landed both before and after the switch-over.
    assert seen == {"A", "B"}


def _kill_restore(data_dir, backup, when, delay):
    if when == "time":
        return _kill_after(delay, "restore", data_dir, backup)
    restoring = data_dir / (backups.DATABASE_FILE + ".restoring")
    restoring.unlink(missing_ok=True)
    child = _run_child("restore", data_dir, backup)
    deadline = time.monotonic() + 60
    while not restoring.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=60)


_AUDIT_CHILD = """
import sys
import trio
from appliance.core import audit
from appliance.store import Store

async def main(path):
    store = await Store.open(path)
    async def one(n):
        def fn(conn):
            conn.execute("INSERT INTO settings (key, value) VALUES (?, 'x')", (f"ack-{n}",))
            return audit.record(conn, actor="child", action="settings.change",
                                resource_type="setting", resource_id=f"ack-{n}")
        event_id = await store.write(fn)
        print(n, event_id, flush=True)
    n = 0
    while True:
        async with trio.open_nursery() as nursery:
            for _ in range(8):
                nursery.start_soon(one, n)
                n += 1

trio.run(main, sys.argv[1])
"""


async def test_sigkill_while_writing_audited_changes_loses_nothing_acknowledged(tmp_path):
    from appliance.core import audit_chain

    child = subprocess.Popen(
        [sys.executable, "-c", _AUDIT_CHILD, str(tmp_path / "cloudboot.db")],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    time.sleep(2.0)
    child.send_signal(signal.SIGKILL)
    out, _ = child.communicate(timeout=30)
    acknowledged = [line.split() for line in out.decode().splitlines() if line.strip()]
    assert len(acknowledged) > 20, "the child acknowledged too little to test anything"

    store = await open_store(tmp_path)
    keys = await store.read(
        lambda conn: {
            r[0] for r in conn.execute("SELECT key FROM settings WHERE key LIKE 'ack-%'")
        }
    )
    verdict = await store.read(audit_chain.verify, audit_chain.verify_key(tmp_path))
    await store.close()
    assert {f"ack-{n}" for n, _ in acknowledged} <= keys
    assert verdict.ok, verdict.message
    assert verdict.events_checked >= len(acknowledged)
