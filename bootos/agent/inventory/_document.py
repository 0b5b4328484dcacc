"""Build the inventory document (schema cloudboot.inventory/1) from raw inputs.

Which source wins for firmware data, in order:
1. the raw SMBIOS tables under /sys/firmware/dmi/tables (authoritative: the
   bytes the firmware wrote, decoded here);
2. `dmidecode` text output captured as cloudboot-capture/tools/dmidecode.txt
   (what captured trees and the real-world corpus carry);
3. /sys/class/dmi/id files (no processors, no memory devices).
Processors fall back to /proc/cpuinfo when SMBIOS lists none. Disks, NICs and
the system section fall back to captured `lshw -json` output when the primary
sources gave nothing.

Every problem becomes a line in "warnings"; a part whose parser fails for an
unforeseen reason is left empty with a warning, so the agent always has a
document to send. Pure: never reads or writes anything itself.
"""

import logging

from bootos.agent.inventory import _firmware, _network, _storage
from bootos.agent.inventory._dmidecode import (
    DMI_ID_FILES,
    parse_dmidecode,
    records_from_dmi_id,
)
from bootos.agent.inventory._lshw import parse_lshw
from bootos.agent.inventory._raw import DMI_ID_DIR, SMBIOS_FILES, TOOLS_DIR, text
from bootos.agent.inventory._smbios import records_from_tables

log = logging.getLogger(__name__)

SCHEMA = "cloudboot.inventory/1"


def _decode_tool_text(data, name, warnings):
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        warnings.append(f"{name} output is not UTF-8; read byte for byte as Latin-1")
        return data.decode("latin-1")


def _from_tables(raw, warnings):
    entry_point, table = (raw.get(rel) for rel in SMBIOS_FILES)
    if not isinstance(table, bytes) or not table:
        return None, []
    if not isinstance(entry_point, bytes):
        warnings.append("SMBIOS table present without its entry point; version unknown")
        entry_point = None
    return records_from_tables(entry_point, table, warnings)


def _from_dmidecode(raw, warnings):
    data = raw.get(f"{TOOLS_DIR}/dmidecode.txt")
    if not isinstance(data, bytes):
        return None, []
    return parse_dmidecode(_decode_tool_text(data, "dmidecode", warnings), warnings)


def _from_dmi_id(raw):
    names = [name for files in DMI_ID_FILES.values() for name in files]
    files = {name: text(raw, f"{DMI_ID_DIR}/{name}") for name in names}
    return None, records_from_dmi_id({k: v for k, v in files.items() if v is not None})


def firmware_records(raw, warnings):
    """(smbios_version, records) from the best firmware source present."""
    for source, read in (
        ("raw SMBIOS tables", _from_tables),
        ("dmidecode output", _from_dmidecode),
    ):
        version, records = read(raw, warnings)
        if records:
            return version, records
        if version is not None:
            warnings.append(f"{source} held no usable structures")

    version, records = _from_dmi_id(raw)
    if not records:
        warnings.append("no SMBIOS data: no raw tables, no dmidecode output, no /sys/class/dmi/id")
    return version, records


def _guarded(name, warnings, default, parse, *args):
    """Run one part's parser; a failure empties that part only."""
    try:
        return parse(*args)
    except Exception as error:  # noqa: BLE001 - any parser bug must not cost the document
        # No traceback on the console (the technician needs one clear line);
        # the details are there at debug level for a developer.
        log.warning("inventory part %s failed: %r", name, error)
        log.debug("inventory part %s failed", name, exc_info=True)
        warnings.append(f"could not read {name}: {type(error).__name__}: {error}")
        return default


def _lshw(raw, warnings):
    data = raw.get(f"{TOOLS_DIR}/lshw.txt")
    if not isinstance(data, bytes):
        return {"system": None, "disks": [], "nics": []}
    return parse_lshw(data, warnings)


def _tool_failures(raw):
    prefix = f"{TOOLS_DIR}/"
    return [
        text(raw, key) or f"{key[len(prefix) :]} failed"
        for key in sorted(raw)
        if key.startswith(prefix) and key.endswith(".err")
    ]


def _cpus(records, raw):
    cpus = _firmware.cpus_from_records(records)
    if cpus:
        return cpus
    cpuinfo = text(raw, "proc/cpuinfo")
    return _firmware.cpus_from_cpuinfo(cpuinfo) if cpuinfo else []


def build_document(raw):
    """The inventory document for one raw-input dict (see _raw.gather)."""
    warnings = []
    version, records = _guarded("SMBIOS", warnings, (None, []), firmware_records, raw, warnings)
    lshw = _guarded(
        "lshw output", warnings, {"system": None, "disks": [], "nics": []}, _lshw, raw, warnings
    )

    system = _guarded("system", warnings, None, _firmware.system_section, records)
    if not any((system or {}).values()) and lshw["system"]:
        system = lshw["system"]

    pci = _guarded("PCI devices", warnings, [], _network.parse_pci, raw)
    document = {
        "schema": SCHEMA,
        "smbios_version": version,
        "system": system,
        "baseboard": _guarded("baseboard", warnings, None, _firmware.baseboard_section, records),
        "chassis": _guarded("chassis", warnings, None, _firmware.chassis_section, records),
        "bios": _guarded("BIOS", warnings, None, _firmware.bios_section, records),
        "cpus": _guarded("processors", warnings, [], _cpus, records, raw),
        "memory": _guarded("memory", warnings, [], _firmware.memory_from_records, records),
        "disks": _guarded("disks", warnings, [], _storage.parse_disks, raw, warnings)
        or lshw["disks"],
        "nics": _guarded("NICs", warnings, [], _network.parse_nics, raw) or lshw["nics"],
        "pci": pci,
        "raid_controllers": _guarded(
            "RAID controllers", warnings, [], _network.raid_controllers, raw, pci
        ),
        "bmc": _guarded("BMC", warnings, None, _network.parse_bmc, raw),
    }
    warnings.extend(_tool_failures(raw))
    document["warnings"] = warnings
    return document
