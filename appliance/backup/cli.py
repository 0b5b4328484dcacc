"""`cloudboot backup create|list|verify|restore`: plain functions the CLI calls.

Each takes the data directory and the loaded Settings, prints its result and
raises BackupError with one line for the operator. Each opens the store
itself for its audit event, so create, list and verify work beside a running
appliance; restore refuses while the appliance has the database open.
"""

import getpass
import json
import logging
from pathlib import Path

import trio

from appliance.backup import backups
from appliance.backup.backups import BackupError
from appliance.core import audit
from appliance.store import SchemaError, Store, StoreError

log = logging.getLogger(__name__)


def operator():
    """The audit actor for a command run on the appliance's console."""
    try:
        return f"local:{getpass.getuser()}"
    except (KeyError, OSError):
        return "local:unknown"


def backup_create(data_dir, settings, as_json=False):
    settings.server.data_dir = str(data_dir)

    async def run():
        from appliance.backup.service import create_audited

        store = await _open_store(data_dir, settings)
        try:
            return await create_audited(store, settings, actor=operator(), source="cli")
        except StoreError as e:
            raise BackupError(f"the backup's audit event could not be written: {e}") from None
        finally:
            await store.close()

    info = trio.run(run)
    print(json.dumps(info.as_dict()) if as_json else f"backup written: {info.path}")
    return info


def backup_list(data_dir, settings, as_json=False):
    found = backups.list_backups(data_dir, settings.backup)
    if as_json:
        print(json.dumps([b.as_dict() for b in found], indent=2))
        return found
    if not found:
        print(
            "no backups in " + ", ".join(map(str, backups.backup_dirs(data_dir, settings.backup)))
        )
    for b in found:
        state = f"DAMAGED: {b.problem}" if b.problem else f"schema {b.schema_version}"
        print(f"{b.created_at or '-':28} {b.size:>12} {state:20} {b.path}")
    return found


def backup_verify(data_dir, settings, name):
    path = backups.find(data_dir, settings.backup, name)
    info = backups.verify(data_dir, path)
    print(
        f"backup {info.name} is good: appliance {info.appliance_id}, made {info.created_at}, "
        f"schema {info.schema_version}"
    )
    return info


def backup_restore(data_dir, settings, name, allow_foreign=False):
    path = backups.find(data_dir, settings.backup, name)
    header, aside = backups.restore(data_dir, path, allow_foreign)
    foreign = header["appliance_id"] != backups.appliance_id(data_dir)
    details = {
        "backup_created_at": header["created_at"],
        "backup_appliance_id": header["appliance_id"],
        "foreign_override": foreign,
        "previous_database": str(aside),
        "previous_audit_head": header["replaced_head"],
    }
    trio.run(_record_restore, data_dir, settings, path.name, details)
    print(
        f"restored {path.name} (made {header['created_at']}); the previous database is kept "
        f"in {aside}"
    )
    return header


async def _record_restore(data_dir, settings, name, details):
    # Opening the store also applies any migration newer than the backup's schema.
    store = await _open_store(data_dir, settings)
    try:
        await _write_restore_event(store, name, details)
    except StoreError as e:
        raise BackupError(
            f"the backup was restored, but its audit event could not be written: {e}"
        ) from None
    finally:
        await store.close()


async def _write_restore_event(store, name, details):
    def record(conn):
        audit.record(
            conn,
            actor=operator(),
            action="backup.restore",
            resource_type="backup",
            resource_id=name,
            source="cli",
            details=details,
        )

    await store.write(record)


async def _open_store(data_dir, settings):
    try:
        path = Path(data_dir) / backups.DATABASE_FILE
        return await Store.open(path, settings.store, create=False)
    except (StoreError, SchemaError) as e:
        raise BackupError(str(e)) from None
