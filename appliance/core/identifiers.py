"""Every identity signal a machine has reported, kept in the store for matching.

Per machine, one row of machine_identity holds the list of (kind, value,
first seen, last seen) compressed (appliance/store/codec.py), and
identifier_digests indexes a 64-bit digest of each (kind, value) against the
row's small integer number, so that "which live machines reported this
serial?" is one index probe and each entry costs about fifteen bytes. A digest hit
is always checked against the machine's own list before it counts, so the
answers are exactly those of comparing the text.

Nothing is ever removed: a machine keeps every identifier it has reported
(docs/limitations.md). Functions take an apsw connection and run inside
store.write or store.read; they do no I/O other than SQL and never log.
"""

from appliance.core import identity
from appliance.store import codec

# Expected-list kinds (appliance/core/machines.py) and the identifier kinds each matches.
_EXPECTED_KINDS = {
    "mac": "mac",
    "system_serial": "serial",
    "chassis_serial": "serial",
    "board_serial": "serial",
}


def digest(kind, value):
    """The indexed form of an identifier (identifier_digests.digest)."""
    return codec.signal_digest(kind, value)


def record(conn, machine_id, signals, stamp):
    """Add the signals to the machine's list, or mark them seen again at `stamp`."""
    if not signals:
        return

    number, stored = _identity_row(conn, machine_id)
    rows = {(kind, value): [first, last] for kind, value, first, last in stored}
    new = []
    for signal in signals:
        seen = rows.get((signal.kind, signal.value))
        if seen is None:
            rows[signal.kind, signal.value] = [stamp, stamp]
            new.append(signal)
        else:
            seen[1] = stamp

    packed = codec.pack_identifiers((*key, *seen) for key, seen in rows.items())
    if number is None:
        conn.execute(
            "INSERT INTO machine_identity (machine_id, identifiers) VALUES (?, ?)",
            (machine_id, packed),
        )
        number = conn.last_insert_rowid()
    else:
        conn.execute(
            "UPDATE machine_identity SET identifiers = ? WHERE number = ?", (packed, number)
        )
    for signal in new:
        conn.execute(
            "INSERT OR IGNORE INTO identifier_digests (digest, number) VALUES (?, ?)",
            (codec.signal_digest(signal.kind, signal.value), number),
        )


def _identity_row(conn, machine_id):
    """(number, [(kind, value, first, last), ...]); (None, []) before the first report."""
    row = conn.execute(
        "SELECT number, identifiers FROM machine_identity WHERE machine_id = ?", (machine_id,)
    ).fetchone()
    return (None, []) if row is None else (row[0], codec.unpack_identifiers(row[1]))


def reported(conn, machine_id):
    """[(kind, value, first_seen_at, last_seen_at), ...] of every identifier, sorted."""
    return _identity_row(conn, machine_id)[1]


def signals_of(conn, machine_id):
    """The machine's scored signals (kinds identity knows), sorted."""
    return sorted(
        identity.Signal(kind, value)
        for kind, value, _, _ in reported(conn, machine_id)
        if kind in identity.WEIGHTS
    )


def _pairs_of(conn, machine_id, cache, stored=None):
    pairs = cache.get(machine_id)
    if pairs is None:
        rows = reported(conn, machine_id) if stored is None else codec.unpack_identifiers(stored)
        pairs = cache[machine_id] = {(k, v) for k, v, _, _ in rows}
    return pairs


def live_machines_with(conn, kind, value, cache=None):
    """Ids of live (not retired) machines that reported this identifier, sorted."""
    cache = {} if cache is None else cache
    rows = conn.execute(
        "SELECT i.machine_id, i.identifiers FROM identifier_digests d"
        " JOIN machine_identity i ON i.number = d.number"
        " JOIN machines m ON m.id = i.machine_id"
        " WHERE d.digest = ? AND m.state != 'retired' ORDER BY i.machine_id",
        (codec.signal_digest(kind, value),),
    ).fetchall()
    # The digest narrows; the text decides.
    return [mid for mid, stored in rows if (kind, value) in _pairs_of(conn, mid, cache, stored)]


def candidates(conn, signals):
    """{machine_id: [Signal, ...]} of live machines sharing at least one signal."""
    cache = {}
    ids = set()
    for signal in signals:
        ids.update(live_machines_with(conn, signal.kind, signal.value, cache))
    return {machine_id: signals_of(conn, machine_id) for machine_id in ids}


def conflicts(conn, machine_id):
    """Identifiers this machine shares with other live machines, by kind, value, machine."""
    cache = {}
    found = []
    for kind, value in sorted(_pairs_of(conn, machine_id, {})):
        for other in live_machines_with(conn, kind, value, cache):
            if other != machine_id:
                found.append({"kind": kind, "value": value, "machine_id": other})
    return found


def expected_match(conn, machine_id):
    """The first (kind, value) of the expected list among the machine's identifiers, or None."""
    found = []
    for kind, value in _pairs_of(conn, machine_id, {}):
        expected_kind = _EXPECTED_KINDS.get(kind)
        if expected_kind is None:
            continue
        row = conn.execute(
            "SELECT kind, value FROM expected_machines WHERE kind = ? AND value = ?",
            (expected_kind, value),
        ).fetchone()
        if row is not None:
            found.append((row[0], row[1]))
    return min(found, default=None)
