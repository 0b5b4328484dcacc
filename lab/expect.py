"""Compare what a lab VM registered with what QEMU was told it is.

The agent reads SMBIOS, disks and NICs from the running BootOS; QEMU was given
those values on its command line (lab/vm.py). A difference means the agent, the
store or the API lost or changed something on the way, which is the point of
the check. Pure functions over dicts: no I/O.
"""


def find_machine(listing, mac):
    """The machine record in a GET /api/v1/machines answer whose boot MAC is mac, or None."""
    if isinstance(listing, dict):
        for key in ("machines", "items", "data"):
            if isinstance(listing.get(key), list):
                listing = listing[key]
                break
    if not isinstance(listing, list):
        return None

    mac = mac.lower()
    for machine in listing:
        if not isinstance(machine, dict):
            continue
        boot_mac = str(machine.get("boot_mac") or machine.get("mac") or "").lower()
        if boot_mac.replace("-", ":") == mac:
            return machine
    return None


def inventory_document(snapshot):
    """The inventory document inside a GET .../inventory answer (a snapshot wraps it)."""
    if isinstance(snapshot, dict) and isinstance(snapshot.get("inventory"), dict):
        return snapshot["inventory"]
    return snapshot


def mismatches(spec, inventory):
    """Sentences naming each way inventory differs from spec; empty when they agree."""
    if not isinstance(inventory, dict):
        return [f"no inventory document (got {type(inventory).__name__})"]

    problems = []
    system = inventory.get("system") or {}
    expected = {
        "manufacturer": spec.manufacturer,
        "product": spec.product,
        "serial": spec.serial,
        "uuid": spec.uuid.lower(),
    }
    for key, want in expected.items():
        got = system.get(key)
        got = got.lower() if key == "uuid" and isinstance(got, str) else got
        if got != want:
            problems.append(f"system.{key}: QEMU gave {want!r}, inventory has {got!r}")

    problems += _disk_mismatches(spec, inventory.get("disks") or [])
    problems += _nic_mismatches(spec, inventory.get("nics") or [])
    return problems


def _disk_mismatches(spec, disks):
    want = sorted((d.serial, d.size_bytes) for d in spec.disks)
    got = sorted((d.get("serial"), d.get("size_bytes")) for d in disks if isinstance(d, dict))
    if got != want:
        return [f"disks (serial, size): QEMU gave {want}, inventory has {got}"]
    return []


def _nic_mismatches(spec, nics):
    want = sorted([spec.mac, spec.second_mac])
    got = sorted(
        str(n.get("permanent_mac") or n.get("mac") or "").lower()
        for n in nics
        if isinstance(n, dict) and n.get("name") != "lo"
    )
    if got != want:
        return [f"NIC MACs: QEMU gave {want}, inventory has {got}"]
    return []
