"""The audit record: who did what to which resource, from where, with what result.

`record(conn, ...)` is called inside a store write function, so an event
commits in the same transaction as the change it describes: there is never a
change without its record, nor a record of a change that rolled back. For now
it is a plain append; it must never update or delete an existing event.
"""

import json

from appliance.store import now

RESULTS = ("ok", "denied", "failed")


def record(
    conn,
    *,
    actor,
    action,
    resource_type,
    resource_id=None,
    result="ok",
    trace_id=None,
    source=None,
    details=None,
):
    """Append one audit event; returns its id."""
    if result not in RESULTS:
        raise ValueError(f"audit result must be one of {RESULTS}, got {result!r}")

    conn.execute(
        "INSERT INTO audit_events (at, actor, action, resource_type, resource_id, result,"
        " trace_id, source, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            now(),
            str(actor),
            action,
            resource_type,
            None if resource_id is None else str(resource_id),
            result,
            trace_id,
            source,
            json.dumps(details or {}, sort_keys=True, default=str),
        ),
    )
    return conn.last_insert_rowid()


def events(conn, resource_type=None, resource_id=None, limit=100):
    """Newest events first, optionally for one resource (a read function)."""
    clauses, args = [], []
    if resource_type is not None:
        clauses.append("resource_type = ?")
        args.append(resource_type)
    if resource_id is not None:
        clauses.append("resource_id = ?")
        args.append(str(resource_id))
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""

    rows = conn.execute(
        "SELECT id, at, actor, action, resource_type, resource_id, result, trace_id, source,"
        f" details FROM audit_events {where} ORDER BY id DESC LIMIT ?",
        (*args, limit),
    ).fetchall()
    names = (
        "id",
        "at",
        "actor",
        "action",
        "resource_type",
        "resource_id",
        "result",
        "trace_id",
        "source",
        "details",
    )
    return [{**dict(zip(names, row, strict=True)), "details": json.loads(row[9])} for row in rows]
