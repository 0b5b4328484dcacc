"""Backups inside `cloudboot serve`: the daily schedule and the audit event of each one.

serve.py starts run_backups_forever(store, settings) in its nursery. The
backup itself runs in a child process (python -m appliance.backup): copying,
compressing and encrypting a database of hundreds of MiB holds the Python
interpreter lock for tens of milliseconds at a time, which in this process
would stall the store's writer. A failed backup is logged and audited and
tried again at the next interval; it must never stop the appliance.

Under the master key the child never loads it: this process, which holds it
(keysource.hold(), unsealed by the officers under dual control), unwraps the
keyring's "backups" data key and writes it to the child's stdin. While the key
is sealed a backup is refused at once with an audit event saying so. Every
key use, the parent's unwrap and the child's seal, reaches the audit log
through the held master's audit callback.

This module must never put a key on a command line, in an environment or in
a file.
"""

import json
import logging
import sys
from pathlib import Path

import trio

from appliance.backup import backups, keysource
from appliance.core import audit

log = logging.getLogger(__name__)

ACTOR = "appliance"
SEALED_REASON = "keys sealed"


class BackupRefused(backups.BackupError):
    """No backup can be made now (the master key is sealed); nothing was attempted."""


async def create_audited(store, settings, actor=ACTOR, source=None, trace_id=None):
    """One backup now, with its audit event (ok, denied or failed); returns the BackupInfo."""
    holder = keysource.held()
    if holder is not None and holder.master.is_sealed():
        details = {"reason": SEALED_REASON, "key_id": holder.master.key_id}
        await store.write(_record, actor, "denied", None, details, source, trace_id)
        raise BackupRefused(
            f"no backup made: master key {holder.master.key_id} is sealed; the officers "
            "must unseal it (POST /api/v1/keys/unseal) first"
        )

    try:
        info = await _create_with_keys(settings, holder)
    except backups.BackupError as e:
        await store.write(_record, actor, "failed", None, {"error": str(e)}, source, trace_id)
        raise
    details = {"size": info.size, "schema_version": info.schema_version}
    await store.write(_record, actor, "ok", info.name, details, source, trace_id)
    return info


async def _create_with_keys(settings, holder):
    if holder is None:
        return await create_in_child(settings)

    data_dir = settings.data_path
    try:
        handed_key = await trio.to_thread.run_sync(keysource.hand_over, data_dir, holder)
    except keysource.KeySourceError as e:
        raise backups.BackupError(str(e)) from None
    try:
        info = await create_in_child(settings, handed_key)
    finally:
        handed_key.forget()
    # The child's own key use, reported back on its stdout (it has no store);
    # shielded, so a shutdown now cannot leave a backup without its key events.
    with trio.CancelScope(shield=True):
        for event in handed_key.events:
            await trio.to_thread.run_sync(holder.audit, event)
    return info


async def create_in_child(settings, handed_key=None):
    """One backup made by a child process; returns its BackupInfo, BackupError on failure.

    With handed_key the child gets the data key on stdin and its key events
    come back into handed_key.events.
    """
    command = [
        sys.executable,
        "-m",
        "appliance.backup",
        "create",
        str(settings.data_path),
        "--directory",
        settings.backup.directory,
        "--mirror",
        settings.backup.mirror_directory,
        "--keep",
        str(settings.backup.keep),
    ]
    frame = b""
    if handed_key is not None:
        command.append("--key-on-stdin")
        frame = _key_frame(handed_key)
    try:
        done = await trio.run_process(
            command, stdin=frame, capture_stdout=True, capture_stderr=True, check=False
        )
    finally:
        if isinstance(frame, bytearray):
            frame[:] = bytes(len(frame))
    return _described(done, handed_key)


def _key_frame(handed_key):
    header = {
        "master_key_id": handed_key.master_key_id,
        "master_version": handed_key.master_version,
        "data_key_id": handed_key.data_key_id,
    }
    # A bytearray, so the copy of the key made here can be zeroed after sending.
    return bytearray(json.dumps(header).encode() + b"\n") + handed_key.data_key


def _described(done, handed_key):
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        raise backups.BackupError(message[-1] if message else f"exit status {done.returncode}")
    try:
        described = json.loads(done.stdout)
    except ValueError:
        raise backups.BackupError(f"the backup child answered {done.stdout[:80]!r}") from None
    if handed_key is not None:
        handed_key.events.extend(_key_events(described.get("key_events")))
    return backups.BackupInfo(
        Path(described["path"]),
        described["size"],
        described["appliance_id"],
        described["created_at"],
        described["schema_version"],
        described["key_id"],
    )


def _key_events(events):
    """The child's key events, only as the plain records keys/audit.py makes."""
    fields = ("time", "action", "actor", "key_id", "version", "purpose")
    if not isinstance(events, list):
        return []
    return [
        {name: event.get(name) for name in fields} for event in events if isinstance(event, dict)
    ]


def _record(conn, actor, result, name, details, source, trace_id):
    audit.record(
        conn,
        actor=actor,
        action="backup.create",
        resource_type="backup",
        resource_id=name,
        result=result,
        trace_id=trace_id,
        source=source,
        details=details,
    )


async def run_backups_forever(store, settings):
    """A backup every backup.interval_hours, the first one interval after start."""
    interval = settings.backup.interval_hours * 3600
    while True:
        await trio.sleep(interval)
        try:
            await create_audited(store, settings)
        except BackupRefused as e:
            log.warning("scheduled backup skipped: %s", e)
        except backups.BackupError as e:
            log.error("scheduled backup failed: %s", e)
