"""Registration through the machine service on a real store: identity cases end to end."""

import pytest

from appliance.core import audit, machines
from appliance.proto import agent as protocol
from appliance.store import Store
from tests.identity_support import inventory, registration

AMI_UUID = "03000200-0400-0500-0006-000700080009"


@pytest.fixture
async def store(tmp_path):
    store = await Store.open(tmp_path / "cloudboot.db")
    yield store
    await store.close()


async def register(store, document, boot_mac, pxe_guid=None, source="127.0.0.1"):
    message = protocol.validate_registration(registration(document, boot_mac, pxe_guid))
    return await machines.register(store, message, source, ttl_days=30)


async def document(store, machine_id):
    return await store.read(machines.machine_document, machine_id)


def _count(conn, table):
    return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


async def count(store, table="machines"):
    return await store.read(_count, table)


async def test_shared_and_placeholder_uuids_never_merge_machines(store):
    reports = [
        (AMI_UUID, "52:54:00:00:00:01"),
        (AMI_UUID, "52:54:00:00:00:02"),
        ("00000000-0000-0000-0000-000000000000", "52:54:00:00:00:03"),
        ("FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF", "52:54:00:00:00:04"),
        ("00000000-0000-0000-0000-525400000005", "52:54:00:00:00:05"),
    ]
    ids = []
    for uuid, mac in reports:
        outcome = await register(store, inventory(uuid=uuid, nics=[mac]), mac)
        assert outcome["new"]
        ids.append(outcome["machine_id"])

    assert len(set(ids)) == 5
    for machine_id in ids:
        machine = await document(store, machine_id)
        assert machine["uuid_trusted"] is False
        assert [i["kind"] for i in machine["identifiers"]] == ["mac"]
        assert machine["conflicts"] == []

    # Each comes back as itself on its next boot.
    for (uuid, mac), machine_id in zip(reports, ids, strict=True):
        again = await register(store, inventory(uuid=uuid, nics=[mac]), mac)
        assert again["machine_id"] == machine_id
    assert await count(store) == 5

    # The shared template UUID is still shown as reported, just not trusted.
    assert (await document(store, ids[0]))["smbios_uuid"] == AMI_UUID


async def test_placeholder_serials_in_any_case_and_padding_stay_separate_machines(store):
    reports = [
        ("System Serial Number", "11111111-2222-3333-4444-000000000001", "52:54:00:00:01:01"),
        ("  default STRING ", "11111111-2222-3333-4444-000000000002", "52:54:00:00:01:02"),
        ("0123456789", "11111111-2222-3333-4444-000000000003", "52:54:00:00:01:03"),
    ]
    ids = set()
    for serial, uuid, mac in reports:
        doc = inventory(
            uuid=uuid, system_serial=serial, board_serial=" TO BE FILLED BY O.E.M. ", nics=[mac]
        )
        ids.add((await register(store, doc, mac))["machine_id"])

    assert len(ids) == 3
    for machine_id in ids:
        machine = await document(store, machine_id)
        assert sorted(i["kind"] for i in machine["identifiers"]) == ["mac", "uuid"]
        assert machine["system_serial"] is None
        assert machine["uuid_trusted"] is True
        assert machine["conflicts"] == []


async def test_bonded_nics_and_reordered_ports_stay_the_same_machine(store):
    uuid = "4c4c4544-0042-3510-8053-b4c04f595231"
    first = inventory(
        uuid=uuid,
        chassis_serial="CZ1234ABCD",
        nics=["b4:96:91:00:00:01", "b4:96:91:00:00:02"],
    )
    machine_id = (await register(store, first, "b4:96:91:00:00:01"))["machine_id"]

    # In a bond, port 2 takes port 1's MAC as its current address and the
    # driver does not report the permanent one; the ports also swapped names.
    bonded = inventory(
        uuid=uuid,
        chassis_serial="CZ1234ABCD",
        nics=["b4:96:91:00:00:01", "b4:96:91:00:00:01"],
    )
    again = await register(store, bonded, "b4:96:91:00:00:01")
    assert again["machine_id"] == machine_id
    assert not again["new"]

    # A bond with a locally administered MAC on every port, permanent MACs reported.
    spoofed = inventory(
        uuid=uuid,
        chassis_serial="CZ1234ABCD",
        nics=[("02:00:00:aa:bb:cc", "b4:96:91:00:00:02"), ("02:00:00:aa:bb:cc", None)],
    )
    assert (await register(store, spoofed, "b4:96:91:00:00:02"))["machine_id"] == machine_id
    assert await count(store) == 1
    assert (await document(store, machine_id))["registrations"] == 3


