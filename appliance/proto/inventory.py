"""The inventory document: one versioned schema shared by the agent and the core.

`validate(doc)` checks a document and returns a cleaned copy: strings trimmed,
MAC addresses in lower-case colon form, the SMBIOS UUID in canonical text,
placeholder values in identity fields (serials, UUID, asset tags) turned into
null, absent fields filled in as null or []. Fields this version does not
name are dropped, so an older appliance still reads a newer agent's document
of the same schema. A bad field raises InventoryError naming its path, e.g.
`nics[1].mac`. Pure Python: this module must never import trio, sockets or the
store.
"""

import re

from appliance.proto import placeholders

SCHEMA = "cloudboot.inventory/1"

# Bounds keep one registration from making the store hold megabytes.
MAX_STRING = 1024
MAX_ITEMS = 4096

_MAC = re.compile(r"^[0-9a-f]{2}([:-]?)[0-9a-f]{2}(\1[0-9a-f]{2}){4}$")


class InventoryError(ValueError):
    """A field of an inventory document is malformed; `path` says which one."""

    def __init__(self, path, message):
        super().__init__(f"inventory {path}: {message}")
        self.path = path
        self.message = message


def _text(value, path):
    if value is None:
        return None
    if not isinstance(value, str):
        raise InventoryError(path, f"expected text or null, got {value!r}")
    if len(value) > MAX_STRING:
        raise InventoryError(path, f"text longer than {MAX_STRING} characters")
    value = value.strip()
    return value or None


def _identity_text(value, path):
    # Serials and asset tags: a template value identifies nothing (placeholders.py).
    return placeholders.clean(_text(value, path))


def _count(value, path):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InventoryError(path, f"expected a whole number >= 0 or null, got {value!r}")
    return value


def _flag(value, path):
    if value is None or isinstance(value, bool):
        return value
    # Link state arrives as sysfs operstate text from some collectors.
    if isinstance(value, str) and value.strip().lower() in ("up", "down", "unknown"):
        return {"up": True, "down": False}.get(value.strip().lower())
    raise InventoryError(path, f"expected true, false or null, got {value!r}")


def normalize_mac(value):
    """Lower-case "aa:bb:cc:dd:ee:ff", or None when value is not a 48-bit MAC address."""
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    if not _MAC.match(text):
        return None
    digits = re.sub(r"[^0-9a-f]", "", text)
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def _mac(value, path):
    if value is None:
        return None
    mac = normalize_mac(value)
    if mac is None:
        raise InventoryError(path, f"expected a MAC address like 52:54:00:12:34:56, got {value!r}")
    return mac


def _uuid(value, path):
    text = _text(value, path)
    if placeholders.clean(text) is None:
        return None
    uuid = placeholders.normalize_uuid(text)
    if uuid is None:
        raise InventoryError(path, f"expected a UUID like 4c4c4544-..., got {value!r}")
    return uuid


def _loose(value, path):
    # nvme_namespaces: the agent's layout may grow; keep scalars and flat objects.
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return _text(value, path)
    if isinstance(value, dict):
        return {str(k): _loose(v, f"{path}.{k}") for k, v in value.items() if not _nested(v)}
    raise InventoryError(path, f"expected a scalar or a flat object, got {value!r}")


def _nested(value):
    return isinstance(value, dict | list)


_SYSTEM = {
    "manufacturer": _text,
    "product": _text,
    "version": _text,
    "serial": _identity_text,
    "uuid": _uuid,
    "sku": _text,
    "family": _text,
}
_BASEBOARD = {
    "manufacturer": _text,
    "product": _text,
    "version": _text,
    "serial": _identity_text,
    "asset_tag": _identity_text,
}
_CHASSIS = {
    "manufacturer": _text,
    "type": _text,
    "serial": _identity_text,
    "asset_tag": _identity_text,
}
_BIOS = {"vendor": _text, "version": _text, "date": _text}
_CPU = {
    "socket": _text,
    "manufacturer": _text,
    "model": _text,
    "cores": _count,
    "threads": _count,
    "max_speed_mhz": _count,
}
_DIMM = {
    "locator": _text,
    "bank": _text,
    "present": _flag,
    "size_mb": _count,
    "type": _text,
    "speed_mts": _count,
    "manufacturer": _text,
    "serial": _identity_text,
    "part_number": _text,
}
_NIC = {
    "name": _text,
    "mac": _mac,
    "permanent_mac": _mac,
    "driver": _text,
    "link": _flag,
    "speed_mbps": _count,
    "pci_address": _text,
}
_PCI = {"address": _text, "vendor_id": _text, "device_id": _text, "class": _text}
_RAID = {
    "pci_address": _text,
    "vendor_id": _text,
    "device_id": _text,
    "driver": _text,
    "model": _text,
}
_BMC = {"ipv4": _text, "mac": _mac}


def _record(fields):
    def check(value, path):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise InventoryError(path, f"expected an object, got {value!r}")
        return {name: rule(value.get(name), f"{path}.{name}") for name, rule in fields.items()}

    return check


def _list_of(rule):
    def check(value, path):
        if value is None:
            return []
        if not isinstance(value, list):
            raise InventoryError(path, f"expected a list, got {value!r}")
        if len(value) > MAX_ITEMS:
            raise InventoryError(path, f"more than {MAX_ITEMS} entries ({len(value)})")
        return [rule(item, f"{path}[{index}]") for index, item in enumerate(value)]

    return check


def _optional(rule):
    def check(value, path):
        return None if value is None else rule(value, path)

    return check


_DISK = {
    "name": _text,
    "size_bytes": _count,
    "model": _text,
    "serial": _identity_text,
    "wwn": _identity_text,
    "rotational": _flag,
    "transport": _text,
    "by_path": _text,
    "nvme_namespaces": _list_of(_loose),
}

_DOCUMENT = {
    "smbios_version": _text,
    "system": _record(_SYSTEM),
    "baseboard": _record(_BASEBOARD),
    "chassis": _record(_CHASSIS),
    "bios": _record(_BIOS),
    "cpus": _list_of(_record(_CPU)),
    "memory": _list_of(_record(_DIMM)),
    "disks": _list_of(_record(_DISK)),
    "nics": _list_of(_record(_NIC)),
    "pci": _list_of(_record(_PCI)),
    "raid_controllers": _list_of(_record(_RAID)),
    "bmc": _optional(_record(_BMC)),
    # What the agent could not read (a truncated SMBIOS table, a tool that
    # failed): kept with the document so a technician sees why a field is null.
    "warnings": _list_of(_text),
}


def validate(doc):
    """Return the cleaned document, or raise InventoryError naming the bad field."""
    if not isinstance(doc, dict):
        raise InventoryError("(document)", f"expected a JSON object, got {type(doc).__name__}")

    schema = doc.get("schema")
    if schema != SCHEMA:
        raise InventoryError("schema", f"expected {SCHEMA!r}, got {schema!r}")

    cleaned = {"schema": SCHEMA}
    for name, rule in _DOCUMENT.items():
        cleaned[name] = rule(doc.get(name), name)
    return cleaned


def empty():
    """A valid document with every field absent (for tests and first registrations)."""
    return validate({"schema": SCHEMA})
