"""Machines: registration, enrolment, labels, retirement and inventory history.

A machine registers from BootOS with its inventory. appliance/core/identity.py
decides whether it is a machine already known; this module records the
outcome, keeps every inventory as a new snapshot (history is never
overwritten), issues the agent token and keeps the audit trail. A new machine
is not approved: it gets no job and no secret until an operator approves it
or it reports a serial or MAC from the list the operator imported.

Lifecycle (the state column): discovered -> inventoried -> ready ->
configuring -> installing -> deployed, plus failed and retired. This module
moves machines up to ready and to retired; the job engine drives the rest.
A retired machine is out of identity matching: if its hardware registers
again it becomes a new machine that needs approving afresh.

Write functions (suffix-free, taking `conn`) run inside store.write and are
safe to run again after a rollback; they never log, the async callers do.
"""

import json
import logging
import secrets

from appliance import log as applog
from appliance.core import audit, auth, identifiers, identity, snapshots
from appliance.proto import inventory as inventory_schema
from appliance.proto import placeholders
from appliance.proto.inventory import normalize_mac
from appliance.store import now

log = logging.getLogger(__name__)

STATES = (
    "discovered",
    "inventoried",
    "ready",
    "configuring",
    "installing",
    "deployed",
    "failed",
    "retired",
)
# States that registration and approval may move forward; later ones belong to jobs.
_EARLY_STATES = ("discovered", "inventoried", "ready")

MAX_EXPECTED_PER_IMPORT = 10_000
MAX_EXPECTED_CHARS = 128


class MachineError(Exception):
    """A machine request that cannot be done, with the HTTP status and code it maps to."""

    def __init__(self, status, code, message):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def new_machine_id():
    return "m-" + secrets.token_hex(8)


# -- registration ---------------------------------------------------------------


async def register(store, registration, source, ttl_days, trace_id=None):
    """Register a machine from a validated message (appliance.proto.agent).

    Returns {"machine_id", "token", "state", "approved", "new"}.
    """
    minted = auth.new_token()
    outcome = await store.write(_register, registration, source, ttl_days, minted, trace_id)

    with applog.context(machine_id=outcome["machine_id"], trace_id=trace_id):
        if outcome["conflicts"]:
            log.warning(
                "machine shares identifiers with other live machines: %s", outcome["conflicts"]
            )
        log.info(
            "machine registered (%s, score %d): %s, approved=%s",
            "new" if outcome["new"] else "known",
            outcome["score"],
            outcome["state"],
            outcome["approved"],
        )
    return {
        "machine_id": outcome["machine_id"],
        "token": minted[0],
        "state": outcome["state"],
        "approved": outcome["approved"],
        "new": outcome["new"],
    }


def _register(conn, registration, source, ttl_days, minted, trace_id):
    document = registration["inventory"]
    signals = identity.signals(document, registration["boot_mac"])
    decision = identity.decide(signals, identifiers.candidates(conn, signals))

    machine_id = decision.machine_id
    is_new = machine_id is None
    if is_new:
        machine_id = new_machine_id()
        stamp = now()
        conn.execute(
            "INSERT INTO machines (id, state, created_at, updated_at)"
            " VALUES (?, 'discovered', ?, ?)",
            (machine_id, stamp, stamp),
        )

    _update_reported_fields(conn, machine_id, registration, source)
    _record_inventory(conn, machine_id, document, signals)
    _approve_if_expected(conn, machine_id, trace_id)
    machine = _advance_early_state(conn, machine_id)

    where = {"trace_id": trace_id, "source": source}
    auth.issue_agent_token(conn, machine_id, ttl_days, minted, **where)
    conflicts = {
        other: [f"{s.kind}={s.value}" for s in sigs] for other, sigs in decision.shared.items()
    }
    audit.record(
        conn,
        actor=f"machine:{machine_id}",
        action="machine.register",
        resource_type="machine",
        resource_id=machine_id,
        details={
            "new": is_new,
            "score": decision.score,
            "boot_mac": registration["boot_mac"],
            "shares_identifiers_with": conflicts,
        },
        **where,
    )
    return {
        "machine_id": machine_id,
        "new": is_new,
        "score": decision.score,
        "state": machine["state"],
        "approved": machine["approved"],
        "conflicts": conflicts,
    }


