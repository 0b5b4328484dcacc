"""The apsw store: one writer task with group commit and a pool of readers.

Every write goes through one trio task that gathers the writes waiting at the
same moment into one transaction (group commit: one fsync for many callers)
and runs it in a worker thread. A caller is answered only after COMMIT has
returned, and with synchronous=FULL in WAL mode that means the change is on
disk. Each member of a group runs under its own SAVEPOINT, so a member that
raises is rolled back alone and gets its own exception while its neighbours
commit. When SQLite itself loses the transaction (disk full, I/O error), the
group is rolled back and every member is re-run alone.

Reads run on a small pool of read-only connections in worker threads; WAL
lets them proceed while the writer writes. This module must never let two
connections write at once (the writer is the only one that does) and never
answer a writer before its COMMIT.
"""

import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

import apsw
import trio

from appliance.config import StoreSettings
from appliance.store._migrate import migrate

log = logging.getLogger(__name__)

APPLIANCE_ID_FILE = "appliance-id"

# SQLite waits this long for a lock before SQLITE_BUSY. The writer is the only
# writer, so only a checkpoint or an outside sqlite3 shell can make it wait.
BUSY_TIMEOUT_MS = 10_000


class StoreError(Exception):
    """The store cannot do what was asked (closed, cannot open, lost a transaction)."""


class StorageFullError(StoreError):
    """The data disk is full: the write was rolled back; writes work again once space returns."""


