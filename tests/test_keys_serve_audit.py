"""The running appliance's key use goes into its audit log (appliance/key_audit.py).

ApplianceKeyAudit takes keys/ events from the trio thread (queued for its
writer task), from trio worker threads and from plain threads (each waits for
its commit); events still queued at shutdown are written by drain(); when the
store refuses, the event goes to keys/access.log and is not lost.
PendingAudit keeps a backup command's events until the store may be opened.
"""

import threading

import trio

from appliance.config import StoreSettings
from appliance.key_audit import ApplianceKeyAudit, PendingAudit, appliance_keyring
from keys import audit as key_events
from keys.audit import AccessLog
from keys.master import load_master, save_config
from tests.audit_support import open_store
from tests.keys_support import make_key_file


def unwrap_event(actor, purpose="test"):
    return key_events.event(
        "unwrap", actor=actor, key_id="keyfile-0000", version=1, purpose=purpose
    )


async def key_rows(store):
    def query(conn):
        return conn.execute(
            "SELECT actor, action, resource_type, resource_id, result, source, details"
            " FROM audit_events WHERE action LIKE 'key.%' ORDER BY id"
        ).fetchall()

    return await store.read(query)


async def test_events_from_the_trio_thread_and_from_threads_are_committed(tmp_path):
    store = await open_store(tmp_path)
    sink = ApplianceKeyAudit(tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(sink.run, store)
        sink(unwrap_event("trio-thread"))
        await trio.to_thread.run_sync(sink, unwrap_event("worker-thread"))
        plain = threading.Thread(target=sink, args=(unwrap_event("plain-thread"),))
        await trio.to_thread.run_sync(lambda: (plain.start(), plain.join()))
        # The worker and plain threads returned only after their commit; the
        # trio thread's event is written by the writer task, drained here.
        await sink.drain()
        nursery.cancel_scope.cancel()

    rows = await key_rows(store)
    await store.close()
    assert sorted(row[0] for row in rows) == ["plain-thread", "trio-thread", "worker-thread"]
    for _, action, resource_type, resource_id, result, source, details in rows:
        assert (action, resource_type, resource_id, result) == (
            "key.unwrap",
            "key",
            "keyfile-0000",
            "ok",
        )
        assert source == "appliance"
        assert '"purpose": "test"' in details and '"version": 1' in details
    assert not (tmp_path / "keys" / "access.log").exists()


async def test_events_queued_at_shutdown_are_drained_into_the_store(tmp_path):
    store = await open_store(tmp_path)
    sink = ApplianceKeyAudit(tmp_path)
    for n in range(3):
        sink(unwrap_event(f"early-{n}"))  # before the writer task ever ran
    await sink.drain(store)
    rows = await key_rows(store)
    await store.close()
    assert [row[0] for row in rows] == ["early-0", "early-1", "early-2"]


async def test_an_event_the_store_refuses_goes_to_access_log(tmp_path):
    store = await open_store(tmp_path)
    sink = ApplianceKeyAudit(tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(sink.run, store)
        await store.close()  # the store is gone: every write is refused
        await trio.to_thread.run_sync(sink, unwrap_event("after-close"))
        nursery.cancel_scope.cancel()

    logged = AccessLog(tmp_path).read()
    assert [record["actor"] for record in logged] == ["after-close"]
    assert logged[0]["action"] == "key.unwrap" and logged[0]["store_unavailable"]


async def test_the_appliance_keyring_records_every_unwrap(tmp_path):
    data = tmp_path / "data"
    secrets_dir = tmp_path / "etc"
    secrets_dir.mkdir()
    make_key_file(secrets_dir, data).close()
    save_config(data, {"source": "key-file", "key_file": str(secrets_dir / "master.key")})
    store = await open_store(data)
    sink = ApplianceKeyAudit(data)
    master = load_master(data, sink)
    async with trio.open_nursery() as nursery:
        await nursery.start(sink.run, store)
        keyring = appliance_keyring(data, master, sink)
        blob = await trio.to_thread.run_sync(keyring.seal, "bmc", b"ipmi password", b"m-1")
        assert await trio.to_thread.run_sync(keyring.open, blob, b"m-1") == b"ipmi password"
        nursery.cancel_scope.cancel()

    rows = await key_rows(store)
    await store.close()
    actions = [row[1] for row in rows]
    # A new data key is wrapped once, then unwrapped for the seal and the open.
    assert actions == ["key.wrap", "key.unwrap", "key.unwrap"]
    assert {row[0] for row in rows} == {"appliance"}
    assert "seal:bmc" in rows[1][6] and "open bmc-" in rows[2][6]


def test_pending_events_are_committed_after_the_command(tmp_path):
    async def make_store():
        store = await open_store(tmp_path)
        await store.close()

    trio.run(make_store)
    pending = PendingAudit()
    pending(unwrap_event("local:root", purpose="open backups-1"))
    assert pending.commit_to(tmp_path, StoreSettings()) == 1

    async def read():
        store = await open_store(tmp_path)
        try:
            return await key_rows(store)
        finally:
            await store.close()

    rows = trio.run(read)
    assert [(row[0], row[1], row[5]) for row in rows] == [("local:root", "key.unwrap", "cli")]
