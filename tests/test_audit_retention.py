"""Audit retention: 180 days minimum, archive before prune, the chain verifies across the cut."""

import pytest

from appliance.config import Settings
from appliance.core import audit, audit_chain, audit_retention
from tests.audit_support import add_events, open_store

OLD = "2020-01-01T00:00:00.000000Z"


def _settings(data_dir, days=180):
    settings = Settings()
    settings.server.data_dir = str(data_dir)
    settings.audit.retention_days = days
    return settings


async def _seed_old_then_new(store, monkeypatch, old=8, new=5):
    monkeypatch.setattr(audit, "now", lambda: OLD)
    await add_events(store, old, actor="old")
    monkeypatch.undo()
    await add_events(store, new, actor="new")


async def test_retention_below_180_days_is_refused(tmp_path):
    store = await open_store(tmp_path)
    for days in (0, 30, 179):
        with pytest.raises(audit_retention.RetentionError, match="at least 180"):
            await audit_retention.archive_and_prune(store, _settings(tmp_path, days))
    await store.close()


async def test_old_events_are_archived_pruned_and_the_chain_still_verifies(tmp_path, monkeypatch):
    store = await open_store(tmp_path)
    await _seed_old_then_new(store, monkeypatch)
    key = audit_chain.signing_key(tmp_path)
    await store.write(audit_chain.sign_head, key)

    summary = await audit_retention.archive_and_prune(store, _settings(tmp_path))
    assert (summary["first_id"], summary["last_id"]) == (1, 8)

    remaining = await store.read(lambda conn: audit.search(conn, limit=100)[0])
    assert {e["actor"] for e in remaining} == {"new", "appliance"}
    assert remaining[0]["action"] == "audit.prune"

    verdict = await store.read(audit_chain.verify, audit_chain.verify_key(tmp_path))
    assert verdict.ok, verdict.message

    # The archive holds exactly the pruned events, and its last hash is the signed cut.
    archived = audit_retention.read_archive(tmp_path, summary["archive"])
    assert [e["id"] for e in archived] == list(range(1, 9))
    assert all(e["actor"] == "old" for e in archived)
    cut = await store.read(
        lambda conn: conn.execute(
            "SELECT event_hash FROM audit_heads WHERE kind='prune'"
        ).fetchall()[0][0]
    )
    assert archived[-1]["hash"] == cut

    # Nothing left to prune: a second run does nothing; new events still chain.
    assert await audit_retention.archive_and_prune(store, _settings(tmp_path)) is None
    await add_events(store, 3)
    verdict = await store.read(audit_chain.verify, audit_chain.verify_key(tmp_path))
    assert verdict.ok, verdict.message
    await store.close()


async def test_young_events_behind_an_old_one_are_not_pruned(tmp_path, monkeypatch):
    store = await open_store(tmp_path)
    await add_events(store, 2, actor="new")
    monkeypatch.setattr(audit, "now", lambda: OLD)
    await add_events(store, 2, actor="old-clock")
    monkeypatch.undo()

    # Only a prefix of the chain may go: the young first events keep the rest.
    assert await audit_retention.archive_and_prune(store, _settings(tmp_path)) is None
    assert len(await store.read(lambda conn: audit.search(conn)[0])) == 4
    await store.close()


async def test_a_wrong_key_cannot_open_the_archive(tmp_path, monkeypatch):
    store = await open_store(tmp_path)
    await _seed_old_then_new(store, monkeypatch, old=3, new=1)
    summary = await audit_retention.archive_and_prune(store, _settings(tmp_path))
    await store.close()

    (tmp_path / "keys" / "dev-backup.key").chmod(0o600)
    (tmp_path / "keys" / "dev-backup.key").write_text("11" * 32 + "\n")
    with pytest.raises(audit_retention.RetentionError, match="cannot open audit archive"):
        audit_retention.read_archive(tmp_path, summary["archive"])


async def test_events_not_yet_forwarded_are_kept(tmp_path, monkeypatch):
    from appliance.core import audit_forward

    store = await open_store(tmp_path)
    await _seed_old_then_new(store, monkeypatch, old=6, new=1)
    settings = _settings(tmp_path)
    settings.audit.forward_target = "tls://127.0.0.1:6514"
    target = audit_forward.parse_target(settings.audit.forward_target).name

    # The collector has acknowledged nothing: nothing may go.
    assert await audit_retention.archive_and_prune(store, settings) is None
    await store.write(audit_forward.advance, target, 4)
    summary = await audit_retention.archive_and_prune(store, settings)
    assert (summary["first_id"], summary["last_id"]) == (1, 4)
    await store.close()


async def test_an_archive_verifies_against_its_signed_checkpoint(tmp_path, monkeypatch):
    import trio

    from appliance.core import audit_cli

    store = await open_store(tmp_path)
    await _seed_old_then_new(store, monkeypatch, old=5, new=1)
    summary = await audit_retention.archive_and_prune(store, _settings(tmp_path))
    await store.close()

    def verify():
        return audit_cli.audit_verify_archive(tmp_path, _settings(tmp_path), summary["archive"])

    assert await trio.to_thread.run_sync(verify) == 5

    # An archive whose events were changed (and re-sealed with the same key) fails.
    events = audit_retention.read_archive(tmp_path, summary["archive"])
    events[2]["actor"] = "mallory"
    monkeypatch.setattr(audit_retention, "read_archive", lambda *_: events)
    with pytest.raises(audit_cli.AuditCliError, match="event 3 was edited"):
        await trio.to_thread.run_sync(verify)
