"""Random and hostile inputs: the inventory always comes out, never a traceback.

A parser that raised would show as a "could not read ..." warning (the
builder's guard), so these tests also assert no such warning appears.
"""

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from bootos.agent.inventory import build_document

try:
    from appliance.proto.inventory import validate
except ImportError:  # the schema module is written alongside; run without it
    validate = None

TOOLS = "cloudboot-capture/tools"

SYSFS_PATHS = [
    "sys/block/sda/size",
    "sys/block/sda/queue/rotational",
    "sys/block/sda/device/model",
    "sys/block/sda/device/serial",
    "sys/block/sda/device/vpd_pg80",
    "sys/block/nvme0n1/size",
    "sys/block/nvme0n1/wwid",
    "sys/class/net/eth0/address",
    "sys/class/net/eth0/speed",
    "sys/class/net/eth0/carrier",
    "sys/class/net/eth0/addr_assign_type",
    "sys/bus/pci/devices/0000:00:01.0/class",
    "sys/bus/pci/devices/0000:00:01.0/vendor",
    "sys/class/dmi/id/product_uuid",
    "sys/class/dmi/id/chassis_type",
    "proc/cpuinfo",
    f"{TOOLS}/dmidecode.txt",
    f"{TOOLS}/lsblk.txt",
    f"{TOOLS}/lshw.txt",
    f"{TOOLS}/ipmitool-lan.txt",
    f"{TOOLS}/ethtool-P-eth0.txt",
]

BASE_LINKS = {
    "sys/block/sda": "../devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sda",
    "sys/block/nvme0n1": "../devices/pci0000:00/0000:00:1d.0/nvme/nvme0/nvme0n1",
    "sys/class/net/eth0": "../../devices/pci0000:00/0000:00:03.0/net/eth0",
    "sys/class/net/eth0/device": "../../../0000:00:03.0",
    "sys/bus/pci/devices/0000:00:01.0": "../../../devices/pci0000:00/0000:00:01.0",
}


def _with_links(files):
    from bootos.agent.inventory._raw import Link

    raw = {rel: Link(target) for rel, target in BASE_LINKS.items()}
    raw.update(files)
    return raw


def _assert_no_parser_crash(document):
    assert document["schema"] == "cloudboot.inventory/1"
    assert not [w for w in document["warnings"] if w.startswith("could not read")]
    json.dumps(document)  # the agent must be able to send it
    if validate is not None:
        validate(document)  # and the appliance must accept it


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(SYSFS_PATHS), st.binary(max_size=200)))
def test_random_bytes_in_any_input(files):
    _assert_no_parser_crash(build_document(_with_links(files)))


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=400))
def test_random_dmidecode_text(text):
    document = build_document({f"{TOOLS}/dmidecode.txt": text.encode()})
    _assert_no_parser_crash(document)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(["blockdevices", "x"]), JSON_VALUES))
def test_odd_lsblk_json(document):
    raw = _with_links({f"{TOOLS}/lsblk.txt": json.dumps(document).encode()})
    _assert_no_parser_crash(build_document(raw))


@settings(max_examples=100, deadline=None)
@given(JSON_VALUES)
def test_odd_lshw_json(document):
    raw = {f"{TOOLS}/lshw.txt": json.dumps(document).encode()}
    _assert_no_parser_crash(build_document(raw))


def test_dmidecode_keys_with_odd_values():
    text = (
        "SMBIOS 9.9 present.\n\nHandle 0x0001, DMI type 17, 40 bytes\nMemory Device\n"
        "\tSize: 99999999999999999999 TB\n\tSpeed: fast\n\tLocator:\n\tLocator\n"
        "\nHandle 0x0002, DMI type 4, 48 bytes\nProcessor Information\n\tCore Count: -3\n"
        "\tStatus: Populated, Enabled\n\tVersion: X\n"
    )
    document = build_document({f"{TOOLS}/dmidecode.txt": text.encode()})
    _assert_no_parser_crash(document)
    assert document["memory"][0]["speed_mts"] is None
    assert document["cpus"][0]["cores"] is None


def test_a_failing_part_costs_only_that_part(monkeypatch, caplog):
    from bootos.agent.inventory import _storage

    def broken(raw, warnings):
        raise RuntimeError("simulated parser bug")

    monkeypatch.setattr(_storage, "parse_disks", broken)
    raw = _with_links({"sys/class/net/eth0/address": b"52:54:00:12:34:56\n"})
    document = build_document(raw)

    assert document["disks"] == []
    assert document["nics"][0]["mac"] == "52:54:00:12:34:56"
    assert "could not read disks: RuntimeError: simulated parser bug" in document["warnings"]
    assert not any(record.exc_info for record in caplog.records if record.levelname != "DEBUG")
