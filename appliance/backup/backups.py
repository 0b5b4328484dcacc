"""Encrypted backups of the live database: create, list, verify, restore.

create: an online snapshot, read on its own connection inside one read
transaction (sqlite3_serialize through apsw): in WAL mode writers keep
committing while it runs, and the snapshot is the database as of one instant.
It is taken into memory, not into a temporary file, so the only disk writes a
backup makes are the compressed backup file itself; on ext4 a large temporary
file made the appliance writer's fsync wait for its write-back (the longest
writer stall is measured by bench/bench_backup.py). The snapshot is sealed
into the CBOR envelope (appliance/backup/envelope.py) and written as a
temporary file in bounded, separately flushed chunks, fsynced and renamed, so
a file with the backup suffix is always complete: a backup cut short by a
crash or a full disk leaves only a ".partial" file that list() never shows
and the next create removes.

restore: the backup is opened and checked (authentic, this appliance's
unless overridden, a schema this software knows), written beside the live
database and passed through PRAGMA integrity_check; only then is the live
database (with its WAL) copied aside to restore-previous/ and the restored one
renamed into its place. At every instant the live path holds either the old
database or the new one, whole.

This module must never leave plain database bytes outside the data directory,
and never replace the live database while another process has it open.
"""

import contextlib
import fcntl
import logging
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import apsw

from appliance.backup import envelope
from appliance.backup.keysource import KeySourceError, key_source
from appliance.store import APPLIANCE_ID_FILE, now
from appliance.store import migrations as schema_migrations

log = logging.getLogger(__name__)

DATABASE_FILE = "cloudboot.db"
SUFFIX = ".cbbak"
PARTIAL = ".partial"
_NAME = re.compile(r"^cloudboot-\d{8}T\d{12}Z-[0-9a-f]{8}\.cbbak$")
WORK_DIR = "backup-work"
PREVIOUS_DIR = "restore-previous"
WRITE_CHUNK = 4 * 1024 * 1024


class BackupError(Exception):
    """A backup could not be made, read or restored; the message is for the operator."""


@dataclass
class BackupInfo:
    path: Path
    size: int
    appliance_id: str | None = None
    created_at: str | None = None
    schema_version: int | None = None
    key_id: str | None = None
    problem: str | None = None

    @property
    def name(self):
        return self.path.name

    def as_dict(self):
        return {
            "name": self.name,
            "path": str(self.path),
            "size": self.size,
            "appliance_id": self.appliance_id,
            "created_at": self.created_at,
            "schema_version": self.schema_version,
            "key_id": self.key_id,
            "problem": self.problem,
        }


def backup_dirs(data_dir, settings):
    """The backup directory, then the mirror when one is configured."""
    main = Path(settings.directory) if settings.directory else Path(data_dir) / "backups"
    return [main, Path(settings.mirror_directory)] if settings.mirror_directory else [main]


def appliance_id(data_dir):
    try:
        return (Path(data_dir) / APPLIANCE_ID_FILE).read_text().strip()
    except OSError as e:
        raise BackupError(
            f"cannot read the appliance id in {data_dir}: {e.strerror}; "
            "has the appliance been started once?"
        ) from None


def known_schema_version():
    return max((m.number for m in schema_migrations.load()), default=0)


# -- create -------------------------------------------------------------------------


def create(data_dir, settings):
    """Snapshot, seal and write one backup to every backup directory; returns its BackupInfo."""
    data_dir = Path(data_dir)
    live = data_dir / DATABASE_FILE
    if not live.exists():
        raise BackupError(f"no database at {live}: nothing to back up")

    with _work_lock(data_dir):
        database, schema = snapshot(live)
        created_at = now()
        blob = _seal(database, data_dir, created_at, schema)
        name = _backup_name()
        written = [
            _write_atomically(directory / name, blob)
            for directory in backup_dirs(data_dir, settings)
        ]
        for directory in backup_dirs(data_dir, settings):
            prune(directory, settings.keep)

    log.info("backup %s written (%d bytes, database %d bytes)", name, len(blob), len(database))
    return _info(written[0], blob)


def _backup_name():
    # Microseconds in the name: names sort in creation order, which prune() relies on.
    t = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(t)) + f"{int(t % 1 * 1e6):06d}Z"
    return f"cloudboot-{stamp}-{secrets.token_hex(4)}{SUFFIX}"


