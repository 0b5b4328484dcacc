"""`cloudboot audit verify|query|export|prune`: plain functions the CLI calls.

Each takes the data directory and the loaded Settings (plus the command's
options), prints its result, and raises AuditCliError with one line for the
operator. Reading the audit log is itself audited (action "audit.read" or
"audit.export"), in the same way as through the API.
"""

import csv
import datetime
import getpass
import io
import json
import sys
from pathlib import Path

import trio

from appliance.core import audit, audit_chain, audit_retention
from appliance.store import SchemaError, Store, StoreError

DATABASE_FILE = "cloudboot.db"
FORMATS = ("jsonl", "csv")
CSV_FIELDS = (*audit.COLUMNS, "prev_hash", "hash")


class AuditCliError(Exception):
    """What the operator asked cannot be done, or the log failed verification."""


def operator():
    try:
        return f"local:{getpass.getuser()}"
    except (KeyError, OSError):
        return "local:unknown"


def parse_time(text, name):
    """'2026-05-01' or '2026-05-01T10:00:00' (UTC) as the text the schema stores, or None."""
    if text is None:
        return None
    try:
        value = datetime.datetime.fromisoformat(text.removesuffix("Z"))
    except ValueError:
        raise AuditCliError(
            f"{name} must be a UTC date or time like 2026-05-01 or 2026-05-01T10:00:00, "
            f"got {text!r}"
        ) from None
    if value.tzinfo is not None:
        value = value.astimezone(datetime.UTC).replace(tzinfo=None)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def filters_from(
    actor=None, action=None, resource_type=None, resource_id=None, since=None, until=None
):
    return {
        "actor": actor,
        "action": action,
        "resource_type": resource_type,
        "resource_id": resource_id,
        "since": parse_time(since, "--since"),
        "until": parse_time(until, "--until"),
    }


def audit_verify(data_dir, settings):
    """Check the whole chain; prints the verdict, raises AuditCliError when it fails."""
    trusted = _trusted_key(data_dir)
    verdict = trio.run(_with_store, data_dir, settings, _verify_and_record, trusted)
    if not verdict.ok:
        raise AuditCliError(
            f"audit log verification FAILED at event {verdict.first_bad_id}: {verdict.message}"
        )
    print(f"audit log verified: {verdict.message}")
    return verdict


async def _verify_and_record(store, trusted):
    verdict = await store.read(audit_chain.verify, trusted)
    await store.write(
        _record_read, "audit.verify", {"ok": verdict.ok, "first_bad_id": verdict.first_bad_id}
    )
    return verdict


def audit_query(data_dir, settings, *, limit=50, before_id=None, as_json=False, **filters):
    """Print one page of events (newest first) matching the filters; returns the next cursor."""
    wanted = filters_from(**filters)
    found, next_id = trio.run(_with_store, data_dir, settings, _query, wanted, limit, before_id)
    for event in found:
        if as_json:
            print(json.dumps(event, sort_keys=True))
        else:
            print(
                f"{event['id']:>8} {event['at']} {event['actor']:16} {event['action']:24} "
                f"{event['resource_type']}/{event['resource_id'] or '-'} {event['result']}"
            )
    if next_id is not None and not as_json:
        print(f"(more: repeat with --before-id {next_id})")
    return next_id


async def _query(store, wanted, limit, before_id):
    page = await store.read(
        lambda conn: audit.search(conn, limit=limit, before_id=before_id, **wanted)
    )
    await store.write(_record_read, "audit.read", {"filters": wanted, "count": len(page[0])})
    return page