def _update_reported_fields(conn, machine_id, registration, source):
    system = registration["inventory"]["system"]
    uuid = system["uuid"]
    pxe_guid = registration["pxe_guid"]
    conn.execute(
        "UPDATE machines SET boot_mac = ?, pxe_guid = ?, pxe_guid_matches = ?, smbios_uuid = ?,"
        " uuid_trusted = ?, system_serial = ?, manufacturer = ?, product = ?,"
        " source_address = ?, last_seen_at = ?, updated_at = ?,"
        " registrations = registrations + 1 WHERE id = ?",
        (
            registration["boot_mac"],
            pxe_guid,
            _flag(identity.pxe_guid_matches(pxe_guid, uuid)),
            uuid,
            int(placeholders.uuid_trusted(uuid)),
            system["serial"],
            system["manufacturer"],
            system["product"],
            source,
            now(),
            now(),
            machine_id,
        ),
    )


def _flag(value):
    return None if value is None else int(value)


def _record_inventory(conn, machine_id, document, signals):
    stamp = now()
    snapshot_id = snapshots.record(conn, machine_id, document, stamp)
    identifiers.record(conn, machine_id, signals, stamp)
    return snapshot_id


# A document with every field absent tells nothing about the hardware. Snapshots
# are stored as sort_keys JSON, so comparing the text compares the documents.
_EMPTY_INVENTORY_TEXT = json.dumps(inventory_schema.empty(), sort_keys=True).encode()


def _advance_early_state(conn, machine_id):
    machine = _load(conn, machine_id)
    if machine["state"] not in _EARLY_STATES:
        return machine

    inventoried = snapshots.newest_text(conn, machine_id)
    has_inventory = inventoried not in (None, _EMPTY_INVENTORY_TEXT)

    state = "discovered"
    if has_inventory:
        state = "ready" if machine["approved"] else "inventoried"
    if state != machine["state"]:
        conn.execute(
            "UPDATE machines SET state = ?, updated_at = ? WHERE id = ?",
            (state, now(), machine_id),
        )
    return _load(conn, machine_id)


def store_inventory(conn, machine_id, document):
    """Keep a fresh inventory (from an inventory job) as a new snapshot; returns its id.

    Raises inventory_schema.InventoryError for a malformed document.
    """
    document = inventory_schema.validate(document)
    machine = _load(conn, machine_id)
    if machine is None:
        raise MachineError(404, "machine_not_found", f"no machine with id {machine_id!r}")

    signals = identity.signals(document)
    _check_same_hardware(conn, machine_id, signals)
    snapshot_id = _record_inventory(conn, machine_id, document, signals)
    _advance_early_state(conn, machine_id)
    return snapshot_id


def _check_same_hardware(conn, machine_id, signals):
    # The agent runs on the machine it registered as, so its SMBIOS UUID and
    # system serial cannot change without a reboot and a new registration. An
    # inventory that reports other ones would plant another machine's identity
    # in this one's history, where the next registration of that machine could
    # find it; it is refused instead.
    known = identifiers.signals_of(conn, machine_id)
    for kind in identity.STRONG_KINDS:
        reported = {s.value for s in signals if s.kind == kind}
        recorded = {s.value for s in known if s.kind == kind}
        if reported and recorded and not reported & recorded:
            raise inventory_schema.InventoryError(
                kind,
                f"reports {sorted(reported)} but machine {machine_id} is known by"
                f" {sorted(recorded)}; the same hardware must register again",
            )


# -- enrolment ------------------------------------------------------------------