def snapshot(live):
    """(database bytes, schema version) as of one instant, without stopping the writer."""
    conn = apsw.Connection(str(live), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        conn.setbusytimeout(10_000)
        # One read transaction for both, so the version belongs to the bytes.
        conn.execute("BEGIN")
        schema = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version")
        schema = schema.fetchall()[0][0]
        database = conn.serialize("main")
        conn.execute("COMMIT")
    except apsw.Error as e:
        raise BackupError(f"could not snapshot the database {live}: {e}") from None
    finally:
        conn.close()
    if not database:
        raise BackupError(f"the database {live} is empty: nothing to back up")
    return database, schema


def _seal(database, data_dir, created_at, schema):
    try:
        return envelope.seal(
            database,
            appliance_id=appliance_id(data_dir),
            created_at=created_at,
            schema_version=schema,
            keys=key_source(data_dir),
        )
    except KeySourceError as e:
        raise BackupError(str(e)) from None


@contextlib.contextmanager
def _work_lock(data_dir):
    """The work directory, held by one backup or restore at a time; stale leftovers removed."""
    work = Path(data_dir) / WORK_DIR
    work.mkdir(mode=0o700, exist_ok=True)
    with open(work / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for leftover in work.glob("snapshot-*.db"):
            leftover.unlink(missing_ok=True)
        yield work


def _write_atomically(path, blob):
    partial = path.with_name(path.name + PARTIAL)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f"*{SUFFIX}{PARTIAL}"):
            stale.unlink(missing_ok=True)
        with open(partial, "wb") as f:
            # Flushed chunk by chunk: one large write-back would hold up the
            # store writer's own fsync on the same file system meanwhile.
            for start in range(0, len(blob), WRITE_CHUNK):
                f.write(blob[start : start + WRITE_CHUNK])
                f.flush()
                os.fdatasync(f.fileno())
            os.fsync(f.fileno())
        os.replace(partial, path)
        fsync_dir(path.parent)
    except OSError as e:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        raise BackupError(f"could not write the backup {path}: {e.strerror or e}") from None
    return path


def fsync_dir(directory):
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def prune(directory, keep):
    """Delete all but the newest `keep` backups in one directory; returns the names removed."""
    backups = sorted(p for p in Path(directory).glob(f"*{SUFFIX}") if _NAME.match(p.name))
    doomed = backups[: max(0, len(backups) - max(1, keep))]
    for path in doomed:
        path.unlink(missing_ok=True)
        log.info("backup %s removed by the retention count (%d kept)", path.name, keep)
    return [p.name for p in doomed]


# -- list and verify ----------------------------------------------------------------


def list_backups(data_dir, settings):
    """Every complete backup file in the backup directories, newest first, header checked."""
    found = []
    for directory in backup_dirs(data_dir, settings):
        if not directory.is_dir():
            continue
        for path in directory.glob(f"*{SUFFIX}"):
            found.append(_info(path))
    return sorted(found, key=lambda b: (b.created_at or "", b.name), reverse=True)


def _info(path, blob=None):
    try:
        blob = path.read_bytes() if blob is None else blob
        header = envelope.read_header(blob)
    except OSError as e:
        return BackupInfo(path, 0, problem=f"unreadable: {e.strerror}")
    except envelope.EnvelopeError as e:
        return BackupInfo(path, len(blob), problem=str(e))
    return BackupInfo(
        path,
        len(blob),
        header["appliance_id"],
        header["created_at"],
        header["schema_version"],
        header["key_id"],
    )


def find(data_dir, settings, name):
    """A backup by file name (in a backup directory) or by path."""
    candidate = Path(name)
    if candidate.is_file():
        return candidate
    for directory in backup_dirs(data_dir, settings):
        if (directory / name).is_file():
            return directory / name
    raise BackupError(
        f"no backup named {name!r} in {', '.join(map(str, backup_dirs(data_dir, settings)))}"
    )


def open_checked(data_dir, path, allow_foreign=False):
    """(header, database bytes) of a backup this appliance may restore; BackupError if not."""
    try:
        blob = Path(path).read_bytes()
    except OSError as e:
        raise BackupError(f"cannot read backup {path}: {e.strerror}") from None
    try:
        header, database = envelope.open_envelope(blob, key_source(data_dir))
    except envelope.EnvelopeError as e:
        raise BackupError(f"backup {Path(path).name}: {e}") from None

    ours = appliance_id(data_dir)
    if header["appliance_id"] != ours and not allow_foreign:
        raise BackupError(
            f"backup {Path(path).name} belongs to appliance {header['appliance_id']}, this is "
            f"{ours}; to restore it on replacement hardware, repeat with --allow-foreign"
        )
    known = known_schema_version()
    if header["schema_version"] > known:
        raise BackupError(
            f"backup {Path(path).name} has schema version {header['schema_version']}, newer "
            f"than this software knows ({known}); restore it with a release at least as new"
        )
    return header, database


def verify(data_dir, path):
    """Decrypt and check one backup fully (authenticity and integrity_check); returns its info."""
    header, database = open_checked(data_dir, path, allow_foreign=True)
    with _work_lock(data_dir) as work:
        scratch = work / f"snapshot-{secrets.token_hex(4)}.db"
        try:
            _write_plain(scratch, database)
            integrity_check(scratch)
        except OSError as e:
            raise BackupError(f"cannot check the backup: writing {scratch} failed: {e}") from None
        finally:
            scratch.unlink(missing_ok=True)
    return _info(Path(path))


def _write_plain(path, database):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(database)
        f.flush()
        os.fsync(f.fileno())


def integrity_check(path):
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        rows = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
    except apsw.Error as e:
        raise BackupError(f"the database in the backup is damaged: {e}") from None
    finally:
        conn.close()
    if rows != ["ok"]:
        raise BackupError(f"the database in the backup fails its integrity check: {rows[:3]}")


# -- restore ------------------------------------------------------------------------


def restore(data_dir, path, allow_foreign=False):
    """Replace the live database with the backup's; returns (header, where the old one went).

    header["replaced_head"] is (id, hash) of the newest audit event of the
    database replaced, or None when it could not be read: the restore event
    records it, so the audit trail links the database set aside to the new one.
    """
    data_dir = Path(data_dir)
    live = data_dir / DATABASE_FILE
    header, database = open_checked(data_dir, path, allow_foreign)

    with _work_lock(data_dir):
        refuse_if_in_use(live)
        restoring = live.with_name(live.name + ".restoring")
        try:
            _write_plain(restoring, database)
            integrity_check(restoring)
            header["replaced_head"] = _audit_head(live)
            aside = _set_aside(live, data_dir)
        except (BackupError, OSError) as e:
            with contextlib.suppress(OSError):
                restoring.unlink(missing_ok=True)
            if isinstance(e, BackupError):
                raise
            raise BackupError(
                f"restore stopped before replacing anything (the live database is as it was): {e}"
            ) from None
        _swap_in(restoring, live)

    log.info("restored %s into %s (previous database kept in %s)", path, live, aside)
    return header, aside


def refuse_if_in_use(live):
    """BackupError when any process has the live database open (a running appliance)."""
    if not live.exists():
        return
    conn = apsw.Connection(str(live))
    try:
        conn.setbusytimeout(200)
        # An exclusive lock is refused while any other connection is open in WAL mode.
        conn.execute("PRAGMA locking_mode = EXCLUSIVE")
        conn.execute("BEGIN EXCLUSIVE")
        conn.execute("COMMIT")
        # Fold the WAL into the file, so the copy set aside is complete on its own.
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except apsw.BusyError:
        raise BackupError(
            f"the database {live} is in use: stop the appliance (systemctl stop cloudboot) "
            "before restoring"
        ) from None
    except apsw.Error as e:
        # A damaged live database is the usual reason to restore: go on, keep it aside.
        log.warning("live database %s could not be checkpointed before restore: %s", live, e)
    finally:
        conn.close()


def _audit_head(live):
    if not live.exists():
        return None
    try:
        conn = apsw.Connection(str(live), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            rows = conn.execute("SELECT id, hash FROM audit_events ORDER BY id DESC LIMIT 1")
            return list(rows.fetchall()[0]) if rows else None
        finally:
            conn.close()
    except (apsw.Error, IndexError):
        return None


def _set_aside(live, data_dir):
    aside = data_dir / PREVIOUS_DIR / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside.mkdir(parents=True, exist_ok=True, mode=0o700)
    for suffix in ("", "-wal"):
        source = live.with_name(live.name + suffix)
        if source.exists():
            shutil.copy2(source, aside / source.name)
            with open(aside / source.name, "rb+") as f:
                os.fsync(f.fileno())
    fsync_dir(aside)
    return aside


def _swap_in(restoring, live):
    # The old WAL and shared-memory index must go before the new file arrives:
    # SQLite would replay the old database's WAL onto the restored one. The old
    # WAL was checkpointed into the file (and a copy set aside) just before.
    for suffix in ("-wal", "-shm"):
        live.with_name(live.name + suffix).unlink(missing_ok=True)
    os.replace(restoring, live)
    fsync_dir(live.parent)
