"""The audit log: append-only schema, hash chain, signed heads, and the verifier's findings."""

import apsw
import pytest
import trio

from appliance.core import audit, audit_chain
from tests.audit_support import DB, add_event, add_events, open_store, tamper


async def _verify(data_dir):
    store = await open_store(data_dir)
    try:
        return await store.read(audit_chain.verify, audit_chain.verify_key(data_dir))
    finally:
        await store.close()


async def _sign(store, data_dir):
    key = audit_chain.signing_key(data_dir)
    return await store.write(audit_chain.sign_head, key)


async def test_a_clean_log_verifies(tmp_path):
    store = await open_store(tmp_path)
    await add_events(store, 20)
    await _sign(store, tmp_path)
    await add_events(store, 5)
    await store.close()

    verdict = await _verify(tmp_path)
    assert verdict.ok, verdict.message
    assert verdict.events_checked == 25
    assert verdict.heads_checked == 1


async def test_concurrent_group_committed_events_still_chain(tmp_path):
    store = await open_store(tmp_path)
    async with trio.open_nursery() as nursery:
        for n in range(300):
            nursery.start_soon(store.write, add_event, n)
    # They shared transactions, so the chain was built inside groups.
    assert store.groups_committed < 300
    await store.close()

    verdict = await _verify(tmp_path)
    assert verdict.ok, verdict.message
    assert verdict.events_checked == 300


async def test_a_failed_write_takes_its_audit_event_with_it(tmp_path):
    store = await open_store(tmp_path)
    await add_events(store, 3)

    def audited_then_fails(conn):
        add_event(conn, 99)
        raise ValueError("the change failed")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(store.write, add_event, 10)
        for _ in range(3):
            nursery.start_soon(_expect_failure, store, audited_then_fails)
        nursery.start_soon(store.write, add_event, 11)
    await store.close()

    verdict = await _verify(tmp_path)
    assert verdict.ok, verdict.message
    assert verdict.events_checked == 5


async def _expect_failure(store, fn):
    with pytest.raises(ValueError):
        await store.write(fn)


async def test_the_schema_refuses_update_and_delete(tmp_path):
    store = await open_store(tmp_path)
    await add_events(store, 2)

    def update(conn):
        conn.execute("UPDATE audit_events SET actor = 'mallory' WHERE id = 1")

    def delete(conn):
        conn.execute("DELETE FROM audit_events WHERE id = 1")

    def forge_grant(conn):
        conn.execute("INSERT INTO audit_prune_grant VALUES (999, '2099-01-01T00:00:00.000000Z')")

    with pytest.raises(apsw.ConstraintError, match="append-only"):
        await store.write(update)
    with pytest.raises(apsw.ConstraintError, match="append-only"):
        await store.write(delete)
    with pytest.raises(apsw.ConstraintError, match="180 days"):
        await store.write(forge_grant)
    await store.close()
    assert (await _verify(tmp_path)).ok


@pytest.mark.parametrize(
    ("attack", "first_bad", "words"),
    [
        ("edit", 7, "edited"),
        ("delete_middle", 7, "missing"),
        ("insert_end", 13, "edited"),
        ("reorder", 5, "edited"),
        ("relink", 7, "does not link"),
    ],
)
async def test_tampering_with_the_file_is_found_and_named(tmp_path, attack, first_bad, words):
    store = await open_store(tmp_path)
    await add_events(store, 12)
    await store.close()

    attacks = {
        "edit": [("UPDATE audit_events SET actor = 'mallory' WHERE id = 7", ())],
        "delete_middle": [("DELETE FROM audit_events WHERE id = 7", ())],
        "insert_end": [
            (
                "INSERT INTO audit_events (id, at, actor, action, resource_type, result,"
                " details, prev_hash, hash) SELECT 13, at, 'mallory', action, resource_type,"
                " result, details, hash, hash FROM audit_events WHERE id = 12",
                (),
            )
        ],
        # Swap the content of events 5 and 6, keeping their ids and hashes in place.
        "reorder": [
            ("UPDATE audit_events SET id = -5 WHERE id = 5", ()),
            ("UPDATE audit_events SET id = 5 WHERE id = 6", ()),
            ("UPDATE audit_events SET id = 6 WHERE id = -5", ()),
        ],
        "relink": [("UPDATE audit_events SET prev_hash = ? WHERE id = 7", ("0" * 64,))],
    }
    tamper(tmp_path / DB, *attacks[attack])

    verdict = await _verify(tmp_path)
    assert not verdict.ok
    assert verdict.first_bad_id == first_bad, verdict.message
    assert words in verdict.message