def audit_export(data_dir, settings, *, fmt="jsonl", output="-", **filters):
    """Write every matching event, oldest first, as JSON lines or CSV to a file or stdout."""
    if fmt not in FORMATS:
        raise AuditCliError(f"export format must be one of {FORMATS}, got {fmt!r}")
    wanted = filters_from(**filters)
    rows = trio.run(_with_store, data_dir, settings, _export_rows, wanted, fmt)
    text = render(rows, fmt)
    if output == "-":
        sys.stdout.write(text)
    else:
        try:
            Path(output).write_text(text)
        except OSError as e:
            raise AuditCliError(f"cannot write {output}: {e.strerror}") from None
    return len(rows)


async def _export_rows(store, wanted, fmt):
    rows = await store.read(_all_matching, wanted)
    await store.write(
        _record_read, "audit.export", {"filters": wanted, "format": fmt, "count": len(rows)}
    )
    return rows


def _all_matching(conn, wanted):
    found, before = [], None
    while True:
        page, before = audit.search(conn, limit=5000, before_id=before, **wanted)
        found.extend(page)
        if before is None:
            return found[::-1]


def render(events, fmt):
    """Events (dicts) as JSON lines or CSV text; details as compact JSON in CSV."""
    if fmt == "jsonl":
        return "".join(json.dumps(e, sort_keys=True) + "\n" for e in events)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for event in events:
        writer.writerow({**event, "details": json.dumps(event["details"], sort_keys=True)})
    return out.getvalue()


def audit_prune(data_dir, settings):
    """Archive and prune the events older than audit.retention_days; prints what it did."""
    settings.server.data_dir = str(data_dir)
    try:
        audit_retention.check_retention(settings.audit.retention_days)
        summary = trio.run(_with_store, data_dir, settings, _prune, settings)
    except audit_retention.RetentionError as e:
        raise AuditCliError(str(e)) from None
    if summary is None:
        print(f"no audit events older than {settings.audit.retention_days} days")
    else:
        print(
            f"archived events {summary['first_id']}-{summary['last_id']} to "
            f"{summary['archive']} and pruned them"
        )
    return summary


async def _prune(store, settings):
    return await audit_retention.archive_and_prune(store, settings, actor=operator())


def audit_verify_archive(data_dir, settings, path):
    """Check an archive of pruned events: its own chain, and its end against the signed cut.

    The signed checkpoint's signature itself is checked by `audit verify`.
    """
    try:
        events = audit_retention.read_archive(data_dir, path)
    except audit_retention.RetentionError as e:
        raise AuditCliError(str(e)) from None
    if not events:
        raise AuditCliError(f"audit archive {path} holds no events")

    problem = audit_retention.check_archive_chain(events)
    cut = trio.run(_with_store, data_dir, settings, _checkpoint, Path(path).name)
    if problem is None and cut != (events[-1]["id"], events[-1]["hash"]):
        problem = (
            f"its last event ({events[-1]['id']}) does not match the signed checkpoint "
            f"for this archive ({cut[0] if cut else 'none found'})"
        )
    if problem is not None:
        raise AuditCliError(f"audit archive {Path(path).name} FAILED: {problem}")
    print(
        f"audit archive {Path(path).name} verified: events {events[0]['id']}-"
        f"{events[-1]['id']} match the signed checkpoint"
    )
    return len(events)


async def _checkpoint(store, name):
    return await store.read(audit_retention.archive_checkpoint, name)


def _record_read(conn, action, details):
    audit.record(
        conn,
        actor=operator(),
        action=action,
        resource_type="audit_log",
        source="cli",
        details=details,
    )


def _trusted_key(data_dir):
    try:
        return audit_chain.verify_key(data_dir)
    except audit_chain.AuditChainError as e:
        raise AuditCliError(str(e)) from None


async def _with_store(data_dir, settings, fn, *args):
    try:
        store = await Store.open(Path(data_dir) / DATABASE_FILE, settings.store, create=False)
    except (StoreError, SchemaError) as e:
        raise AuditCliError(str(e)) from None
    try:
        return await fn(store, *args)
    except (StoreError, audit_chain.AuditChainError) as e:
        raise AuditCliError(str(e)) from None
    finally:
        await store.close()
