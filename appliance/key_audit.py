"""Key and provider events from console commands, written into the appliance's audit log.

keys/ reports every use of a key to a callback `audit(event: dict)` (keys/audit.py).
`store_audit(data_dir, store_settings)` gives the `cloudboot keys|vendor|provider`
commands a callback that commits each event into the store's audit table
before the key operation goes on, so `cloudboot audit query --action key.unwrap`
shows it beside every other action. Key events become actions `key.<event>`
(key.unwrap, key.vendor-trust-add, key.watermark-violation, ...).

The store is driven by trio; the commands are plain blocking code that may
prompt for a passphrase. So the store lives in a trio loop on a background
thread and the callback hands each write to it, keeping getpass and Ctrl-C
in the main thread.

This module must never put key bytes into a record: keys/ events carry none,
and nothing is added here but the event's own fields.
"""

import logging
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
