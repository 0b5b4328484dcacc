"""Key and provider events, written into the appliance's audit log.

keys/ reports every use of a key to a callback `audit(event: dict)` (keys/audit.py).
Key events become actions `key.<event>` (key.unwrap, key.seal, key.unseal-share,
key.vendor-trust-add, key.watermark-violation, ...), beside every other action,
so `cloudboot audit query --action key.unwrap` shows them.

Three callbacks, one per kind of process:

- ApplianceKeyAudit, for `cloudboot serve`: its keyring, its master key source
  and the backup child (which sends its events back to its parent) all report
  here. A call from the trio thread is queued for the writer task (the store's
  writer cannot be awaited from synchronous code); a call from a worker or
  other thread waits until the event is committed (so a key must never be used
  inside a store write function: the writer would wait for itself).
- StoreAudit via store_audit(), for `cloudboot keys|vendor|provider`: blocking
  commands that may prompt for a passphrase; the store lives in a trio loop on
  a background thread and each event commits before the key operation goes on.
- PendingAudit, for `cloudboot backup ...`: a restore must not have the store
  open while it swaps the database, so events are kept and committed after
  the command, into whichever database is live then.

When the store cannot take an event, it goes to <data_dir>/keys/access.log
instead (keys.audit.AccessLog), with the reason, and a warning is logged:
a key use must never go unrecorded.

This module must never put key bytes into a record: keys/ events carry none,
and nothing is added here but the event's own fields.
"""

import logging
import math
import threading
from contextlib import contextmanager
from pathlib import Path

import trio

from appliance.core import audit
from appliance.store import SchemaError, Store, StoreError
from keys import KeysError

log = logging.getLogger(__name__)

DATABASE_FILE = "cloudboot.db"
KEY_ACTION_PREFIX = "key."
# keys/ events whose outcome was a refusal, not a use.
DENIED_KEY_EVENTS = {"unseal-refused"}


def record_fields(event: dict, source: str = "cli") -> dict:
    """The audit.record keyword arguments for one keys/ event."""
    details = {name: value for name, value in event.items() if name not in ("action", "actor")}
    provider = event.get("provider")
    return {
        "actor": event.get("actor") or "appliance",
        "action": KEY_ACTION_PREFIX + str(event.get("action")),
        "resource_type": "provider" if provider else "key",
        "resource_id": provider or event.get("key_id"),
        "result": "denied" if event.get("action") in DENIED_KEY_EVENTS else "ok",
        "source": source,
        "details": details,
    }


class AuditUnavailable(KeysError):
    """The audit record of a key use could not be committed (disk full, store closed)."""


class StoreAudit:
    """An open store on a background trio loop; call it with a keys/ event."""

    def __init__(self, data_dir, store_settings, source="cli"):
        self.path = Path(data_dir) / DATABASE_FILE
        self.store_settings = store_settings
        self.source = source
        self.store = None
        self._token = None
        self._stop = None
        self._ready = threading.Event()
        self._error = None
        self._thread = threading.Thread(target=self._loop, name="audit-store", daemon=True)

    def open(self):
        """Open the store; raises StoreError or SchemaError when it cannot be opened."""
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self

    def _loop(self):
        try:
            trio.run(self._main)
        except BaseException as e:  # reported to open(); the thread must not die silently
            self._error = self._error or e
            self._ready.set()

    async def _main(self):
        try:
            self.store = await Store.open(self.path, self.store_settings)
        except (StoreError, SchemaError, OSError) as e:
            self._error = e
            self._ready.set()
            return
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            with trio.CancelScope(shield=True):
                await self.store.close()

    def __call__(self, event: dict) -> None:
        self.record(**record_fields(event, self.source))

    def record(self, **fields) -> int:
        """One audit event (audit.record's keywords), committed before this returns."""
        fields.setdefault("source", self.source)

        def write(conn):
            return audit.record(conn, **fields)

        try:
            return trio.from_thread.run(self.store.write, write, trio_token=self._token)
        except StoreError as e:
            # Fail closed: the command stops at the first key event it cannot record.
            raise AuditUnavailable(
                f"the audit log refused the record of {fields['action']}; command stopped: {e}"
            ) from None

    def close(self):
        if self._token is not None:
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
            self._token = None
        self._thread.join()


