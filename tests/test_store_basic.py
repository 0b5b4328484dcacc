"""The store: migrations, group commit, isolation of a failing write, reopen."""

import apsw
import pytest
import trio

from appliance.config import StoreSettings
from appliance.store import APPLIANCE_ID_FILE, SchemaError, Store, StoreError
from appliance.store import migrations as migrations_module
from appliance.store._migrate import migrate


def _put(conn, key, value):
    conn.execute("INSERT INTO settings (key, value) VALUES (?, ?)", (key, value))
    return key


def _count_keys(conn, prefix):
    rows = conn.execute("SELECT count(*) FROM settings WHERE key LIKE ?", (prefix + "%",))
    return rows.fetchall()[0][0]


def _integrity(conn):
    return conn.execute("PRAGMA integrity_check").fetchall()


async def test_500_concurrent_writes_are_all_present_after_reopen(tmp_path):
    path = tmp_path / "store.db"
    store = await Store.open(path, StoreSettings(read_connections=3))

    async with trio.open_nursery() as nursery:
        for i in range(500):
            nursery.start_soon(store.write, _put, f"k{i:03d}", str(i))

    assert await store.read(_count_keys, "k") == 500
    # Concurrent writes shared transactions: fewer commits than writes.
    assert store.groups_committed < 500
    await store.close()

    again = await Store.open(path)
    assert await again.read(_count_keys, "k") == 500
    assert await again.read(_integrity) == [("ok",)]
    await again.close()


async def test_a_failing_member_gets_its_error_and_neighbours_commit(tmp_path):
    store = await Store.open(tmp_path / "store.db", StoreSettings(group_commit_window_ms=50))

    def _bad(conn):
        conn.execute("INSERT INTO settings (key, value) VALUES ('half-done', 'x')")
        raise ValueError("this write is refused")

    outcomes = {}

    async def attempt(name, fn, *args):
        try:
            outcomes[name] = await store.write(fn, *args)
        except Exception as e:
            outcomes[name] = e

    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(attempt, f"good{i}", _put, f"good{i}", "v")
        nursery.start_soon(attempt, "bad", _bad)
        # A constraint violation (duplicate key) is refused alone as well.
        nursery.start_soon(attempt, "dup", _put, "good0", "again")

    assert isinstance(outcomes["bad"], ValueError)
    assert "refused" in str(outcomes["bad"])
    # They shared transactions: the savepoints, not solo re-runs, kept the neighbours.
    assert store.groups_committed < 10, store.groups_committed
    # Whichever of the two same-key writes ran second got the constraint error.
    refused = [o for o in (outcomes["dup"], outcomes["good0"]) if isinstance(o, apsw.Error)]
    assert len(refused) == 1 and isinstance(refused[0], apsw.ConstraintError)
    assert await store.read(_count_keys, "good") == 20
    assert await store.read(_count_keys, "half-done") == 0
    await store.close()


async def test_write_functions_see_their_own_group_members(tmp_path):
    store = await Store.open(tmp_path / "store.db")
    await store.write(_put, "a", "1")

    def _read_back(conn):
        return conn.execute("SELECT value FROM settings WHERE key = 'a'").fetchall()[0][0]

    assert await store.write(_read_back) == "1"
    await store.close()


async def test_pragmas_wal_full_sync_foreign_keys(tmp_path):
    store = await Store.open(tmp_path / "store.db")

    def _pragmas(conn):
        return {
            name: conn.execute(f"PRAGMA {name}").fetchall()[0][0]
            for name in ("journal_mode", "synchronous", "foreign_keys")
        }

    # synchronous 2 is FULL.
    assert await store.write(_pragmas) == {
        "journal_mode": "wal",
        "synchronous": 2,
        "foreign_keys": 1,
    }
    await store.close()


async def test_reads_cannot_write(tmp_path):
    store = await Store.open(tmp_path / "store.db")
    with pytest.raises(apsw.ReadOnlyError):
        await store.read(_put, "sneaky", "x")
    await store.close()


