"""Helpers for the audit and backup tests: a store in a data directory, events, tampering."""

import apsw

from appliance.core import audit
from appliance.store import Store

DB = "cloudboot.db"


async def open_store(data_dir):
    return await Store.open(data_dir / DB)


def add_event(conn, n, actor="alice", action="machine.approve", resource_id=None):
    return audit.record(
        conn,
        actor=actor,
        action=action,
        resource_type="machine",
        resource_id=resource_id or f"m-{n}",
        trace_id=f"t-{n}",
        source="192.0.2.10",
        details={"n": n},
    )


async def add_events(store, count, actor="alice", action="machine.approve"):
    ids = []
    for n in range(count):
        ids.append(await store.write(add_event, n, actor, action))
    return ids


def tamper(db_path, *statements):
    """Edit the database file directly as an attacker with sqlite would: triggers dropped first."""
    conn = apsw.Connection(str(db_path))
    conn.execute("DROP TRIGGER IF EXISTS audit_events_no_update")
    conn.execute("DROP TRIGGER IF EXISTS audit_events_no_delete")
    conn.execute("DROP TRIGGER IF EXISTS audit_heads_no_update")
    conn.execute("DROP TRIGGER IF EXISTS audit_heads_no_delete")
    for sql, args in statements:
        conn.execute(sql, args)
    conn.close()
