"""Which machine is this? Identity by scoring many signals, never by trusting one.

Firmware lies in ordinary ways: thousands of boards share the AMI template
UUID 03000200-0400-0500-0006-000700080009, serial fields hold "Default
string", NIC order changes when a card is added, a bond changes a port's
current MAC. So a registering machine's signals are each weighed, summed
against every known machine that shares any of them, and the best candidate
is the same machine only when the sum is high enough and nothing strong
contradicts it.

Weights (points a shared signal adds):

    SMBIOS UUID (only when trusted, see below)   40
    system serial                                30
    each MAC address (permanent MAC preferred)   25
    chassis serial                               20
    baseboard serial                             20
    each disk serial or WWN                      10
    each DIMM serial                              5

A candidate is the same machine when

  1. its score reaches MATCH_THRESHOLD (50), or, when the known machine has
     fewer points of identity than that in total (a VM with one NIC and no
     serials; a first registration without inventory), all the points it has,
     but never less than MIN_MATCH_SCORE (25: one MAC; a chassis serial alone
     is shared by every blade in an enclosure). A thin registration does not
     lower the bar: registration carries no secret, and a boot MAC is sent in
     clear in every DHCPDISCOVER, so "only a MAC" must not claim a machine
     known by more (and with it the machine's agent token and jobs);
  2. no strong signal contradicts it: a machine known by SMBIOS UUID or
     system serial that now reports a different one, or none at all, is a
     different machine, whatever else it shares. The PXE GUID (option 97)
     is on the wire too, so a known system serial must be reported as well.

Values are compared trimmed and case-folded. Placeholders (the one list in
appliance/proto/placeholders.py) are dropped before scoring, and an untrusted
UUID (template, all-zero, all-F, zeros followed by a MAC) adds nothing. Two
live machines that share an identifier are a conflict to show to an operator;
this module never merges or deletes machines. Pure functions: no store, no I/O.
"""

from dataclasses import dataclass, field

from appliance.proto import placeholders
from appliance.proto.inventory import normalize_mac

WEIGHTS = {
    "uuid": 40,
    "system_serial": 30,
    "mac": 25,
    "chassis_serial": 20,
    "board_serial": 20,
    "disk_serial": 10,
    "dimm_serial": 5,
}

# A machine has one of each of these; a different value means a different machine.
STRONG_KINDS = ("uuid", "system_serial")

MATCH_THRESHOLD = 50
MIN_MATCH_SCORE = 25


@dataclass(frozen=True, order=True)
class Signal:
    kind: str
    value: str

    @property
    def weight(self):
        return WEIGHTS[self.kind]


@dataclass
class Decision:
    """The outcome of matching: machine_id None means a new machine."""

    machine_id: str | None
    score: int = 0
    # Other candidates that share signals with the registering machine.
    shared: dict = field(default_factory=dict)


def normalize_serial(value):
    """A serial as compared: trimmed, inner spaces single, case-folded; None for a placeholder."""
    text = placeholders.clean(value)
    return None if text is None else " ".join(text.split()).casefold()


def signals(inventory, boot_mac=None):
    """The identity signals of a cleaned inventory document, without duplicates."""
    found = set()

    def add(kind, value):
        if value is not None:
            found.add(Signal(kind, value))

    system = inventory.get("system") or {}
    if placeholders.uuid_trusted(system.get("uuid")):
        add("uuid", placeholders.normalize_uuid(system["uuid"]))
    add("system_serial", normalize_serial(system.get("serial")))
    add("chassis_serial", normalize_serial((inventory.get("chassis") or {}).get("serial")))
    add("board_serial", normalize_serial((inventory.get("baseboard") or {}).get("serial")))

    for mac in _macs(inventory, boot_mac):
        add("mac", mac)
    for disk in inventory.get("disks") or []:
        add("disk_serial", normalize_serial(disk.get("serial")))
        add("disk_serial", normalize_serial(disk.get("wwn")))
    for dimm in inventory.get("memory") or []:
        add("dimm_serial", normalize_serial(dimm.get("serial")))

    return sorted(found)


def _macs(inventory, boot_mac):
    # The permanent (burned-in) MAC survives bonding and MAC spoofing; the
    # current one is used only when the driver does not report a permanent one.
    macs = set()
    for nic in inventory.get("nics") or []:
        mac = normalize_mac(nic.get("permanent_mac") or "") or normalize_mac(nic.get("mac") or "")
        if _usable_mac(mac):
            macs.add(mac)
    # The MAC the firmware PXE-booted from is the burned-in one (no OS has run yet).
    boot = normalize_mac(boot_mac or "")
    if _usable_mac(boot):
        macs.add(boot)
    return macs


def _usable_mac(mac):
    if mac is None or placeholders.is_placeholder(mac):
        return False
    # The group bit marks a multicast address: never a NIC's own address.
    return not int(mac[:2], 16) & 0x01


def required_score(new_signals, known_signals):
    """The points a candidate must share to be the same machine (rule 1 above)."""
    known_points = sum(s.weight for s in set(known_signals))
    return max(MIN_MATCH_SCORE, min(MATCH_THRESHOLD, known_points))


def score(new_signals, known_signals):
    """(points shared, contradicted?) of a registration against one known machine."""
    known = set(known_signals)
    points = sum(s.weight for s in new_signals if s in known)

    contradicted = False
    for kind in STRONG_KINDS:
        new_values = {s.value for s in new_signals if s.kind == kind}
        known_values = {s.value for s in known if s.kind == kind}
        # Missing counts as different: same hardware reports the same strong values.
        if known_values and not new_values & known_values:
            contradicted = True
    return points, contradicted


def decide(new_signals, candidates):
    """Pick the known machine this registration is, or None for a new one.

    candidates: {machine_id: [Signal, ...]} for every live machine sharing at
    least one signal. Two candidates with the same best score are a tie, and a
    tie is a new machine with both shown as conflicts: picking one by id order
    would hand one machine's token and jobs to another on a coin flip (an
    agent can plant a victim's identifiers in its own history through an
    inventory job). The others stay visible in `shared`.
    """
    best, best_points, tied = None, 0, False
    shared = {}

    for machine_id in sorted(candidates):
        known = candidates[machine_id]
        points, contradicted = score(new_signals, known)
        shared[machine_id] = sorted(set(new_signals) & set(known))
        enough = points >= required_score(new_signals, known) and not contradicted
        if enough and points == best_points:
            tied = True
        if enough and points > best_points:
            best, best_points, tied = machine_id, points, False

    if tied:
        return Decision(None, best_points, shared)
    shared.pop(best, None)
    return Decision(best, best_points, shared)


def uuid_other_byte_order(uuid):
    """The same UUID with its first three fields byte-swapped (SMBIOS < 2.6 vs 2.6+).

    SMBIOS 2.6 made the first three fields little-endian; older tables and some
    firmware that fill DHCP option 97 use network order, so a PXE GUID may
    arrive in either.
    """
    text = placeholders.normalize_uuid(uuid)
    if text is None:
        return None
    a, b, c, rest = text[0:8], text[9:13], text[14:18], text[19:]

    def swap(field):
        return "".join(reversed([field[i : i + 2] for i in range(0, len(field), 2)]))

    return f"{swap(a)}-{swap(b)}-{swap(c)}-{rest}"


def pxe_guid_matches(pxe_guid, uuid):
    """True/False when both are known and equal in either byte order; None otherwise."""
    guid = placeholders.normalize_uuid(pxe_guid)
    system = placeholders.normalize_uuid(uuid)
    if guid is None or system is None:
        return None
    return guid in (system, uuid_other_byte_order(system))
