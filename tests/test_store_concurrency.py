"""The store under concurrent load: reads beside writes, and racing registrations."""

import apsw
import trio

from appliance.config import StoreSettings
from appliance.core import machines
from appliance.proto import agent as protocol
from appliance.store import Store
from tests.identity_support import inventory, registration


def _append(conn, n):
    conn.execute("INSERT INTO settings (key, value) VALUES (?, ?)", (f"n{n:04d}", str(n)))


def _sum(conn):
    # Two statements in one read transaction must see the same snapshot.
    count = conn.execute("SELECT count(*) FROM settings WHERE key LIKE 'n%'").fetchone()[0]
    rows = conn.execute("SELECT value FROM settings WHERE key LIKE 'n%'").fetchall()
    return count, len(rows)


async def test_reads_and_writes_side_by_side_never_see_busy(tmp_path):
    store = await Store.open(tmp_path / "store.db", StoreSettings(read_connections=4))
    errors = []
    snapshots = []

    async def write(n):
        try:
            await store.write(_append, n)
        except apsw.Error as e:
            errors.append(e)

    async def read():
        try:
            snapshots.append(await store.read(_sum))
        except apsw.Error as e:
            errors.append(e)

    async with trio.open_nursery() as nursery:
        for n in range(500):
            nursery.start_soon(write, n)
            if n % 3 == 0:
                nursery.start_soon(read)

    assert errors == []
    assert all(count == rows for count, rows in snapshots)
    assert (await store.read(_sum))[0] == 500
    await store.close()


async def test_racing_registrations_of_one_machine_make_one_machine(tmp_path):
    store = await Store.open(tmp_path / "cloudboot.db")
    same = inventory(uuid="eeeeeeee-0000-4000-8000-000000000001", nics=["52:54:00:60:00:01"])
    message = protocol.validate_registration(registration(same, "52:54:00:60:00:01"))
    outcomes = []

    async def register(body):
        outcomes.append(await machines.register(store, body, "127.0.0.1", ttl_days=30))

    async with trio.open_nursery() as nursery:
        for _ in range(30):
            nursery.start_soon(register, message)
        for n in range(30):
            mac = f"52:54:00:61:00:{n:02x}"
            other = protocol.validate_registration(registration(inventory(nics=[mac]), mac))
            nursery.start_soon(register, other)

    def _summary(conn):
        machines_count = conn.execute("SELECT count(*) FROM machines").fetchone()[0]
        live_agent_tokens = conn.execute(
            "SELECT machine_id, count(*) FROM api_tokens WHERE kind = 'agent'"
            " AND revoked_at IS NULL GROUP BY machine_id"
        ).fetchall()
        return machines_count, live_agent_tokens

    count, tokens = await store.read(_summary)
    assert count == 31
    # One live agent token per machine: every re-registration revoked the previous one.
    assert len(tokens) == 31 and all(n == 1 for _, n in tokens)
    assert sum(1 for o in outcomes if o["new"]) == 31
    await store.close()
