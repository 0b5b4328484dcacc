"""Identifiers indexed by a 64-bit digest: lookups decide on the text, conflicts name it.

The strongest check forces every digest to collide: with the index useless,
every identity decision, conflict, MAC lookup and expected-list match must
still come out as comparing the text gives.
"""

import hashlib

import pytest

from appliance.core import identifiers, machines
from appliance.proto import agent
from appliance.store import Store, codec
from tests.identity_support import inventory


@pytest.fixture
async def store(tmp_path):
    opened = await Store.open(tmp_path / "cloudboot.db")
    yield opened
    await opened.close()


@pytest.fixture(params=["digest", "every digest collides"])
def collisions(request, monkeypatch):
    if request.param != "digest":
        monkeypatch.setattr(codec, "signal_digest", lambda kind, value: 42)
    return request.param


async def register(store, document, boot_mac):
    message = agent.validate_registration(
        {"protocol": 1, "boot_mac": boot_mac, "inventory": document}
    )
    return await machines.register(store, message, "127.0.0.1", 30)


def server(n, shared_disk=None):
    disks = [f"DISK{n:03d}{i}" for i in range(3)] + ([shared_disk] if shared_disk else [])
    return inventory(
        uuid=f"5a7c0000-1111-2222-3333-{n:012x}",
        system_serial=f"SRV{n:05d}",
        chassis_serial=f"CH{n:05d}",
        nics=[f"52:54:00:00:{n:02x}:01"],
        disk_serials=disks,
        dimm_serials=[f"DIMM{n:03d}{i}" for i in range(4)],
    )


def test_digest_is_stable_across_releases():
    # The digest is stored (migration 0005): BLAKE2b-64 of "kind NUL value", big-endian,
    # signed. Another function would need a new migration.
    raw = hashlib.blake2b(b"disk_serial\x00abc", digest_size=8).digest()
    assert codec.signal_digest("disk_serial", "abc") == int.from_bytes(raw, "big", signed=True)
    assert codec.signal_digest("disk_serial", "abc") == 3630353738987555244
    assert codec.signal_digest("dimm_serial", "abc") != codec.signal_digest("disk_serial", "abc")


async def test_same_hardware_is_known_again_and_others_are_new(store, collisions):
    first = await register(store, server(1), "52:54:00:00:01:01")
    again = await register(store, server(1), "52:54:00:00:01:01")
    other = await register(store, server(2), "52:54:00:00:02:01")

    assert first["new"] and other["new"]
    assert (again["new"], again["machine_id"]) == (False, first["machine_id"])
    assert other["machine_id"] != first["machine_id"]


async def test_conflicts_name_the_shared_identifier_and_nothing_else(store, collisions):
    one = (await register(store, server(1, "MOVED-DISK"), "52:54:00:00:01:01"))["machine_id"]
    two = (await register(store, server(2, "MOVED-DISK"), "52:54:00:00:02:01"))["machine_id"]
    three = (await register(store, server(3), "52:54:00:00:03:01"))["machine_id"]

    document = await store.read(machines.machine_document, one)
    alone = await store.read(machines.machine_document, three)

    assert document["conflicts"] == [
        {"kind": "disk_serial", "value": "moved-disk", "machine_id": two}
    ]
    assert alone["conflicts"] == []
    assert {"kind": "disk_serial", "value": "moved-disk"} in document["identifiers"]
    assert len(document["identifiers"]) == 1 + 1 + 1 + 1 + 4 + 4


async def test_retired_machines_leave_the_index_lookups(store, collisions):
    one = (await register(store, server(1, "MOVED-DISK"), "52:54:00:00:01:01"))["machine_id"]
    two = (await register(store, server(2, "MOVED-DISK"), "52:54:00:00:02:01"))["machine_id"]
    await machines.retire(store, two, "admin")

    assert await store.read(machines.conflicts, one) == []
    assert await store.read(identifiers.live_machines_with, "disk_serial", "moved-disk") == [one]


async def test_mac_lookup_finds_reported_and_boot_macs(store, collisions):
    document = server(5)
    document["nics"].append({"name": "eth9", "mac": "52:54:00:aa:bb:cc", "permanent_mac": None})
    machine = await register(store, document, "52:54:00:00:05:01")

    assert await machines.boot_state_for_mac(store, "52-54-00-aa-bb-cc") == machine["state"]
    assert await machines.boot_state_for_mac(store, "52:54:00:00:05:01") == machine["state"]
    assert await machines.boot_state_for_mac(store, "52:54:00:00:06:01") is None


async def test_expected_serial_approves_on_registration(store, collisions):
    serials, macs = machines.check_expected({"serials": ["CH00007"]})
    await machines.import_expected(store, serials, macs, "admin")

    approved = await register(store, server(7), "52:54:00:00:07:01")
    waiting = await register(store, server(8), "52:54:00:00:08:01")

    assert approved["approved"] and not waiting["approved"]


async def test_first_and_last_seen_are_kept(store):
    machine_id = (await register(store, server(9), "52:54:00:00:09:01"))["machine_id"]
    changed = server(9)
    changed["disks"].append({"name": "sdz", "serial": "NEW-DISK"})
    await store.write(machines.store_inventory, machine_id, changed)

    listed = await store.read(identifiers.reported, machine_id)
    kept = {(k, v): (first, last) for k, v, first, last in listed}

    old_first, old_last = kept["system_serial", "srv00009"]
    new_first, new_last = kept["disk_serial", "new-disk"]
    assert old_first < old_last == new_first == new_last