async def test_appliance_id_is_made_once_and_kept(tmp_path):
    path = tmp_path / "data" / "store.db"
    store = await Store.open(path)
    first = store.appliance_id
    await store.close()

    assert (path.parent / APPLIANCE_ID_FILE).read_text().strip() == first
    assert len(first) == 32

    again = await Store.open(path)
    assert again.appliance_id == first

    def _from_settings(conn):
        rows = conn.execute("SELECT value FROM settings WHERE key = 'appliance_id'")
        return rows.fetchall()[0][0]

    assert await again.read(_from_settings) == first
    await again.close()

    # Losing the file does not change the id: the settings table still has it.
    (path.parent / APPLIANCE_ID_FILE).unlink()
    third = await Store.open(path)
    assert third.appliance_id == first
    await third.close()


async def test_closed_store_refuses_writes(tmp_path):
    store = await Store.open(tmp_path / "store.db")
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        await store.write(_put, "late", "x")


def test_migrations_are_applied_once_in_order(tmp_path):
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE one (x);")
    (tmp_path / "0002_second.sql").write_text("CREATE TABLE two (x REFERENCES one);")
    conn = apsw.Connection(str(tmp_path / "m.db"))

    available = migrations_module.load(tmp_path)
    assert [(m.number, m.name) for m in available] == [(1, "first"), (2, "second")]
    assert migrate(conn, "t", available) == [1, 2]
    assert migrate(conn, "t", available) == []

    (tmp_path / "0003_broken.sql").write_text("CREATE TABLE three (x); NOT SQL;")
    with pytest.raises(SchemaError, match="0003_broken"):
        migrate(conn, "t", migrations_module.load(tmp_path))
    # The broken migration left nothing behind.
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "three" not in tables


def test_a_database_newer_than_the_software_is_refused(tmp_path):
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE one (x);")
    conn = apsw.Connection(str(tmp_path / "m.db"))
    migrate(conn, "t", migrations_module.load(tmp_path))
    conn.execute("INSERT INTO schema_version VALUES (7, 'future', 't')")
    with pytest.raises(SchemaError, match=r"\[7\]"):
        migrate(conn, "t", migrations_module.load(tmp_path))


def test_duplicate_or_misnamed_migrations_are_refused(tmp_path):
    (tmp_path / "0001_a.sql").write_text("")
    (tmp_path / "0001_b.sql").write_text("")
    with pytest.raises(migrations_module.MigrationListError, match="share number 1"):
        migrations_module.load(tmp_path)

    (tmp_path / "0001_b.sql").unlink()
    (tmp_path / "2_jobs.sql").write_text("")
    with pytest.raises(migrations_module.MigrationListError, match="NNNN_name"):
        migrations_module.load(tmp_path)


async def test_a_member_that_loses_the_transaction_does_not_lose_the_others(tmp_path):
    # Ending the transaction from inside stands in for SQLite rolling it back
    # on SQLITE_FULL or SQLITE_IOERR: the group is then re-run member by member.
    store = await Store.open(tmp_path / "store.db", StoreSettings(group_commit_window_ms=50))

    def _loses_transaction(conn):
        if not conn.getautocommit():
            conn.execute("ROLLBACK")
        raise RuntimeError("disk trouble")

    outcomes = {}

    async def attempt(name, fn, *args):
        try:
            outcomes[name] = await store.write(fn, *args)
        except Exception as e:
            outcomes[name] = e

    async with trio.open_nursery() as nursery:
        for i in range(10):
            nursery.start_soon(attempt, f"g{i}", _put, f"g{i}", "v")
        nursery.start_soon(attempt, "lost", _loses_transaction)

    assert isinstance(outcomes["lost"], RuntimeError)
    assert [outcomes[f"g{i}"] for i in range(10)] == [f"g{i}" for i in range(10)]
    assert await store.read(_count_keys, "g") == 10
    await store.close()
