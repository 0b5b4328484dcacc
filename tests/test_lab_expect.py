"""The lab's inventory check: what QEMU was told against what the appliance stored."""

import copy

import pytest

from lab import expect, vm


def spec_and_inventory():
    spec = vm.default_specs(1)[0]
    inventory = {
        "schema": "cloudboot.inventory/1",
        "system": {
            "manufacturer": spec.manufacturer,
            "product": spec.product,
            "serial": spec.serial,
            "uuid": spec.uuid.upper(),
        },
        "disks": [
            {"name": "nvme0n1", "serial": spec.disks[1].serial, "size_bytes": 12 * vm.GIB},
            {"name": "vda", "serial": spec.disks[0].serial, "size_bytes": 8 * vm.GIB},
        ],
        "nics": [
            {"name": "lo", "mac": "00:00:00:00:00:00"},
            {"name": "eth0", "mac": spec.mac, "permanent_mac": spec.mac},
            {"name": "eth1", "mac": spec.second_mac, "permanent_mac": None},
        ],
    }
    return spec, inventory


def test_matching_inventory_has_no_mismatches():
    spec, inventory = spec_and_inventory()

    assert expect.mismatches(spec, inventory) == []


def test_each_difference_is_named():
    spec, inventory = spec_and_inventory()
    changed = copy.deepcopy(inventory)
    changed["system"]["serial"] = "To Be Filled By O.E.M."
    changed["disks"].pop()
    changed["nics"][2]["mac"] = "52:54:00:ff:ff:ff"

    problems = expect.mismatches(spec, changed)

    assert len(problems) == 3
    assert "system.serial" in problems[0] and "To Be Filled By O.E.M." in problems[0]
    assert problems[1].startswith("disks")
    assert problems[2].startswith("NIC MACs")


def test_missing_inventory_is_a_mismatch():
    spec, _ = spec_and_inventory()

    assert expect.mismatches(spec, None) == ["no inventory document (got NoneType)"]


def test_find_machine_in_a_page_of_machines():
    listing = {"items": [{"id": "m1", "boot_mac": "52:54:00:7c:00:01"}], "next_cursor": None}

    assert expect.find_machine(listing, "52:54:00:7C:00:01")["id"] == "m1"
    assert expect.find_machine(listing, "52:54:00:7c:00:02") is None
    assert expect.find_machine({"error": {"code": "unauthorized"}}, "52:54:00:7c:00:01") is None


def test_inventory_document_is_unwrapped_from_its_snapshot():
    snapshot = {"id": 3, "machine_id": "m1", "inventory": {"schema": "cloudboot.inventory/1"}}

    assert expect.inventory_document(snapshot) == {"schema": "cloudboot.inventory/1"}


def test_screendump_ppm_becomes_a_png_of_the_same_size():
    width, height = 3, 2
    ppm = b"P6\n3 2\n255\n" + bytes(range(width * height * 3))

    png = vm.ppm_to_png(ppm)

    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert png[12:16] == b"IHDR"
    assert png[16:24] == (3).to_bytes(4, "big") + (2).to_bytes(4, "big")


def test_screendump_rejects_a_truncated_ppm():
    with pytest.raises(ValueError, match="short"):
        vm.ppm_to_png(b"P6\n3 2\n255\n" + b"\0" * 5)
