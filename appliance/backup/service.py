"""Backups inside `cloudboot serve`: the daily schedule and the audit event of each one.

serve.py starts run_backups_forever(store, settings) in its nursery. The
backup itself runs in a child process (python -m appliance.backup): copying,
compressing and encrypting a database of hundreds of MiB holds the Python
interpreter lock for tens of milliseconds at a time, which in this process
would stall the store's writer. A failed backup is logged and audited and
tried again at the next interval; it must never stop the appliance.
"""

import json
import logging
import sys
from pathlib import Path

import trio

from appliance.backup import backups
from appliance.core import audit

log = logging.getLogger(__name__)

ACTOR = "appliance"


async def create_audited(store, settings, actor=ACTOR, source=None, trace_id=None):
    """One backup now, with its audit event (ok or failed); returns the BackupInfo."""
    try:
        info = await create_in_child(settings)
    except backups.BackupError as e:
        await store.write(_record, actor, "failed", None, {"error": str(e)}, source, trace_id)
        raise
    details = {"size": info.size, "schema_version": info.schema_version}
    await store.write(_record, actor, "ok", info.name, details, source, trace_id)
    return info


async def create_in_child(settings):
    """One backup made by a child process; returns its BackupInfo, BackupError on failure."""
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
    done = await trio.run_process(command, capture_stdout=True, capture_stderr=True, check=False)
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        raise backups.BackupError(message[-1] if message else f"exit status {done.returncode}")
    described = json.loads(done.stdout)
    return backups.BackupInfo(
        Path(described["path"]),
        described["size"],
        described["appliance_id"],
        described["created_at"],
        described["schema_version"],
        described["key_id"],
    )


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
        except backups.BackupError as e:
            log.error("scheduled backup failed: %s", e)
