"""Read `dmidecode` text output and /sys/class/dmi/id files into SMBIOS records.

The records have the same keys as the raw-table decoder in _smbios, so the
inventory builder does not care where they came from. dmidecode text is the
source for captured trees (and the real-world corpus is dmidecode text);
/sys/class/dmi/id is the last resort when neither raw tables nor dmidecode
output exist (it has no processors and no memory devices).

Pure functions over text. Must never raise on bad input.
"""

import re

from appliance.proto.placeholders import normalize_uuid
from bootos.agent.inventory._raw import decimal
from bootos.agent.inventory._smbios import CHASSIS_TYPES

_HANDLE = re.compile(r"^Handle 0x[0-9A-Fa-f]+, DMI type ([0-9]+), ([0-9]+) bytes")
_VERSION = re.compile(r"^SMBIOS ([0-9]+\.[0-9]+(?:\.[0-9]+)?) present\.")
_NUMBER = re.compile(r"^([0-9]+)\s*(\w+/?\w*)?")

# dmidecode field names per record type, mapped to the record keys.
FIELDS = {
    0: {"Vendor": "vendor", "Version": "version", "Release Date": "date"},
    1: {
        "Manufacturer": "manufacturer",
        "Product Name": "product",
        "Version": "version",
        "Serial Number": "serial",
        "UUID": "uuid",
        "SKU Number": "sku",
        "Family": "family",
    },
    2: {
        "Manufacturer": "manufacturer",
        "Product Name": "product",
        "Version": "version",
        "Serial Number": "serial",
        "Asset Tag": "asset_tag",
    },
    3: {
        "Manufacturer": "manufacturer",
        "Type": "chassis_type",
        "Serial Number": "serial",
        "Asset Tag": "asset_tag",
    },
    4: {
        "Socket Designation": "socket",
        "Manufacturer": "manufacturer",
        "Version": "model",
        "Status": "populated",
        "Max Speed": "max_speed_mhz",
        "Core Count": "cores",
        "Thread Count": "threads",
    },
    17: {
        "Locator": "locator",
        "Bank Locator": "bank",
        "Size": "size_mb",
        "Type": "memory_type",
        "Speed": "speed_mts",
        "Manufacturer": "manufacturer",
        "Serial Number": "serial",
        "Part Number": "part_number",
    },
}

_SIZE_UNITS_MB = {"kB": 1 / 1024, "KB": 1 / 1024, "MB": 1, "GB": 1024, "TB": 1024 * 1024}


def _number(text):
    match = _NUMBER.match(text)
    return int(match.group(1)) if match else None


def _size_mb(text):
    # "16384 MB", "64 GB", "No Module Installed", "Not Installed", "Unknown".
    match = _NUMBER.match(text)
    if not match:
        return None
    return int(int(match.group(1)) * _SIZE_UNITS_MB.get(match.group(2) or "MB", 1))


def _convert(key, text):
    if key == "uuid":
        return normalize_uuid(text)
    if key == "populated":
        return not text.startswith("Unpopulated")
    if key in ("max_speed_mhz", "cores", "threads", "speed_mts"):
        return _number(text)
    if key == "size_mb":
        return _size_mb(text)
    return text


def _finish(record):
    if record["type"] == 17:
        # "No Module Installed" says empty; a size says filled; "Unknown" says neither.
        if record.pop("_no_module", False):
            record["present"] = False
        else:
            record["present"] = True if record.get("size_mb") is not None else None
    return record


def _add_field(record, line):
    name, sep, value = line.strip().partition(":")
    if not sep:
        return
    fields = FIELDS[record["type"]]
    key = fields.get(name)
    if key is None:
        return

    # dmidecode prints values as-is after ": "; keep inner spacing, the
    # builder trims and drops placeholders.
    text = value[1:] if value.startswith(" ") else value
    if key == "size_mb" and text.strip() in ("No Module Installed", "Not Installed"):
        record["_no_module"] = True
    record[key] = _convert(key, text)


def parse_dmidecode(text, warnings):
    """(smbios_version, records) from `dmidecode` output text."""
    version = None
    records = []
    record = None
    for line in text.splitlines():
        if record is not None and line.startswith("\t") and not line.startswith("\t\t"):
            _add_field(record, line)
            continue

        if record is not None and not line.strip():
            records.append(_finish(record))
            record = None

        version_match = _VERSION.match(line)
        if version_match:
            version = version_match.group(1)
            continue

        handle_match = _HANDLE.match(line)
        if handle_match and int(handle_match.group(1)) in FIELDS:
            if record is not None:
                records.append(_finish(record))
            record = {"type": int(handle_match.group(1))}

    if record is not None:
        records.append(_finish(record))

    if version is None and not records:
        warnings.append("dmidecode output has no SMBIOS records")
    return version, records


# /sys/class/dmi/id file names (drivers/firmware/dmi-id.c) per record.
DMI_ID_FILES = {
    0: {"bios_vendor": "vendor", "bios_version": "version", "bios_date": "date"},
    1: {
        "sys_vendor": "manufacturer",
        "product_name": "product",
        "product_version": "version",
        "product_serial": "serial",
        "product_uuid": "uuid",
        "product_sku": "sku",
        "product_family": "family",
    },
    2: {
        "board_vendor": "manufacturer",
        "board_name": "product",
        "board_version": "version",
        "board_serial": "serial",
        "board_asset_tag": "asset_tag",
    },
    3: {
        "chassis_vendor": "manufacturer",
        "chassis_type": "chassis_type",
        "chassis_serial": "serial",
        "chassis_asset_tag": "asset_tag",
    },
}


def records_from_dmi_id(files):
    """Records for types 0-3 from {file name: text} of /sys/class/dmi/id.

    The kernel already decoded the UUID in the byte order of the table's
    version, so it is used as written. chassis_type holds the number.
    """
    records = []
    for type_, names in DMI_ID_FILES.items():
        record = {"type": type_}
        for file_name, key in names.items():
            if file_name in files:
                record[key] = files[file_name].strip()
        if len(record) == 1:
            continue

        if type_ == 1:
            record["uuid"] = normalize_uuid(record.get("uuid"))
        code = decimal(record.get("chassis_type")) if type_ == 3 else None
        if code is not None:
            record["chassis_type"] = CHASSIS_TYPES.get(code & 0x7F)
        records.append(record)
    return records
