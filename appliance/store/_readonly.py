"""The store's read side alone, for the API worker processes (appliance/workers.py).

A worker answers plain reads from the same database file the main process
writes. WAL lets readers in any process see committed data while the one
writer goes on; a reader only waits for a checkpoint. This store opens
read-only connections and never a writer: `write` refuses, so a handler that
would write in a worker fails loudly instead of breaking the one-writer rule.
It must never open the database for writing or run migrations.
"""

from pathlib import Path

import apsw
import trio

from appliance.store._store import APPLIANCE_ID_FILE, BUSY_TIMEOUT_MS, StoreError, _read_sync


class ReadOnlyStore:
    """A pool of read-only connections with the Store's `read` interface."""

    # The API's accounting (appliance/api/_accounting.py) records nothing through a
    # read-only store; a worker sends refused requests to the main process instead.
    read_only = True

    def __init__(self, path, readers, appliance_id):
        self.path = Path(path)
        self.appliance_id = appliance_id
        self._readers = readers
        self._slots = trio.Semaphore(len(readers))

    @classmethod
    async def open(cls, path, settings):
        count = max(1, settings.read_connections)
        readers = await trio.to_thread.run_sync(_open_readers, path, count)
        id_path = Path(path).parent / APPLIANCE_ID_FILE
        appliance_id = id_path.read_text().strip() if id_path.exists() else ""
        return cls(path, readers, appliance_id)

    async def read(self, fn, *args):
        async with self._slots:
            conn = self._readers.pop()
            try:
                return await trio.to_thread.run_sync(_read_sync, conn, fn, args)
            finally:
                self._readers.append(conn)

    async def write(self, fn, *args):
        raise StoreError("an API worker process does not write; the main process does")

    async def close(self):
        for _ in range(len(self._readers)):
            await self._slots.acquire()
        for conn in self._readers:
            conn.close()


def _open_readers(path, count):
    readers = []
    for _ in range(count):
        conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
        conn.setbusytimeout(BUSY_TIMEOUT_MS)
        readers.append(conn)
    return readers
