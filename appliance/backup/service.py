"""Backups inside `cloudboot serve`: the daily schedule and the audit event of each one.

serve.py starts run_backups_forever(store, settings) in its nursery. A failed
backup is logged and audited and tried again at the next interval; it must
never stop the appliance.
"""

import logging

import trio

from appliance.backup import backups
from appliance.core import audit

log = logging.getLogger(__name__)

ACTOR = "appliance"


async def create_audited(store, settings, actor=ACTOR, source=None, trace_id=None):
    """One backup now, with its audit event (ok or failed); returns the BackupInfo."""
    data_dir = settings.data_path
    try:
        info = await trio.to_thread.run_sync(backups.create, data_dir, settings.backup)
    except backups.BackupError as e:
        await store.write(_record, actor, "failed", None, {"error": str(e)}, source, trace_id)
        raise
    details = {"size": info.size, "schema_version": info.schema_version}
    await store.write(_record, actor, "ok", info.name, details, source, trace_id)
    return info


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
