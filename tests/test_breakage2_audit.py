"""Adversarial review of the audit chain verifier: events it did not look at.

The attacker edits the database file directly (tests/audit_support.tamper drops the
append-only triggers first, as sqlite3 on the appliance would let them).
"""

from appliance.config import Settings
from appliance.core import audit, audit_chain, audit_retention
from tests.audit_support import DB, add_events, open_store, tamper

FORGED_DETAILS = '{"note": "forged"}'


async def _verify(data_dir):
    store = await open_store(data_dir)
    try:
        return await store.read(audit_chain.verify, audit_chain.verify_key(data_dir))
    finally:
        await store.close()


def _forged_event(event_id, prev_hash):
    row = (
        event_id,
        "2026-01-01T00:00:00.000000Z",
        "mallory",
        "machine.approve",
        "machine",
        "m-forged",
        "ok",
        None,
        "cli",
        FORGED_DETAILS,
    )
    sql = (
        f"INSERT INTO audit_events ({', '.join(audit.COLUMNS)}, prev_hash, hash)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    return sql, (*row, prev_hash, audit.link_hash(prev_hash, row))


async def test_an_event_inserted_before_the_first_id_is_found(tmp_path):
    store = await open_store(tmp_path)
    await add_events(store, 5)
    await store.write(audit_chain.sign_head, audit_chain.signing_key(tmp_path))
    await store.close()

    tamper(tmp_path / DB, _forged_event(0, audit.GENESIS))

    verdict = await _verify(tmp_path)
    assert not verdict.ok, verdict.message
    assert verdict.first_bad_id == 0
    assert "event 0" in verdict.message


async def test_an_event_inserted_below_the_prune_cut_is_found(tmp_path, monkeypatch):
    store = await open_store(tmp_path)
    monkeypatch.setattr(audit, "now", lambda: "2020-01-01T00:00:00.000000Z")
    await add_events(store, 6, actor="old")
    monkeypatch.undo()
    await add_events(store, 4)
    settings = Settings()
    settings.server.data_dir = str(tmp_path)
    summary = await audit_retention.archive_and_prune(store, settings)
    assert summary["last_id"] == 6
    await store.write(audit_chain.sign_head, audit_chain.signing_key(tmp_path))
    await store.close()
    assert (await _verify(tmp_path)).ok

    # A fabricated "historic" event slipped in where the pruned ones were: exports and
    # searches show it, so the verifier must not pass over it.
    tamper(tmp_path / DB, _forged_event(3, audit.GENESIS))

    verdict = await _verify(tmp_path)
    assert not verdict.ok, verdict.message
    assert verdict.first_bad_id == 3
    assert "prune" in verdict.message
