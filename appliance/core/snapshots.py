"""Inventory snapshots in the store: write one, read the newest, read the history.

History is kept: each report is a new row of inventory_snapshots, never an
update in place. The document column holds the compressed form of
appliance/store/codec.py: a keyframe (base_id NULL) or a delta against the
keyframe named by base_id. Rows written before migration 0005 (or by a tool
that inserts JSON text) hold plain text and are read as they are.

Functions take an apsw connection and run inside store.write or store.read;
they do no I/O other than SQL and never log.
"""

import json

from appliance.store import codec

_SELECT = "SELECT id, machine_id, taken_at, schema, document, base_id FROM inventory_snapshots"


def record(conn, machine_id, document, stamp):
    """Store a validated inventory document as the machine's newest snapshot; returns its id."""
    text = json.dumps(document, sort_keys=True).encode()
    keyframe = _newest_keyframe(conn, machine_id)
    is_delta, blob = codec.encode_snapshot(text, None if keyframe is None else keyframe[1:])
    base_id = keyframe[0] if is_delta else None
    conn.execute(
        "INSERT INTO inventory_snapshots (machine_id, taken_at, schema, document, base_id)"
        " VALUES (?, ?, ?, ?, ?)",
        (machine_id, stamp, document["schema"], blob, base_id),
    )
    return conn.last_insert_rowid()


def _newest_keyframe(conn, machine_id):
    """(id, stored blob, text) of the keyframe new deltas use, or None."""
    # The newest row names its keyframe (or is one), so no scan of the history.
    row = conn.execute(
        "SELECT id, base_id FROM inventory_snapshots WHERE machine_id = ?"
        " ORDER BY id DESC LIMIT 1",
        (machine_id,),
    ).fetchone()
    if row is None:
        return None

    keyframe_id = row[0] if row[1] is None else row[1]
    (stored,) = conn.execute(
        "SELECT document FROM inventory_snapshots WHERE id = ?", (keyframe_id,)
    ).fetchone()
    if isinstance(stored, str):
        # Plain text (written before 0005 or by hand): the next report starts a keyframe.
        return None
    return keyframe_id, stored, codec.inflate(stored)


def newest_text(conn, machine_id):
    """The JSON text (bytes, sort_keys) of the machine's newest snapshot, or None."""
    row = conn.execute(
        f"{_SELECT} WHERE machine_id = ? ORDER BY id DESC LIMIT 1", (machine_id,)
    ).fetchone()
    return None if row is None else _texts(conn, [row])[0]


def newest(conn, machine_id):
    """The newest snapshot as the API shows it, or None."""
    rows = conn.execute(
        f"{_SELECT} WHERE machine_id = ? ORDER BY id DESC LIMIT 1", (machine_id,)
    ).fetchall()
    return _views(conn, rows)[0] if rows else None


def history(conn, machine_id, before, limit):
    """Up to `limit` snapshots, newest first, with ids below `before` when given."""
    args = [machine_id]
    extra = ""
    if before is not None:
        extra = " AND id < ?"
        args.append(before)
    rows = conn.execute(
        f"{_SELECT} WHERE machine_id = ?{extra} ORDER BY id DESC LIMIT ?", (*args, limit)
    ).fetchall()
    return _views(conn, rows)


def texts(conn, machine_id):
    """{snapshot id: the JSON text as it was stored}, for checks and exports."""
    rows = conn.execute(f"{_SELECT} WHERE machine_id = ? ORDER BY id", (machine_id,)).fetchall()
    return dict(zip((row[0] for row in rows), _texts(conn, rows), strict=True))


def _views(conn, rows):
    texts = _texts(conn, rows)
    return [
        {
            "id": snapshot_id,
            "machine_id": machine_id,
            "taken_at": taken_at,
            "schema": schema,
            "inventory": json.loads(text),
        }
        for (snapshot_id, machine_id, taken_at, schema, _, _), text in zip(
            rows, texts, strict=True
        )
    ]


def _texts(conn, rows):
    """The JSON text of each row; each keyframe is inflated once per call."""
    keyframes = {}
    texts = []
    for snapshot_id, _, _, _, stored, base_id in rows:
        try:
            texts.append(_text(conn, stored, base_id, keyframes))
        except codec.CodecError as e:
            raise codec.CodecError(f"inventory snapshot {snapshot_id}: {e}") from None
    return texts


def _text(conn, stored, base_id, keyframes):
    if isinstance(stored, str):
        return stored.encode()
    if base_id is None:
        return codec.inflate(stored)

    keyframe_text = keyframes.get(base_id)
    if keyframe_text is None:
        (keyframe,) = conn.execute(
            "SELECT document FROM inventory_snapshots WHERE id = ?", (base_id,)
        ).fetchone()
        keyframe_text = keyframes[base_id] = _text(conn, keyframe, None, keyframes)
    return codec.inflate(stored, keyframe_text)