async def approve(store, machine_id, actor, trace_id=None, source="api"):
    """An operator approves a machine: it may now get jobs. Returns the machine."""
    machine = await store.write(_approve_by_operator, machine_id, actor, trace_id, source)
    with applog.context(machine_id=machine_id, trace_id=trace_id):
        log.info("machine approved by %s; now %s", actor, machine["state"])
    _wake(store, machine_id)
    return machine


def _approve_by_operator(conn, machine_id, actor, trace_id, source):
    machine = _load_or_raise(conn, machine_id)
    if machine["state"] == "retired":
        raise MachineError(409, "machine_retired", f"machine {machine_id} is retired")

    already = machine["approved"]
    if not already:
        _set_approved(conn, machine_id, actor, "operator")
    audit.record(
        conn,
        actor=actor,
        action="machine.approve",
        resource_type="machine",
        resource_id=machine_id,
        trace_id=trace_id,
        source=source,
        details={"via": "operator", "already_approved": already},
    )
    return _advance_early_state(conn, machine_id)


def _set_approved(conn, machine_id, actor, via):
    stamp = now()
    conn.execute(
        "UPDATE machines SET approved = 1, approved_by = ?, approved_at = ?, approved_via = ?,"
        " updated_at = ? WHERE id = ?",
        (actor, stamp, via, stamp, machine_id),
    )


def _approve_if_expected(conn, machine_id, trace_id):
    machine = _load(conn, machine_id)
    if machine["approved"] or machine["state"] == "retired":
        return False

    match = _expected_match(conn, machine_id)
    if match is None:
        return False

    kind, value = match
    conn.execute(
        "UPDATE expected_machines SET matched_machine_id = ?, matched_at = ?"
        " WHERE kind = ? AND value = ?",
        (machine_id, now(), kind, value),
    )
    _set_approved(conn, machine_id, "expected-list", "expected")
    audit.record(
        conn,
        actor="system",
        action="machine.approve",
        resource_type="machine",
        resource_id=machine_id,
        trace_id=trace_id,
        details={"via": "expected", "kind": kind, "value": value},
    )
    return True


def _expected_match(conn, machine_id):
    match = identifiers.expected_match(conn, machine_id)
    if match is not None:
        return match

    # The MAC the firmware booted from counts even when no NIC list reported it.
    boot = conn.execute(
        "SELECT e.kind, e.value FROM expected_machines e JOIN machines m ON m.boot_mac = e.value"
        " WHERE e.kind = 'mac' AND m.id = ?",
        (machine_id,),
    ).fetchone()
    return None if boot is None else (boot[0], boot[1])


def check_expected(body):
    """{"serials": [...], "macs": [...]} -> (serials, macs) normalised; MachineError if bad."""
    if not isinstance(body, dict):
        raise MachineError(400, "invalid_request", "expected a JSON object with serials and macs")
    unknown = set(body) - {"serials", "macs"}
    if unknown:
        raise MachineError(400, "invalid_request", f"unknown fields {sorted(unknown)}")

    serials = _expected_list(body, "serials", identity.normalize_serial, "a serial number")
    macs = _expected_list(body, "macs", normalize_mac, "a MAC address like 52:54:00:12:34:56")
    if not serials and not macs:
        raise MachineError(400, "invalid_request", "give at least one serial or MAC to expect")
    if len(serials) + len(macs) > MAX_EXPECTED_PER_IMPORT:
        raise MachineError(
            400, "too_many", f"at most {MAX_EXPECTED_PER_IMPORT} entries per import"
        )
    return serials, macs


def _expected_list(body, name, normalise, what):
    values = body.get(name, [])
    if not isinstance(values, list):
        raise MachineError(400, "invalid_request", f"{name} must be a list, got {values!r:.100}")

    cleaned, bad = [], []
    for value in values:
        usable = isinstance(value, str) and len(value) <= MAX_EXPECTED_CHARS
        normal = normalise(value) if usable else None
        (bad if normal is None else cleaned).append(value if normal is None else normal)
    if bad:
        raise MachineError(
            400,
            "invalid_expected",
            f"{name}: expected {what} (not a firmware placeholder), got {bad[:10]!r}",
        )
    return sorted(set(cleaned))


