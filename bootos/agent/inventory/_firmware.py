"""Turn SMBIOS records (from raw tables, dmidecode text or /sys/class/dmi/id) and
/proc/cpuinfo into the firmware parts of the inventory document.

Every text value goes through appliance.proto.placeholders.clean, so the
document holds null where firmware wrote template text. Pure functions; must
never raise on odd records.
"""

from appliance.proto.placeholders import SHARED_UUIDS, clean, normalize_uuid
from bootos.agent.inventory._raw import decimal

# Memory and processor strings that mean "no module here" or "nothing known";
# kept out of the shared list because they are fine words elsewhere.
_NOT_A_MEMORY_TYPE = {"other", "unknown"}


def _first(records, type_):
    for record in records:
        if record["type"] == type_:
            return record
    return {}


def _cleaned(record, keys):
    return {key: clean(record.get(key)) for key in keys}


def _system_uuid(value):
    # Absent and all-zero/all-F read as null; the AMI template UUID that
    # thousands of boards share is a placeholder too (see placeholders.py).
    text = normalize_uuid(clean(value))
    if text is None or text in SHARED_UUIDS:
        return None
    return text


def system_section(records):
    record = _first(records, 1)
    section = _cleaned(record, ("manufacturer", "product", "version", "serial"))
    section["uuid"] = _system_uuid(record.get("uuid"))
    section.update(_cleaned(record, ("sku", "family")))
    return section


def baseboard_section(records):
    keys = ("manufacturer", "product", "version", "serial", "asset_tag")
    return _cleaned(_first(records, 2), keys)


def chassis_section(records):
    record = _first(records, 3)
    return {
        "manufacturer": clean(record.get("manufacturer")),
        "type": clean(record.get("chassis_type")),
        "serial": clean(record.get("serial")),
        "asset_tag": clean(record.get("asset_tag")),
    }


def bios_section(records):
    return _cleaned(_first(records, 0), ("vendor", "version", "date"))


def _count(value):
    return value if isinstance(value, int) and value > 0 else None


def cpus_from_records(records):
    """One entry per populated processor socket (type 4)."""
    cpus = []
    for record in records:
        if record["type"] != 4:
            continue
        model = clean(record.get("model"))
        if record.get("populated") is False or (record.get("populated") is None and not model):
            continue

        cpus.append(
            {
                "socket": clean(record.get("socket")),
                "manufacturer": clean(record.get("manufacturer")),
                "model": model,
                "cores": _count(record.get("cores")),
                "threads": _count(record.get("threads")),
                "max_speed_mhz": _count(record.get("max_speed_mhz")),
            }
        )
    return cpus


def _memory_type(value):
    text = clean(value)
    if text is None or text.casefold() in _NOT_A_MEMORY_TYPE:
        return None
    return text


def memory_from_records(records):
    """One entry per memory slot (type 17); empty slots have present false."""
    slots = []
    for record in records:
        if record["type"] != 17:
            continue
        present = record.get("present")
        filled = present is not False
        slots.append(
            {
                "locator": clean(record.get("locator")),
                "bank": clean(record.get("bank")),
                "present": present,
                "size_mb": _count(record.get("size_mb")) if filled else None,
                "type": _memory_type(record.get("memory_type")) if filled else None,
                "speed_mts": _count(record.get("speed_mts")) if filled else None,
                "manufacturer": clean(record.get("manufacturer")) if filled else None,
                "serial": clean(record.get("serial")) if filled else None,
                "part_number": clean(record.get("part_number")) if filled else None,
            }
        )
    return slots


_CPU_VENDORS = {
    "GenuineIntel": "Intel",
    "AuthenticAMD": "AMD",
    "HygonGenuine": "Hygon",
    "CentaurHauls": "Centaur",
    "Shanghai": "Zhaoxin",
}


def _cpuinfo_blocks(text):
    block = {}
    for line in text.splitlines():
        if not line.strip():
            if block:
                yield block
            block = {}
            continue
        key, sep, value = line.partition(":")
        if sep:
            block[key.strip()] = value.strip()
    if block:
        yield block


def cpus_from_cpuinfo(text):
    """Sockets from /proc/cpuinfo, for machines whose SMBIOS lists no processor.

    x86 kernels give "physical id", "cpu cores" and "model name"; arm64 gives
    none of these, so an arm64 machine reads as one socket of unknown model.
    """
    sockets = {}
    for block in _cpuinfo_blocks(text):
        if "processor" not in block:
            continue
        sockets.setdefault(block.get("physical id", "0"), []).append(block)

    cpus = []
    for _, blocks in sorted(sockets.items()):
        first = blocks[0]
        cores = decimal(first.get("cpu cores"))
        vendor = first.get("vendor_id")
        cpus.append(
            {
                "socket": None,
                "manufacturer": clean(_CPU_VENDORS.get(vendor, vendor)),
                "model": clean(first.get("model name")),
                "cores": cores or len(blocks),
                "threads": len(blocks),
                "max_speed_mhz": None,
            }
        )
    return cpus
