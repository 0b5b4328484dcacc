"""Audit retention: archive events older than the retention, then prune them.

Bank regulators require every audit event to be kept at least 180 days, so a
retention below that is refused here and in the schema (a trigger on
audit_prune_grant). Events leave the database only as a prefix of the chain
(the oldest first, never a hole), only after they were written to an
encrypted archive file that was fsynced and renamed into place, and only in
one transaction that also writes a signed 'prune' head naming the last
pruned event and its hash: the remaining chain starts from that head, so
`audit verify` still checks it end to end, and the archive verifies against
the same head on its own.

This module must never delete an event that is not in a complete archive.
"""

import contextlib
import json
import logging
import os
import time
from pathlib import Path

import trio

from appliance.backup import envelope
from appliance.backup.backups import fsync_dir
from appliance.backup.keysource import KeySourceError, key_source
from appliance.core import audit, audit_chain, audit_forward
from appliance.store import APPLIANCE_ID_FILE, now

log = logging.getLogger(__name__)

MIN_RETENTION_DAYS = 180
ARCHIVE_SUFFIX = ".cbaudit"


class RetentionError(Exception):
    """Retention cannot run as configured, or an archive cannot be written or read."""


def check_retention(days):
    if not isinstance(days, int) or days < MIN_RETENTION_DAYS:
        raise RetentionError(
            f"audit.retention_days must be at least {MIN_RETENTION_DAYS} (the regulator's "
            f"minimum), got {days!r}"
        )
    return days


def cutoff_for(days, at=None):
    """The UTC text before which events are older than `days`."""
    seconds = (time.time() if at is None else at) - days * 86400
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(seconds))


def archive_dir(settings):
    """settings: the whole Settings; empty audit.archive_dir means <data_dir>/audit-archive."""
    configured = settings.audit.archive_dir
    return Path(configured) if configured else settings.data_path / "audit-archive"


async def archive_and_prune(store, settings, actor="appliance"):
    """Archive and prune the events older than the retention; returns a summary or None."""
    days = check_retention(settings.audit.retention_days)
    cutoff = cutoff_for(days)
    rows = await store.read(_prunable, cutoff, _forward_target(settings))
    if not rows:
        return None

    first_id, last_id, last_hash = rows[0][0], rows[-1][0], rows[-1][-1]
    name = f"audit-{first_id:012d}-{last_id:012d}{ARCHIVE_SUFFIX}"
    path = archive_dir(settings) / name
    await trio.to_thread.run_sync(_write_archive, settings.data_path, path, rows)

    key = await trio.to_thread.run_sync(audit_chain.signing_key, settings.data_path)
    await store.write(_prune, last_id, last_hash, cutoff, key, name, actor, days)
    log.info("archived audit events %d-%d to %s and pruned them", first_id, last_id, path)
    return {"first_id": first_id, "last_id": last_id, "archive": str(path), "cutoff": cutoff}


def _forward_target(settings):
    if not settings.audit.forward_target:
        return None
    return audit_forward.parse_target(settings.audit.forward_target).name


def _prunable(conn, cutoff, forward_target=None):
    """The oldest events up to (not including) the first one younger than the cutoff.

    With forwarding on, events the collector has not acknowledged stay too.
    """
    young = conn.execute(
        "SELECT MIN(id) FROM audit_events WHERE at >= ? OR hash IS NULL", (cutoff,)
    ).fetchall()[0][0]
    upto = (young - 1) if young is not None else None
    if forward_target is not None:
        sent = audit_forward.cursor(conn, forward_target)
        upto = sent if upto is None else min(upto, sent)
    return list(audit.iter_events(conn, upto_id=upto)) if upto != 0 else []


def _write_archive(data_dir, path, rows):
    lines = "".join(json.dumps(audit.as_dict(row), sort_keys=True) + "\n" for row in rows)
    try:
        sealed = envelope.seal(
            lines.encode(),
            appliance_id=(Path(data_dir) / APPLIANCE_ID_FILE).read_text().strip(),
            created_at=now(),
            schema_version=0,
            keys=key_source(data_dir),
        )
    except (OSError, KeySourceError) as e:
        raise RetentionError(f"cannot seal the audit archive: {e}") from None

    partial = path.with_name(path.name + ".partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(partial, "wb") as f:
            f.write(sealed)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
        fsync_dir(path.parent)
    except OSError as e:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        raise RetentionError(f"cannot write the audit archive {path}: {e}") from None


def _prune(conn, last_id, last_hash, cutoff, key, archive, actor, days):
    # The chain must not have changed between the read and this transaction.
    current = conn.execute("SELECT hash FROM audit_events WHERE id = ?", (last_id,)).fetchall()
    if not current or current[0][0] != last_hash:
        raise RetentionError(f"audit event {last_id} changed while it was being archived")

    conn.execute(
        "INSERT INTO audit_prune_grant (upto_id, cutoff) VALUES (?, ?)", (last_id, cutoff)
    )
    conn.execute("DELETE FROM audit_events WHERE id <= ?", (last_id,))
    conn.execute("DELETE FROM audit_prune_grant")
    audit_chain.sign_head(conn, key, kind="prune", event=(last_id, last_hash), archive=archive)
    audit.record(
        conn,
        actor=actor,
        action="audit.prune",
        resource_type="audit_log",
        resource_id=archive,
        details={"upto_id": last_id, "cutoff": cutoff, "retention_days": days},
    )


def read_archive(data_dir, path):
    """The events in an archive file (dicts, oldest first); RetentionError if it fails to open."""
    try:
        _, payload = envelope.open_envelope(Path(path).read_bytes(), key_source(data_dir))
    except (OSError, envelope.EnvelopeError) as e:
        raise RetentionError(f"cannot open audit archive {path}: {e}") from None
    return [json.loads(line) for line in payload.decode().splitlines()]


def check_archive_chain(events):
    """None when the archived events link up and each matches its hash, else what is wrong."""
    for before, event in zip([None, *events], events, strict=False):
        columns = [event[name] for name in audit.COLUMNS]
        columns[-1] = json.dumps(event["details"], sort_keys=True, default=str)
        if before is not None and event["id"] != before["id"] + 1:
            return f"event {before['id'] + 1} is missing from the archive"
        if before is not None and event["prev_hash"] != before["hash"]:
            return f"event {event['id']} does not link to the event before it"
        if audit.link_hash(event["prev_hash"], columns) != event["hash"]:
            return f"event {event['id']} was edited: its content does not match its hash"
    return None


def archive_checkpoint(conn, name):
    """Read function: the signed 'prune' head that names this archive, as (event_id, hash)."""
    rows = conn.execute(
        "SELECT event_id, event_hash FROM audit_heads WHERE kind = 'prune' AND archive = ?",
        (name,),
    ).fetchall()
    return tuple(rows[0]) if rows else None


async def retention_forever(store, settings, interval_seconds=86400):
    """serve.py: archive and prune once a day; a failure is logged and tried again."""
    check_retention(settings.audit.retention_days)
    while True:
        try:
            await archive_and_prune(store, settings)
        except RetentionError as e:
            log.error("audit retention failed: %s", e)
        await trio.sleep(interval_seconds)