async def import_expected(store, serials, macs, actor, trace_id=None, source="api"):
    """Add expected serials and MACs; approve waiting machines that report one."""
    outcome = await store.write(_import_expected, serials, macs, actor, trace_id, source)
    for machine_id in outcome["approved"]:
        _wake(store, machine_id)
    log.info(
        "expected list import by %s: %d serials, %d MACs, %d machines approved",
        actor,
        len(serials),
        len(macs),
        len(outcome["approved"]),
    )
    return outcome


def _import_expected(conn, serials, macs, actor, trace_id, source):
    stamp = now()
    added = 0
    for kind, values in (("serial", serials), ("mac", macs)):
        for value in values:
            conn.execute(
                "INSERT INTO expected_machines (kind, value, imported_by, imported_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (kind, value) DO NOTHING",
                (kind, value, actor, stamp),
            )
            added += conn.changes()

    audit.record(
        conn,
        actor=actor,
        action="enrolment.expected_import",
        resource_type="expected_machines",
        trace_id=trace_id,
        source=source,
        details={"serials": len(serials), "macs": len(macs), "added": added},
    )

    waiting = conn.execute(
        "SELECT id FROM machines WHERE approved = 0 AND state != 'retired' ORDER BY id"
    ).fetchall()
    approved = []
    for (machine_id,) in waiting:
        if _approve_if_expected(conn, machine_id, trace_id):
            _advance_early_state(conn, machine_id)
            approved.append(machine_id)
    return {"added": added, "serials": len(serials), "macs": len(macs), "approved": approved}


def list_expected(conn):
    rows = conn.execute(
        "SELECT kind, value, imported_by, imported_at, matched_machine_id, matched_at"
        " FROM expected_machines ORDER BY kind, value"
    ).fetchall()
    names = ("kind", "value", "imported_by", "imported_at", "matched_machine_id", "matched_at")
    return [dict(zip(names, row, strict=True)) for row in rows]


# -- labels and retirement ------------------------------------------------------


async def set_labels(store, machine_id, labels, replace, actor, trace_id=None, source="api"):
    """Replace (replace=True) or merge labels; in a merge a None value removes the key."""
    return await store.write(_set_labels, machine_id, labels, replace, actor, trace_id, source)


def _set_labels(conn, machine_id, labels, replace, actor, trace_id, source):
    machine = _load_or_raise(conn, machine_id)
    before = machine["labels"]
    after = {} if replace else dict(before)
    for key, value in labels.items():
        if value is None:
            after.pop(key, None)
        else:
            after[key] = value

    conn.execute(
        "UPDATE machines SET labels = ?, updated_at = ? WHERE id = ?",
        (json.dumps(after, sort_keys=True), now(), machine_id),
    )
    audit.record(
        conn,
        actor=actor,
        action="machine.labels",
        resource_type="machine",
        resource_id=machine_id,
        trace_id=trace_id,
        source=source,
        details={"before": before, "after": after},
    )
    return _load(conn, machine_id)


async def retire(store, machine_id, actor, trace_id=None, source="api"):
    """Take a machine out of service: no jobs, its agent token stops working."""
    machine = await store.write(_retire, machine_id, actor, trace_id, source)
    with applog.context(machine_id=machine_id, trace_id=trace_id):
        log.info("machine retired by %s", actor)
    _wake(store, machine_id)
    return machine


def _retire(conn, machine_id, actor, trace_id, source):
    machine = _load_or_raise(conn, machine_id)
    if machine["state"] != "retired":
        stamp = now()
        conn.execute(
            "UPDATE machines SET state = 'retired', retired_at = ?, updated_at = ? WHERE id = ?",
            (stamp, stamp, machine_id),
        )
        auth.revoke_machine_tokens(conn, machine_id)
    audit.record(
        conn,
        actor=actor,
        action="machine.retire",
        resource_type="machine",
        resource_id=machine_id,
        trace_id=trace_id,
        source=source,
        details={"previous_state": machine["state"]},
    )
    return _load(conn, machine_id)