async def test_two_live_machines_claiming_one_serial_are_a_conflict_not_a_merge(store):
    a = inventory(
        uuid="aaaaaaaa-0000-4000-8000-000000000001",
        system_serial="SN-1",
        nics=["52:54:00:00:02:01"],
    )
    b = inventory(
        uuid="aaaaaaaa-0000-4000-8000-000000000002",
        system_serial="sn-1 ",
        nics=["52:54:00:00:02:02"],
    )
    first = await register(store, a, "52:54:00:00:02:01")
    second = await register(store, b, "52:54:00:00:02:02")
    assert second["new"] and second["machine_id"] != first["machine_id"]

    conflicts = (await document(store, first["machine_id"]))["conflicts"]
    assert conflicts == [
        {"kind": "system_serial", "value": "sn-1", "machine_id": second["machine_id"]}
    ]
    events = await store.read(audit.events, "machine", second["machine_id"])
    registered = [e for e in events if e["action"] == "machine.register"][0]
    assert registered["details"]["shares_identifiers_with"] == {
        first["machine_id"]: ["system_serial=sn-1"]
    }

    # Retiring one ends the conflict; the retired machine is out of matching.
    await machines.retire(store, second["machine_id"], actor="alice")
    assert (await document(store, first["machine_id"]))["conflicts"] == []


async def test_a_retired_machine_that_boots_again_is_a_new_machine(store):
    doc = inventory(uuid="bbbbbbbb-0000-4000-8000-000000000001", nics=["52:54:00:00:03:01"])
    old = (await register(store, doc, "52:54:00:00:03:01"))["machine_id"]
    await machines.retire(store, old, actor="alice")

    again = await register(store, doc, "52:54:00:00:03:01")
    assert again["new"] and again["machine_id"] != old
    assert again["approved"] is False


async def test_pxe_guid_is_linked_in_either_byte_order(store):
    uuid = "4c4c4544-0042-3510-8053-b4c04f595231"
    swapped = "44454c4c-4200-1035-8053-b4c04f595231"
    doc = inventory(uuid=uuid, nics=["52:54:00:00:04:01"])
    machine_id = (await register(store, doc, "52:54:00:00:04:01", pxe_guid=swapped))["machine_id"]

    machine = await document(store, machine_id)
    assert machine["pxe_guid"] == swapped
    assert machine["pxe_guid_matches"] is True
    assert await store.read(machines.find_by_pxe_guid, uuid) == [machine_id]
    assert await store.read(machines.find_by_pxe_guid, swapped.upper()) == [machine_id]

    other = inventory(uuid="4c4c4544-0000-0000-0000-000000000001", nics=["52:54:00:00:04:02"])
    mismatch = await register(store, other, "52:54:00:00:04:02", pxe_guid=swapped)
    assert (await document(store, mismatch["machine_id"]))["pxe_guid_matches"] is False


async def test_states_and_inventory_history(store):
    empty = {"schema": "cloudboot.inventory/1"}
    first = await register(store, empty, "52:54:00:00:05:01")
    assert first["state"] == "discovered"

    doc = inventory(uuid="cccccccc-0000-4000-8000-000000000001", nics=["52:54:00:00:05:01"])
    second = await register(store, doc, "52:54:00:00:05:01")
    assert second["machine_id"] == first["machine_id"]
    assert second["state"] == "inventoried"
    assert await count(store, "inventory_snapshots") == 2


async def test_boot_state_for_mac(store):
    doc = inventory(uuid="dddddddd-0000-4000-8000-000000000001", nics=["52:54:00:00:06:01"])
    await register(store, doc, "52:54:00:00:06:01")
    assert await machines.boot_state_for_mac(store, "52-54-00-00-06-01") == "inventoried"
    assert await machines.boot_state_for_mac(store, "52:54:00:00:06:99") is None
    assert await machines.boot_state_for_mac(store, "not a mac") is None


async def test_labels_and_retirement_are_audited_and_retire_stops_the_agent_token(store):
    doc = inventory(uuid="ffffffff-0000-4000-8000-00000000000a", nics=["52:54:00:00:07:01"])
    machine_id = (await register(store, doc, "52:54:00:00:07:01"))["machine_id"]

    await machines.set_labels(store, machine_id, {"rack": "A1", "role": "db"}, False, "olga")
    merged = await machines.set_labels(store, machine_id, {"role": None}, False, "olga")
    assert merged["labels"] == {"rack": "A1"}
    replaced = await machines.set_labels(store, machine_id, {"row": "7"}, True, "olga")
    assert replaced["labels"] == {"row": "7"}

    retired = await machines.retire(store, machine_id, actor="ada")
    assert retired["state"] == "retired" and retired["retired_at"]

    def _live_tokens(conn):
        return conn.execute(
            "SELECT count(*) FROM api_tokens WHERE machine_id = ? AND revoked_at IS NULL",
            (machine_id,),
        ).fetchone()[0]

    assert await store.read(_live_tokens) == 0
    events = await store.read(audit.events, "machine", machine_id)
    actions = [(e["action"], e["actor"]) for e in reversed(events)]
    assert actions == [
        ("machine.register", f"machine:{machine_id}"),
        ("machine.labels", "olga"),
        ("machine.labels", "olga"),
        ("machine.labels", "olga"),
        ("machine.retire", "ada"),
    ]
    with pytest.raises(machines.MachineError, match="retired"):
        await machines.approve(store, machine_id, "olga")