def now():
    """The current UTC time as the text the schema stores (sorts as text)."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


@dataclass(eq=False)
class _Write:
    fn: object
    args: tuple
    done: trio.Event = field(default_factory=trio.Event)
    result: object = None
    error: BaseException | None = None


class Store:
    """Use `await Store.open(path, settings)`; see docs/architecture.md ("Store")."""

    def __init__(self, path, settings, writer, readers, appliance_id):
        self.path = Path(path)
        self.settings = settings
        self.appliance_id = appliance_id
        self._writer = writer
        self._readers = readers
        self._reader_slots = trio.Semaphore(len(readers))
        self._send, self._receive = trio.open_memory_channel(settings.max_group_size * 4)
        self._writer_stopped = trio.Event()
        self._closed = False
        self._last_group_size = 0
        self.groups_committed = 0
        self.writes_committed = 0

    @classmethod
    async def open(cls, path, settings=None, *, create=True):
        """Open (or create) the database, apply migrations and start the writer task.

        Commands run beside the appliance pass create=False: a mistyped or forgotten
        --data-dir must be an error, not a new, empty appliance whose tokens work nowhere.
        """
        settings = settings or StoreSettings()
        path = Path(path)
        if not create and not path.exists():
            raise StoreError(
                f"no appliance database at {str(path)!r}: give the appliance's data directory "
                "with --data-dir (`cloudboot serve` makes the database at its first start)"
            )
        try:
            parts = await trio.to_thread.run_sync(_open_sync, path, settings)
        except (apsw.CorruptError, apsw.NotADBError) as e:
            raise StoreError(damaged_message(path, e)) from e
        except (apsw.Error, OSError) as e:
            raise StoreError(f"cannot open store {str(path)!r}: {e}") from e

        store = cls(path, settings, *parts)
        # A system task, so that Store.open needs no nursery from its caller;
        # _writer_loop answers every error of a group, so nothing escapes it.
        trio.lowlevel.spawn_system_task(store._writer_loop, name="cloudboot-store-writer")
        return store

    async def write(self, fn, *args):
        """Run fn(conn, *args) in the writer's transaction; return its result after COMMIT."""
        if self._closed:
            raise StoreError("store is closed; no more writes are accepted")

        request = _Write(fn, args)
        # Shielded: once handed over the write will commit, so a cancelled
        # caller waits for the answer instead of leaving its outcome unknown.
        with trio.CancelScope(shield=True):
            try:
                await self._send.send(request)
            except trio.ClosedResourceError:
                raise StoreError("store is closed; no more writes are accepted") from None
            await request.done.wait()

        if request.error is not None:
            raise request.error
        return request.result

    async def read(self, fn, *args):
        """Run fn(conn, *args) on a pooled read connection inside one read transaction."""
        if self._closed:
            raise StoreError("store is closed")

        async with self._reader_slots:
            conn = self._readers.pop()
            try:
                return await trio.to_thread.run_sync(_read_sync, conn, fn, args)
            finally:
                self._readers.append(conn)

    async def close(self):
        """Finish queued writes, stop the writer and close every connection."""
        if self._closed:
            return
        self._closed = True
        await self._send.aclose()
        await self._writer_stopped.wait()

        for _ in range(len(self._readers)):
            await self._reader_slots.acquire()
        for conn in [self._writer, *self._readers]:
            await trio.to_thread.run_sync(conn.close)

    async def _writer_loop(self):
        group = []
        try:
            while True:
                group = await self._next_group()
                if not group:
                    return
                try:
                    await trio.to_thread.run_sync(self._commit_group, group)
                except Exception as e:
                    # A fault in the store itself, not in a write function: answer
                    # everyone rather than let the writer task die with them waiting.
                    log.exception("store writer failed on a group of %d writes", len(group))
                    for request in group:
                        request.error = request.error or StoreError(f"store writer failed: {e}")
                _answer(group)
        finally:
            _answer(group, StoreError("store writer stopped before this write was committed"))
            self._writer_stopped.set()

    async def _next_group(self):
        try:
            group = [await self._receive.receive()]
        except trio.EndOfChannel:
            return []

        # Whatever is already queued joins at once.
        limit = self.settings.max_group_size
        self._drain(group, limit)

        # Waiting for company pays only under load: a lone write on a quiet
        # appliance is committed at once, not after the window.
        if self._last_group_size > 1 or len(group) > 1:
            window = self.settings.group_commit_window_ms / 1000
            with trio.move_on_after(window):
                while len(group) < limit:
                    try:
                        group.append(await self._receive.receive())
                    except trio.EndOfChannel:
                        break
                    self._drain(group, limit)

        self._last_group_size = len(group)
        return group

    def _drain(self, group, limit):
        while len(group) < limit:
            try:
                group.append(self._receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                return

    def _commit_group(self, group):
        """Worker thread: one transaction for the group; members isolated by savepoints."""
        conn = self._writer
        try:
            conn.execute("BEGIN IMMEDIATE")
            for request in group:
                if not _run_member(conn, request):
                    break
            else:
                conn.execute("COMMIT")
                self._count(group)
                return
        except apsw.Error as e:
            log.warning("group of %d writes lost its transaction: %s", len(group), e)

        _rollback(conn)
        for request in group:
            self._commit_alone(request)

    def _commit_alone(self, request):
        conn = self._writer
        request.result, request.error = None, None
        try:
            conn.execute("BEGIN IMMEDIATE")
            request.result = request.fn(conn, *request.args)
            conn.execute("COMMIT")
        except apsw.FullError:
            request.error = StorageFullError(
                f"the data disk holding {str(self.path)!r} is full: this change was not saved; "
                "free space there and the appliance carries on by itself"
            )
            _rollback(conn)
        except Exception as e:
            request.error = e
            _rollback(conn)
        else:
            self._count([request])

    def _count(self, group):
        self.groups_committed += 1
        self.writes_committed += sum(1 for r in group if r.error is None)


def _answer(group, error=None):
    for request in group:
        if not request.done.is_set():
            if error is not None:
                request.error = error
            request.done.set()


def _run_member(conn, request):
    """Run one member under a savepoint; False when the whole transaction is gone."""
    conn.execute("SAVEPOINT member")
    try:
        request.result = request.fn(conn, *request.args)
    except Exception as e:
        request.error = e
        # SQLite rolls the whole transaction back by itself on some errors
        # (SQLITE_FULL, SQLITE_IOERR, SQLITE_NOMEM); then nothing is left to save.
        if conn.getautocommit():
            return False
        conn.execute("ROLLBACK TO member")
    conn.execute("RELEASE member")
    return True


def _rollback(conn):
    if not conn.getautocommit():
        try:
            conn.execute("ROLLBACK")
        except apsw.Error as e:
            log.error("rollback failed: %s", e)


def _read_sync(conn, fn, args):
    # One read transaction: every statement in fn sees the same snapshot.
    conn.execute("BEGIN")
    try:
        return fn(conn, *args)
    finally:
        conn.execute("ROLLBACK")


def _connect(path, read_only):
    conn = apsw.Connection(str(path))
    conn.setbusytimeout(BUSY_TIMEOUT_MS)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = FULL")
    if read_only:
        # Only the writer writes: a read function that tries gets an error, not a lock.
        conn.execute("PRAGMA query_only = ON")
    return conn


def damaged_message(path, detail):
    """What the operator reads when the database file is damaged: what, and how to restore."""
    return (
        f"the database {str(path)!r} is damaged ({detail}); the appliance will not start on "
        "it. Restore the newest good backup: `cloudboot backup list`, then "
        '`cloudboot backup restore NAME` (docs/operations.md, "Restore")'
    )


def _open_sync(path, settings):
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = _connect(path, read_only=False)
    try:
        appliance_id = _prepare(writer, path)
    except BaseException:
        # Not left open: a restore must be able to take the file over.
        writer.close()
        raise

    count = max(1, settings.read_connections)
    readers = [_connect(path, read_only=True) for _ in range(count)]
    return writer, readers, appliance_id


def _prepare(writer, path):
    mode = writer.execute("PRAGMA journal_mode = WAL").fetchall()[0][0]
    if mode.lower() != "wal":
        raise StoreError(f"store {str(path)!r} could not switch to WAL mode (got {mode!r})")

    # A damaged file is found here, at start, not by the first request that
    # touches the bad page (quick_check reads every page, without index cross-checks).
    problems = [row[0] for row in writer.execute("PRAGMA quick_check(5)").fetchall()]
    if problems != ["ok"]:
        raise StoreError(damaged_message(path, "; ".join(problems)))

    migrate(writer, now())
    return _appliance_id(writer, path.parent / APPLIANCE_ID_FILE)


def _appliance_id(conn, id_path):
    """The random id made at first start, kept in a file and in the settings table.

    The file wins when both exist: it is what an operator sees and backs up.
    """
    stored = conn.execute("SELECT value FROM settings WHERE key = 'appliance_id'").fetchall()
    from_db = stored[0][0] if stored else None

    try:
        appliance_id = id_path.read_text().strip() or None
    except FileNotFoundError:
        appliance_id = None

    appliance_id = appliance_id or from_db or secrets.token_hex(16)
    if not id_path.exists():
        _write_file_durably(id_path, appliance_id + "\n")
    if from_db != appliance_id:
        conn.execute(
            "INSERT INTO settings (key, value) VALUES ('appliance_id', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (appliance_id,),
        )
    return appliance_id


def _write_file_durably(path, text):
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