# -- reads ----------------------------------------------------------------------

# The machine row as every reader renders it (the API adds its own few columns).
COLUMNS = (
    "id",
    "state",
    "approved",
    "approved_by",
    "approved_at",
    "approved_via",
    "boot_mac",
    "pxe_guid",
    "pxe_guid_matches",
    "smbios_uuid",
    "uuid_trusted",
    "system_serial",
    "manufacturer",
    "product",
    "labels",
    "created_at",
    "updated_at",
    "last_seen_at",
    "retired_at",
    "registrations",
)


def _load(conn, machine_id):
    row = conn.execute(
        f"SELECT {', '.join(COLUMNS)} FROM machines WHERE id = ?", (machine_id,)
    ).fetchone()
    if row is None:
        return None
    return machine_from_row(COLUMNS, row)


def machine_from_row(columns, row):
    """A machines row as a document: labels parsed, SQLite's 0/1 flags as booleans."""
    machine = dict(zip(columns, row, strict=True))
    machine["labels"] = json.loads(machine["labels"] or "{}")
    machine["approved"] = bool(machine["approved"])
    machine["uuid_trusted"] = bool(machine["uuid_trusted"])
    if machine["pxe_guid_matches"] is not None:
        machine["pxe_guid_matches"] = bool(machine["pxe_guid_matches"])
    return machine


def _load_or_raise(conn, machine_id):
    machine = _load(conn, machine_id)
    if machine is None:
        raise MachineError(404, "machine_not_found", f"no machine with id {machine_id!r}")
    return machine


def machine_document(conn, machine_id):
    """The machine as the API shows it, with its identifiers and conflicts (read function)."""
    machine = _load_or_raise(conn, machine_id)
    machine["identifiers"] = [
        {"kind": s.kind, "value": s.value} for s in identifiers.signals_of(conn, machine_id)
    ]
    machine["conflicts"] = conflicts(conn, machine_id)
    return machine


def conflicts(conn, machine_id):
    """Identifiers this machine shares with other live (not retired) machines."""
    return identifiers.conflicts(conn, machine_id)


def find_by_pxe_guid(conn, guid):
    """Live machine ids whose SMBIOS UUID or PXE GUID equals guid in either byte order."""
    other = identity.uuid_other_byte_order(guid)
    if other is None:
        return []
    forms = sorted({other, identity.uuid_other_byte_order(other)})
    rows = conn.execute(
        "SELECT id FROM machines WHERE state != 'retired' AND"
        " (smbios_uuid IN (?, ?) OR pxe_guid IN (?, ?)) ORDER BY id",
        (*forms, *forms),
    )
    return [row[0] for row in rows]


def _machines_with_mac(conn, mac):
    found = dict(
        conn.execute(
            "SELECT id, state FROM machines WHERE state != 'retired' AND boot_mac = ?", (mac,)
        ).fetchall()
    )
    for machine_id in set(identifiers.live_machines_with(conn, "mac", mac)) - set(found):
        found[machine_id] = _load(conn, machine_id)["state"]
    return sorted(found.items())


async def boot_state_for_mac(store, mac):
    """The state of the one live machine with this MAC; None when unknown or ambiguous.

    Ambiguous (two live machines claim the MAC) answers None, so the machine
    boots BootOS and is identified properly instead of booting a disk that
    may belong to the other one.
    """
    normal = normalize_mac(str(mac).replace("-", ":"))
    if normal is None:
        return None
    found = await store.read(_machines_with_mac, normal)
    return found[0][1] if len(found) == 1 else None


def _wake(store, machine_id):
    # The job engine's long poll: a machine just approved may have jobs waiting.
    from appliance.core import engine

    engine.wake(store, machine_id)
