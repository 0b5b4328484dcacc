"""Real firmware values from the DMI corpus (linuxhw/DMI dumps) fed to identity scoring.

The dumps were anonymised by their publisher ("--" in every serial, UUID and
asset tag) and keep the vendors' own template text (To be filled by O.E.M.,
Default string, 0123456789, NO DIMM). None of it may become an identifier.
"""

import json

import pytest

from appliance.core import identity, machines
from appliance.proto import agent as protocol
from appliance.proto import placeholders
from appliance.proto.inventory import validate
from appliance.store import Store
from tests.identity_support import (
    inventory_from_dmidecode,
    raw_identity_values,
    read_dmidecode,
    registration,
)

pytestmark = pytest.mark.corpus


def dumps(corpus):
    found = sorted((corpus / "dmi").glob("*.dmidecode.txt"))
    assert len(found) == 11, "the corpus names 11 DMI dumps (SOURCES.md)"
    return found


def test_the_reader_finds_the_system_record_of_every_dump(corpus):
    for path in dumps(corpus):
        records = read_dmidecode(path.read_text())
        titles = {title for _, title, _ in records}
        assert "System Information" in titles, path.name
        assert raw_identity_values(records), path.name


def test_placeholder_values_in_the_dumps_never_become_identifiers(corpus):
    for path in dumps(corpus):
        text = path.read_text()
        raw = inventory_from_dmidecode(text)

        # Every serial, UUID and asset tag in these dumps is a placeholder...
        for value in raw_identity_values(read_dmidecode(text)):
            assert placeholders.is_placeholder(value), (path.name, value)

        # ...so identity finds nothing in the document as reported,
        assert identity.signals(raw) == [], path.name
        # and the schema turns them into null before anything stores them.
        cleaned = validate(raw)
        for section in ("system", "baseboard", "chassis"):
            assert cleaned[section]["serial"] is None, (path.name, section)
        assert cleaned["system"]["uuid"] is None, path.name
        assert all(d["serial"] is None for d in cleaned["memory"]), path.name


def test_vendor_template_text_survives_where_it_is_not_an_identifier(corpus):
    # Placeholders are dropped only from identity fields: a product name or
    # BIOS version is kept as reported (trimmed), for the operator to read.
    text = (corpus / "dmi" / "huawei-taishan2180-hi1612.dmidecode.txt").read_text()
    cleaned = validate(inventory_from_dmidecode(text))
    assert cleaned["system"]["product"] == "Taishan 2180"
    assert cleaned["smbios_version"] == "3.0"


async def test_every_dump_registers_as_its_own_machine(corpus, tmp_path):
    store = await Store.open(tmp_path / "cloudboot.db")
    try:
        ids = set()
        for index, path in enumerate(dumps(corpus)):
            mac = f"52:54:00:00:10:{index:02x}"
            document = inventory_from_dmidecode(path.read_text(), macs=[mac])
            message = protocol.validate_registration(registration(document, mac))
            outcome = await machines.register(store, message, "127.0.0.1", ttl_days=30)
            ids.add(outcome["machine_id"])

            machine = await store.read(machines.machine_document, outcome["machine_id"])
            assert machine["identifiers"] == [{"kind": "mac", "value": mac}], path.name
            assert machine["uuid_trusted"] is False
            assert machine["state"] == "inventoried"
        assert len(ids) == 11
    finally:
        await store.close()


def test_redfish_uuids_from_a_supermicro_bmc(corpus):
    # The service root's UUID is zeros followed by the BMC's MAC (a NIC, not a
    # system); the ComputerSystem UUID is a real one.
    folder = corpus / "redfish"
    root = json.loads((folder / "bmclib__supermicro-redfish-1.14.0__ServiceRoot.json").read_text())
    system = json.loads((folder / "bmclib__supermicro-sys-510t__Systems_1.json").read_text())
    assert root["UUID"].startswith("00000000-0000-0000-0000-")
    assert placeholders.uuid_trusted(root["UUID"]) is False
    assert placeholders.uuid_trusted(system["UUID"]) is True

    document = validate(
        {
            "schema": "cloudboot.inventory/1",
            "system": {"uuid": system["UUID"], "sku": system["SKU"]},
        }
    )
    signals = identity.signals(document)
    assert signals == [identity.Signal("uuid", system["UUID"].lower())]
