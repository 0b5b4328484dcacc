"""Inventory snapshots compressed, identifiers indexed by a 64-bit digest.

The bank's sizing (100,000 two-socket servers, four snapshots each) did not
fit in 1 GB with every snapshot as full JSON text and every DIMM and disk
serial indexed as text. After this migration:

- inventory_snapshots.document holds the zlib form of appliance/store/codec.py
  (a keyframe, or a delta against the keyframe named by the new base_id
  column). Every existing row is converted, machine by machine, oldest first,
  by the same rule new reports follow.
- machine_identifiers (one row per identifier, indexed twice as text) becomes
  machine_identity (one compressed list per machine, first and last seen
  times kept) and identifier_digests (digest, machine_identity.number)
  WITHOUT ROWID.

Runs inside the migration's transaction; SQL only. The pages the old text
frees are reused by new rows; the file itself shrinks only after a VACUUM.
"""

import itertools
import operator

from appliance.store import codec

_SCHEMA = """
ALTER TABLE inventory_snapshots ADD COLUMN base_id INTEGER;

-- number: an INTEGER PRIMARY KEY, so VACUUM keeps it (a plain rowid it may renumber).
CREATE TABLE machine_identity (
    number INTEGER PRIMARY KEY,
    machine_id TEXT NOT NULL UNIQUE REFERENCES machines (id) ON DELETE CASCADE,
    identifiers BLOB NOT NULL
);

CREATE TABLE identifier_digests (
    digest INTEGER NOT NULL,
    number INTEGER NOT NULL REFERENCES machine_identity (number) ON DELETE CASCADE,
    PRIMARY KEY (digest, number)
) WITHOUT ROWID;
"""


def upgrade(conn):
    conn.execute(_SCHEMA)
    _convert_snapshots(conn)
    _convert_identifiers(conn)
    conn.execute("DROP TABLE machine_identifiers")


def _convert_snapshots(conn):
    machine_ids = [
        row[0] for row in conn.execute("SELECT DISTINCT machine_id FROM inventory_snapshots")
    ]
    for machine_id in machine_ids:
        rows = conn.execute(
            "SELECT id, document FROM inventory_snapshots WHERE machine_id = ? ORDER BY id",
            (machine_id,),
        ).fetchall()
        keyframe = None
        for snapshot_id, document in rows:
            text = document.encode() if isinstance(document, str) else document
            is_delta, blob = codec.encode_snapshot(
                text, None if keyframe is None else keyframe[1:]
            )
            if not is_delta:
                keyframe = (snapshot_id, blob, text)
            conn.execute(
                "UPDATE inventory_snapshots SET document = ?, base_id = ? WHERE id = ?",
                (blob, keyframe[0] if is_delta else None, snapshot_id),
            )


def _convert_identifiers(conn):
    # In primary-key order, one machine at a time: 100,000 machines' lists never
    # sit in memory together.
    cursor = conn.execute(
        "SELECT machine_id, kind, value, first_seen_at, last_seen_at FROM machine_identifiers"
        " ORDER BY machine_id, kind, value"
    )
    for machine_id, group in itertools.groupby(cursor, key=operator.itemgetter(0)):
        rows = [row[1:] for row in group]
        conn.execute(
            "INSERT INTO machine_identity (machine_id, identifiers) VALUES (?, ?)",
            (machine_id, codec.pack_identifiers(rows)),
        )
        number = conn.last_insert_rowid()
        for kind, value, _, _ in rows:
            conn.execute(
                "INSERT OR IGNORE INTO identifier_digests (digest, number) VALUES (?, ?)",
                (codec.signal_digest(kind, value), number),
            )