class FileAudit:
    """Fallback when the store cannot be opened: JSON lines in <data_dir>/keys/access.log."""

    def __init__(self, data_dir, reason):
        from keys.audit import AccessLog

        self.log = AccessLog(data_dir)
        self.reason = reason

    def __call__(self, event: dict) -> None:
        self.log(event)

    def record(self, **fields) -> None:
        self.log({**fields, "recorded_in": "access.log", "store_unavailable": self.reason})


@contextmanager
def store_audit(data_dir, store_settings, source="cli"):
    """Yield an audit callback (for keys/ events) with a `record(**fields)` method.

    Events go to the store's audit table. When the store cannot be opened
    (a damaged or locked database, a schema newer than this program), they go
    to <data_dir>/keys/access.log instead: key commands are exactly what an
    operator needs while recovering such a database (unseal, then restore a
    backup), so refusing them would lock the bank out, and a key use must
    never go unrecorded either.
    """
    Path(data_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        sink = StoreAudit(data_dir, store_settings, source).open()
    except (StoreError, SchemaError, OSError) as e:
        log.warning("audit store unavailable, key events go to keys/access.log: %s", e)
        yield FileAudit(data_dir, str(e))
        return
    try:
        yield sink
    finally:
        sink.close()


def _record_event(conn, fields):
    return audit.record(conn, **fields)


def _in_trio_thread(token) -> bool:
    """True when called on the trio thread of the run that owns `token`."""
    try:
        current = trio.lowlevel.current_trio_token()
    except RuntimeError:
        return False
    return token is None or current is token


class ApplianceKeyAudit:
    """keys/ audit callback of the running appliance: every key event into the audit table.

    Start run(store) in the appliance's nursery; at shutdown, drain() writes
    what is still queued before the store closes.
    """

    def __init__(self, data_dir, source="appliance"):
        self.data_dir = data_dir
        self.source = source
        self.store = None
        self._token = None
        self._send, self._receive = trio.open_memory_channel(math.inf)
        # Counted, not logged: `recorded` is for tests and a future status page.
        self.recorded = 0

    async def run(self, store, *, task_status=trio.TASK_STATUS_IGNORED):
        self.store = store
        self._token = trio.lowlevel.current_trio_token()
        task_status.started()
        async for fields in self._receive:
            await self._write(fields)

    async def drain(self, store=None):
        """Write every queued event now (call shielded, before the store closes)."""
        self.store = store or self.store
        while True:
            try:
                fields = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return
            await self._write(fields)

    def __call__(self, event: dict) -> None:
        fields = record_fields(event, self.source)
        if _in_trio_thread(self._token):
            self._send.send_nowait(fields)
            return
        if self._token is None:
            self._to_file(fields, "the appliance's audit writer has not started")
            return
        try:
            trio.from_thread.run(self._write, fields, trio_token=self._token)
        except trio.RunFinishedError:
            self._to_file(fields, "the appliance has stopped")

    async def _write(self, fields):
        if self.store is None:
            self._to_file(fields, "the appliance stopped before its store opened")
            return
        try:
            await self.store.write(_record_event, fields)
        except StoreError as e:
            self._to_file(fields, str(e))
            return
        self.recorded += 1

    def _to_file(self, fields, reason):
        log.warning(
            "key event %s not in the audit log (%s): see keys/access.log", fields["action"], reason
        )
        FileAudit(self.data_dir, reason).record(**fields)


class PendingAudit:
    """Keeps keys/ events in memory; commit_to() writes them once the store may be opened."""

    def __init__(self, source="cli"):
        self.source = source
        self.events = []
        self._lock = threading.Lock()

    def __call__(self, event: dict) -> None:
        with self._lock:
            self.events.append(record_fields(event, self.source))

    def commit_to(self, data_dir, store_settings) -> int:
        """Write the kept events into the store (access.log if it cannot be opened)."""
        with self._lock:
            events, self.events = self.events, []
        if not events:
            return 0
        with store_audit(data_dir, store_settings, self.source) as sink:
            for fields in events:
                try:
                    sink.record(**fields)
                except AuditUnavailable as e:
                    FileAudit(data_dir, str(e)).record(**fields)
        return len(events)


def appliance_keyring(data_dir, master, key_events):
    """The running appliance's Keyring (None without a master key), its events audited.

    Also makes the backups and audit archives of this context use `master`
    (appliance/backup/keysource.py), so they never load a sealed copy of it.
    Call it from the task that starts the appliance's services: they inherit it.
    """
    if master is None:
        return None
    from appliance.backup import keysource
    from keys.envelope import Keyring

    keysource.hold(master, key_events, actor="appliance")
    return Keyring(data_dir, master, key_events, actor="appliance")
