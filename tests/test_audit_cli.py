"""`cloudboot audit verify|query|export|prune` as the CLI calls them: output, errors, audit."""

import csv
import functools
import io
import json

import pytest
import trio

from appliance.config import Settings
from appliance.core import audit, audit_cli
from tests.audit_support import DB, add_events, open_store, tamper


async def cli(fn, *args, **kwargs):
    """A CLI function runs its own trio.run, so it runs in a worker thread here."""
    return await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


def _settings(data_dir):
    settings = Settings()
    settings.server.data_dir = str(data_dir)
    return settings


async def _seed(data_dir):
    store = await open_store(data_dir)
    await add_events(store, 6, actor="alice")
    await add_events(store, 4, actor="bob", action="job.create")
    await store.close()


async def test_verify_prints_the_verdict_and_fails_on_tampering(tmp_path, capsys):
    await _seed(tmp_path)
    await cli(audit_cli.audit_verify, tmp_path, _settings(tmp_path))
    assert "audit log verified: 10 events" in capsys.readouterr().out

    tamper(tmp_path / DB, ("UPDATE audit_events SET details = '{}' WHERE id = 3", ()))
    with pytest.raises(audit_cli.AuditCliError, match="FAILED at event 3: event 3 was edited"):
        await cli(audit_cli.audit_verify, tmp_path, _settings(tmp_path))


async def test_query_pages_and_is_audited(tmp_path, capsys):
    await _seed(tmp_path)
    next_id = await cli(
        audit_cli.audit_query, tmp_path, _settings(tmp_path), actor="alice", limit=4
    )
    out = capsys.readouterr().out
    assert out.count("alice") == 4 and "--before-id" in out
    await cli(
        audit_cli.audit_query,
        tmp_path,
        _settings(tmp_path),
        actor="alice",
        limit=4,
        before_id=next_id,
        as_json=True,
    )
    rest = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["id"] for e in rest] == [2, 1]

    store = await open_store(tmp_path)
    reads = await store.read(lambda conn: audit.search(conn, action="audit.read")[0])
    await store.close()
    assert len(reads) == 2 and reads[0]["actor"].startswith("local:")
    assert reads[0]["details"]["filters"]["actor"] == "alice"


async def test_bad_times_are_refused_in_one_line(tmp_path):
    await _seed(tmp_path)
    with pytest.raises(audit_cli.AuditCliError, match="--since must be a UTC date"):
        await cli(audit_cli.audit_query, tmp_path, _settings(tmp_path), since="last week")


async def test_export_csv_and_json_lines(tmp_path):
    await _seed(tmp_path)
    out = tmp_path / "export.csv"
    count = await cli(
        audit_cli.audit_export,
        tmp_path,
        _settings(tmp_path),
        fmt="csv",
        output=str(out),
        action="job.create",
    )
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert count == 4 and [int(r["id"]) for r in rows] == [7, 8, 9, 10]
    assert rows[0]["actor"] == "bob" and len(rows[0]["hash"]) == 64

    out = tmp_path / "export.jsonl"
    await cli(
        audit_cli.audit_export,
        tmp_path,
        _settings(tmp_path),
        output=str(out),
        since="2000-01-01",
        until="2999-01-01T00:00:00",
    )
    events = [json.loads(line) for line in out.read_text().splitlines()]
    # The earlier export's own audit event is in this one.
    assert [e["id"] for e in events] == list(range(1, 12))
    assert events[-1]["action"] == "audit.export"

    with pytest.raises(audit_cli.AuditCliError, match="format must be one of"):
        await cli(audit_cli.audit_export, tmp_path, _settings(tmp_path), fmt="xml")


async def test_prune_refuses_a_short_retention(tmp_path):
    await _seed(tmp_path)
    settings = _settings(tmp_path)
    settings.audit.retention_days = 90
    with pytest.raises(audit_cli.AuditCliError, match="at least 180"):
        await cli(audit_cli.audit_prune, tmp_path, settings)
    settings.audit.retention_days = 365
    assert await cli(audit_cli.audit_prune, tmp_path, settings) is None