async def test_a_rewritten_chain_is_caught_by_the_signed_head(tmp_path):
    store = await open_store(tmp_path)
    await add_events(store, 10)
    await _sign(store, tmp_path)
    await store.close()

    # The attacker edits event 4 and recomputes every hash after it: the links
    # all fit again, but event 10 no longer matches the head signed for it.
    conn = apsw.Connection(str(tmp_path / DB))
    conn.execute("DROP TRIGGER audit_events_no_update")
    conn.execute("UPDATE audit_events SET actor = 'mallory' WHERE id = 4")
    prev = conn.execute("SELECT hash FROM audit_events WHERE id = 3").fetchall()[0][0]
    for row in conn.execute("SELECT * FROM audit_events WHERE id >= 4 ORDER BY id").fetchall():
        columns = row[:10]
        new_hash = audit.link_hash(prev, columns)
        conn.execute(
            "UPDATE audit_events SET prev_hash = ?, hash = ? WHERE id = ?",
            (prev, new_hash, columns[0]),
        )
        prev = new_hash
    conn.close()

    verdict = await _verify(tmp_path)
    assert not verdict.ok
    assert verdict.first_bad_id == 10
    assert "rewritten" in verdict.message


async def test_events_cut_off_the_end_are_caught_by_the_signed_head(tmp_path):
    store = await open_store(tmp_path)
    await add_events(store, 10)
    await _sign(store, tmp_path)
    await store.close()

    tamper(tmp_path / DB, ("DELETE FROM audit_events WHERE id > 8", ()))

    verdict = await _verify(tmp_path)
    assert not verdict.ok
    assert verdict.first_bad_id == 9
    assert "missing" in verdict.message


async def test_a_forged_head_is_caught(tmp_path):
    store = await open_store(tmp_path)
    await add_events(store, 4)
    await _sign(store, tmp_path)
    await store.close()

    tamper(tmp_path / DB, ("UPDATE audit_heads SET event_hash = ? WHERE id = 1", ("ab" * 32,)))

    verdict = await _verify(tmp_path)
    assert not verdict.ok
    assert "signature" in verdict.message


async def test_signing_key_is_private_and_stable(tmp_path):
    key = audit_chain.signing_key(tmp_path)
    path = tmp_path / "keys" / audit_chain.SIGNING_KEY_FILE
    assert path.stat().st_mode & 0o777 == 0o400
    assert audit_chain.signing_key(tmp_path).encode() == key.encode()
    assert audit_chain.verify_key(tmp_path).encode() == key.verify_key.encode()


async def test_events_written_before_the_chain_are_sealed_once(tmp_path):
    store = await open_store(tmp_path)
    await add_events(store, 3)
    await store.close()
    # A database from before schema 0003: events without links.
    tamper(tmp_path / DB, ("UPDATE audit_events SET prev_hash = NULL, hash = NULL", ()))
    conn = apsw.Connection(str(tmp_path / DB))
    conn.execute(open_trigger_sql())
    conn.close()

    store = await open_store(tmp_path)
    await add_events(store, 2)
    await store.close()
    verdict = await _verify(tmp_path)
    assert verdict.ok, verdict.message
    assert verdict.events_checked == 5


def open_trigger_sql():
    from appliance.store import migrations

    sql = next(m.sql for m in migrations.load() if m.name == "audit_chain")
    start = sql.index("CREATE TRIGGER audit_events_no_update")
    return sql[start : sql.index("END;", start) + 4]


async def test_the_head_is_signed_at_intervals_and_only_when_it_moved(tmp_path):
    store = await open_store(tmp_path)
    await add_events(store, 3)

    def signed(conn):
        return [row[0] for row in conn.execute("SELECT event_id FROM audit_heads ORDER BY id")]

    async def until_signed(event_id):
        # Waits on what happened, not on wall time: the machine may be slow.
        with trio.fail_after(30):
            while event_id not in await store.read(signed):
                await trio.sleep(0.02)
        # Several more intervals with nothing new: no further head may appear.
        await trio.sleep(0.3)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(audit_chain.sign_heads_forever, store, tmp_path, 0.05)
        await until_signed(3)
        await add_events(store, 2)
        await until_signed(5)
        nursery.cancel_scope.cancel()
    heads = [(event_id,) for event_id in await store.read(signed)]
    await store.close()
    # One head per position the chain reached, not one per interval.
    assert [h[0] for h in heads] == [3, 5]
    assert (await _verify(tmp_path)).ok
