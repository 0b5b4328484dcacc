"""The audit record: who did what to which resource, from where, with what result.

`record(conn, ...)` is called inside a store write function, so an event
commits in the same transaction as the change it describes: there is never a
change without its record, nor a record of a change that rolled back.

Each event is a link of a hash chain: it stores the hash of the event before
it (`prev_hash`) and the SHA-256 of that hash and its own canonical content
(`hash`). The link is computed here, in the writer's transaction, from the
newest committed-or-pending row, so events written by one group commit chain
in the order they were inserted, and a member rolled back by its savepoint
takes its link with it. appliance/core/audit_chain.py signs and verifies the
chain. This module must never update or delete an existing event (the schema
refuses it too).
"""

import hashlib
import json

from appliance.store import now

RESULTS = ("ok", "denied", "failed")

# The hash an empty log starts from.
GENESIS = "0" * 64

COLUMNS = (
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
_SELECT = f"SELECT {', '.join(COLUMNS)}, prev_hash, hash FROM audit_events"


def link_hash(prev_hash, row):
    """The hash of one event: its predecessor's hash, then its columns as compact JSON.

    `row` is the tuple of COLUMNS with details as the stored JSON text. The id
    is part of the content, so moving an event to another position changes it.
    """
    content = json.dumps(list(row), separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{prev_hash}\n{content}".encode()).hexdigest()


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
    """Append one audit event as the next link of the chain; returns its id."""
    if result not in RESULTS:
        raise ValueError(f"audit result must be one of {RESULTS}, got {result!r}")

    last_id, prev_hash = chain_head(conn)
    row = (
        last_id + 1,
        now(),
        str(actor),
        action,
        resource_type,
        None if resource_id is None else str(resource_id),
        result,
        trace_id,
        source,
        json.dumps(details or {}, sort_keys=True, default=str),
    )
    conn.execute(
        f"INSERT INTO audit_events ({', '.join(COLUMNS)}, prev_hash, hash)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (*row, prev_hash, link_hash(prev_hash, row)),
    )
    return row[0]


def chain_head(conn):
    """(id, hash) of the newest event, or of the last pruned one when none is left."""
    rows = conn.execute("SELECT id, hash FROM audit_events ORDER BY id DESC LIMIT 1").fetchall()
    if rows and rows[0][1] is None:
        return _seal_unchained(conn)
    if rows:
        return rows[0]

    pruned = conn.execute(
        "SELECT event_id, event_hash FROM audit_heads WHERE kind = 'prune'"
        " ORDER BY event_id DESC LIMIT 1"
    ).fetchall()
    return pruned[0] if pruned else (0, GENESIS)


def _seal_unchained(conn):
    """Chain the events written before the chain existed (schema 0003), once, in id order."""
    prev_hash = GENESIS
    last_id = 0
    for row in conn.execute(f"{_SELECT} ORDER BY id").fetchall():
        *columns, stored_prev, stored_hash = row
        if stored_hash is None:
            stored_prev, stored_hash = prev_hash, link_hash(prev_hash, columns)
            conn.execute(
                "UPDATE audit_events SET prev_hash = ?, hash = ? WHERE id = ?",
                (stored_prev, stored_hash, columns[0]),
            )
        prev_hash, last_id = stored_hash, columns[0]
    return last_id, prev_hash


def as_dict(row):
    """An audit_events row selected with _SELECT as the dict the API and exports show."""
    event = dict(zip((*COLUMNS, "prev_hash", "hash"), row, strict=True))
    event["details"] = json.loads(event["details"])
    return event


def events(conn, resource_type=None, resource_id=None, limit=100):
    """Newest events first, optionally for one resource (a read function)."""
    found, _ = search(conn, resource_type=resource_type, resource_id=resource_id, limit=limit)
    return found


def search(
    conn,
    *,
    actor=None,
    action=None,
    resource_type=None,
    resource_id=None,
    since=None,
    until=None,
    limit=100,
    before_id=None,
):
    """Events matching every filter given, newest first; returns (events, next before_id).

    `since` is inclusive and `until` exclusive (UTC text, compared as text like
    every time in the schema). Paging is by id: pass the returned value as
    `before_id` for the next page; None means there is no further page.
    """
    filters = {
        "actor = ?": actor,
        "action = ?": action,
        "resource_type = ?": resource_type,
        "resource_id = ?": None if resource_id is None else str(resource_id),
        "at >= ?": since,
        "at < ?": until,
        "id < ?": before_id,
    }
    clauses = [clause for clause, value in filters.items() if value is not None]
    args = [value for value in filters.values() if value is not None]
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""

    rows = conn.execute(f"{_SELECT} {where} ORDER BY id DESC LIMIT ?", (*args, limit + 1))
    found = [as_dict(row) for row in rows.fetchall()]
    if len(found) > limit:
        return found[:limit], found[limit - 1]["id"]
    return found, None


def iter_events(conn, after_id=0, upto_id=None, batch=1000):
    """Every event in id order (oldest first) as raw rows; for verify and export."""
    upto = upto_id if upto_id is not None else 2**63 - 1
    while True:
        rows = conn.execute(
            f"{_SELECT} WHERE id > ? AND id <= ? ORDER BY id LIMIT ?", (after_id, upto, batch)
        ).fetchall()
        yield from rows
        if len(rows) < batch:
            return
        after_id = rows[-1][0]
