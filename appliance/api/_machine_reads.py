"""Read-only SQL for the machine, inventory and event routes, plus label checks.

Each function takes an apsw connection and runs inside store.read. Nothing
here writes: changes to machines belong to appliance.core.machines.
"""

import re

from appliance.core import identifiers, machines, snapshots
from appliance.http import HttpError
from appliance.proto.inventory import normalize_mac

# The lifecycle states are defined once, by the machines service.
MACHINE_STATES = machines.STATES
EVENT_TYPES = ("machine.state", "job.state")

# Label keys look like Kubernetes label keys; a bank's CMDB exports fit in them.
LABEL_KEY_PATTERN = "^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$"
_LABEL_KEY = re.compile(LABEL_KEY_PATTERN)
# Label values: no C0/C1 controls (NUL, newline, ...) and none of the invisible
# or direction-changing format characters (zero-width, bidi embeddings and
# overrides such as U+202E, isolates, line/paragraph separators, BOM) that make
# a label print as something else in a list or an export.
LABEL_VALUE_PATTERN = (
    "^[^\\x00-\\x1f\\x7f-\\x9f\\u061c\\u200b-\\u200f\\u2028-\\u202e\\u2060-\\u2069\\ufeff]*$"
)
_LABEL_VALUE = re.compile(LABEL_VALUE_PATTERN)
MAX_LABEL_VALUE = 256
MAX_LABELS = 64

# The core's machine columns, plus the row order key for paging and where it registered from.
_MACHINE_COLUMNS = ("rowid", *machines.COLUMNS, "source_address")
_SELECT_MACHINE = f"SELECT {', '.join(_MACHINE_COLUMNS)} FROM machines"


def machine_view(row):
    machine = machines.machine_from_row(_MACHINE_COLUMNS, row)
    del machine["rowid"]
    return machine


def get_machine(conn, machine_id):
    """The machine with its identifiers and the ones it shares with others, or None."""
    row = conn.execute(f"{_SELECT_MACHINE} WHERE id = ?", (machine_id,)).fetchone()
    if row is None:
        return None
    machine = machine_view(row)
    document = machines.machine_document(conn, machine_id)
    machine["identifiers"] = document["identifiers"]
    machine["conflicts"] = document["conflicts"]
    return machine


def list_machines(conn, state, labels, serial, mac, after, limit):
    clauses, args = [], []
    if state is not None:
        clauses.append("state = ?")
        args.append(state)
    for key, value in labels:
        if value is None:
            clauses.append("EXISTS (SELECT 1 FROM json_each(machines.labels) WHERE key = ?)")
            args.append(key)
        else:
            clauses.append(
                "EXISTS (SELECT 1 FROM json_each(machines.labels) WHERE key = ? AND value = ?)"
            )
            args.extend([key, value])
    if serial is not None:
        clauses.append("system_serial LIKE ? ESCAPE '\\'")
        args.append(f"%{_like_escape(serial)}%")
    if mac is not None:
        clauses.append(
            "(boot_mac = ? OR id IN (SELECT i.machine_id FROM identifier_digests d"
            " JOIN machine_identity i ON i.number = d.number WHERE d.digest = ?))"
        )
        # The digest stands for the text here: a false hit needs a 64-bit collision.
        normal = _mac(mac)
        args.extend([normal, identifiers.digest("mac", normal)])
    if after is not None:
        clauses.append("rowid > ?")
        args.append(after)

    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    return conn.execute(
        f"{_SELECT_MACHINE}{where} ORDER BY rowid LIMIT ?", (*args, limit)
    ).fetchall()


def _like_escape(text):
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# Colons, dashes or nothing between the six bytes, one style throughout.
MAC_PATTERN = (
    "^([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}$|^([0-9A-Fa-f]{2}-){5}[0-9A-Fa-f]{2}$|^[0-9A-Fa-f]{12}$"
)
_MAC = re.compile(MAC_PATTERN)


def _mac(text):
    normal = normalize_mac(text) if _MAC.fullmatch(text) else None
    if normal is None:
        raise HttpError(400, "invalid_filter", f"mac must be a MAC address, got {text!r}")
    return normal


def parse_label_filter(text):
    """ "key=value" matches that value, "key" matches any machine carrying the key."""
    key, sep, value = text.partition("=")
    if not _LABEL_KEY.fullmatch(key):
        raise HttpError(400, "invalid_filter", f"label filter must be key or key=value: {text!r}")
    return key, value if sep else None


def check_labels(body, allow_null):
    """Validate a labels object: string keys of label form, string values (null on PATCH)."""
    if len(body) > MAX_LABELS:
        raise HttpError(400, "invalid_labels", f"at most {MAX_LABELS} labels, got {len(body)}")
    for key, value in body.items():
        if not isinstance(key, str) or not _LABEL_KEY.fullmatch(key):
            raise HttpError(
                400,
                "invalid_labels",
                f"label key {key!r} must be 1-63 letters, digits, '.', '_', '/' or '-'",
            )
        if value is None and allow_null:
            continue
        if not isinstance(value, str) or len(value) > MAX_LABEL_VALUE:
            raise HttpError(
                400,
                "invalid_labels",
                f"label {key!r} must be a string of at most {MAX_LABEL_VALUE} characters"
                + (" (or null to remove it)" if allow_null else ""),
            )
        if not _LABEL_VALUE.fullmatch(value):
            raise HttpError(
                400,
                "invalid_labels",
                f"label {key!r} must be printable text, got {value!r:.80}",
            )
    return body


def latest_inventory(conn, machine_id):
    return snapshots.newest(conn, machine_id)


def inventory_history(conn, machine_id, before, limit):
    return snapshots.history(conn, machine_id, before, limit)


def list_events(conn, machine_id, job_id, event_type, after, limit):
    clauses, args = ["seq > ?"], [after]
    for column, value in (("machine_id", machine_id), ("job_id", job_id), ("type", event_type)):
        if value is not None:
            clauses.append(f"{column} = ?")
            args.append(value)
    rows = conn.execute(
        "SELECT seq, at, type, machine_id, job_id, from_state, to_state, message FROM events"
        f" WHERE {' AND '.join(clauses)} ORDER BY seq LIMIT ?",
        (*args, limit),
    ).fetchall()
    names = ("seq", "at", "type", "machine_id", "job_id", "from_state", "to_state", "message")
    return [dict(zip(names, row, strict=True)) for row in rows]
