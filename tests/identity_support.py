"""Helpers for the identity, enrolment, auth and agent API tests.

`inventory(...)` builds a cleaned inventory document from a few identity
fields; `read_dmidecode(text)` is a small reader for `dmidecode` text output
(handles, record titles, "Name: value" fields) so the corpus dumps can feed
real firmware values into identity scoring. It is deliberately independent
of the agent's full parser in bootos/agent.
"""

import re

from appliance.proto.inventory import SCHEMA, validate

_HANDLE = re.compile(r"^Handle 0x([0-9A-Fa-f]{4}), DMI type (\d+), (\d+) bytes$")


def inventory(
    uuid=None,
    system_serial=None,
    chassis_serial=None,
    board_serial=None,
    nics=(),
    disk_serials=(),
    dimm_serials=(),
    clean=True,
):
    """An inventory document. nics: MACs, or (current, permanent) pairs."""
    nic_list = []
    for index, nic in enumerate(nics):
        current, permanent = (nic, None) if isinstance(nic, str) else nic
        nic_list.append({"name": f"eth{index}", "mac": current, "permanent_mac": permanent})

    document = {
        "schema": SCHEMA,
        "system": {"product": "Box", "serial": system_serial, "uuid": uuid},
        "chassis": {"serial": chassis_serial},
        "baseboard": {"serial": board_serial},
        "nics": nic_list,
        "disks": [{"name": f"sd{chr(97 + i)}", "serial": s} for i, s in enumerate(disk_serials)],
        "memory": [{"locator": f"DIMM{i}", "serial": s} for i, s in enumerate(dimm_serials)],
    }
    return validate(document) if clean else document


def registration(document, boot_mac, pxe_guid=None):
    """A registration message as the agent sends it (before validation)."""
    return {"protocol": 1, "boot_mac": boot_mac, "pxe_guid": pxe_guid, "inventory": document}


def read_dmidecode(text):
    """[(dmi type, title, {field: value})] from dmidecode's text output."""
    records = []
    current = None
    expect_title = False
    for line in text.splitlines():
        match = _HANDLE.match(line.strip())
        if match:
            current = (int(match.group(2)), None, {})
            records.append(current)
            expect_title = True
            continue
        if current is None or not line.strip():
            continue
        if expect_title:
            records[-1] = current = (current[0], line.strip(), current[2])
            expect_title = False
            continue
        # Fields are one tab deep; deeper lines are list items of the field above.
        if line.startswith("\t") and not line.startswith("\t\t") and ":" in line:
            name, _, value = line.strip().partition(":")
            current[2][name.strip()] = value.strip() if value.strip() else None
    return records


def _first(records, dmi_type):
    for record_type, _, fields in records:
        if record_type == dmi_type:
            return fields
    return {}


def inventory_from_dmidecode(text, macs=()):
    """An inventory document (not yet validated) holding the dump's values as reported."""
    records = read_dmidecode(text)
    system, board, chassis, bios = (_first(records, t) for t in (1, 2, 3, 0))
    version = re.search(r"^SMBIOS (\d+\.\d+(?:\.\d+)?) present", text, re.M)
    return {
        "schema": SCHEMA,
        "smbios_version": version.group(1) if version else None,
        "system": {
            "manufacturer": system.get("Manufacturer"),
            "product": system.get("Product Name"),
            "version": system.get("Version"),
            "serial": system.get("Serial Number"),
            "uuid": system.get("UUID"),
            "sku": system.get("SKU Number"),
            "family": system.get("Family"),
        },
        "baseboard": {
            "manufacturer": board.get("Manufacturer"),
            "product": board.get("Product Name"),
            "version": board.get("Version"),
            "serial": board.get("Serial Number"),
            "asset_tag": board.get("Asset Tag"),
        },
        "chassis": {
            "manufacturer": chassis.get("Manufacturer"),
            "type": chassis.get("Type"),
            "serial": chassis.get("Serial Number"),
            "asset_tag": chassis.get("Asset Tag"),
        },
        "bios": {
            "vendor": bios.get("Vendor"),
            "version": bios.get("Version"),
            "date": bios.get("Release Date"),
        },
        "memory": [
            {
                "locator": fields.get("Locator"),
                "bank": fields.get("Bank Locator"),
                "manufacturer": fields.get("Manufacturer"),
                "serial": fields.get("Serial Number"),
                "part_number": fields.get("Part Number"),
            }
            for record_type, _, fields in records
            if record_type == 17
        ],
        "nics": [{"name": f"eth{i}", "mac": mac} for i, mac in enumerate(macs)],
    }


def raw_identity_values(records):
    """Every serial, UUID and asset tag value the dump reports, as written."""
    names = ("Serial Number", "UUID", "Asset Tag")
    return [f[n] for _, _, f in records for n in names if f.get(n) is not None]
