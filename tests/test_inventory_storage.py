"""Disks: lsblk and lshw corpus files, and sysfs trees built by hand."""

import json

import pytest

from bootos.agent.inventory import build_document, collect
from bootos.agent.inventory._lshw import parse_lshw
from bootos.agent.inventory._storage import parse_lsblk
from tests.inventory_builders import write_tree

LSBLK = "lsblk-J__name-kname-model-serial-rev-tran__sata-and-nvme.json"


def test_lsblk_values_are_trimmed_and_keyed_by_kernel_name(corpus):
    data = (corpus / "lsblk-lshw" / LSBLK).read_bytes()
    table = parse_lsblk(data, [])
    assert sorted(table) == ["nvme0", "nvme1", "sda", "sdb"]
    assert table["sdb"]["model"] == "MTFDDAV240TDU"
    assert table["nvme0"]["serial"] == "PLCH00000003"
    assert table["nvme1"]["serial"] == "PLCH00000004"  # NAME says nvme0, KNAME nvme1
    assert table["nvme1"]["model"] == "Micron_9300_MTFDHAL3T8TDP"


def test_lsblk_alone_gives_disks(corpus):
    data = (corpus / "lsblk-lshw" / LSBLK).read_bytes()
    disks = build_document({"cloudboot-capture/tools/lsblk.txt": data})["disks"]
    assert [(d["name"], d["serial"], d["transport"]) for d in disks] == [
        ("nvme0", "PLCH00000003", "nvme"),
        ("nvme1", "PLCH00000004", "nvme"),
        ("sda", "PLCH00000001", "sata"),
        ("sdb", "PLCH00000002", "sata"),
    ]


def test_lsblk_garbage_is_a_warning():
    document = build_document({"cloudboot-capture/tools/lsblk.txt": b"{not json"})
    assert document["disks"] == []
    assert any("lsblk" in w for w in document["warnings"])


def _lshw(corpus, name):
    return parse_lshw((corpus / "lsblk-lshw" / f"lshw-json__{name}.json").read_bytes(), [])


def test_lshw_dell_r6515(corpus):
    parsed = _lshw(corpus, "dell-poweredge-r6515")
    assert parsed["system"]["manufacturer"] == "Dell Inc."
    assert parsed["system"]["product"] == "PowerEdge R6515"
    assert parsed["system"]["serial"] == "PLCH020"
    assert parsed["system"]["uuid"] == "4c4c4544-0041-4b10-8045-c6c04f343536"
    disks = {d["name"]: d for d in parsed["disks"]}
    assert sorted(disks) == ["nvme0n1", "nvme1n1", "sda", "sdb"]
    assert disks["nvme0n1"]["serial"] == "PLCH00000030"  # from the NVMe controller node
    assert disks["nvme0n1"]["size_bytes"] == 3840755982336
    assert disks["nvme1n1"]["wwn"] == "eui.000000000000000e00a0750100000002"
    assert disks["sda"]["transport"] == "sata"
    nics = {n["name"]: n for n in parsed["nics"]}
    assert nics["enp65s0f0"]["pci_address"] == "0000:41:00.0"
    assert nics["enp65s0f0"]["driver"] == "i40e"
    assert nics["enp65s0f0"]["mac"] == "40:a6:b7:00:00:02"
    assert nics["enp65s0f0"]["link"] is True


def test_lshw_supermicro_placeholders(corpus):
    parsed = _lshw(corpus, "supermicro-x11dph-t.min")
    system = parsed["system"]
    assert system["product"] == "SSG-6029P-E1CR12L-PH004"
    assert system["version"] is None  # "0123456789"
    assert system["sku"] is None and system["family"] is None
    assert len([d for d in parsed["disks"] if d["name"].startswith("sd")]) == 14
    assert {d["serial"] for d in parsed["disks"] if d["name"] == "sdk"} == {"PLCH0057"}
    nics = {n["name"]: n for n in parsed["nics"]}
    assert nics["enp216s0f0"]["speed_mbps"] == 10000


def test_lshw_asrock_rack(corpus):
    parsed = _lshw(corpus, "asrockrack-e3c246d4i-nl")
    assert parsed["system"]["serial"] == "PLCH00000010"
    assert parsed["system"]["product"] == "c3.small.x86"
    # BMC virtual media (no size) and the CD-ROM are not disks.
    assert sorted(d["name"] for d in parsed["disks"]) == ["sda", "sdb"]
    names = sorted(n["name"] for n in parsed["nics"])
    assert "bond0" not in names and "eno1" in names


def test_lshw_fills_in_when_sysfs_gave_nothing(corpus):
    data = (corpus / "lsblk-lshw" / "lshw-json__dell-poweredge-r6515.json").read_bytes()
    document = build_document({"cloudboot-capture/tools/lshw.txt": data})
    assert document["system"]["product"] == "PowerEdge R6515"
    assert len(document["disks"]) == 4


SATA_PATH = "../devices/pci0000:00/0000:00:17.0/ata3/host2/target2:0:0/2:0:0:0/block/sda"
SAS_PATH = (
    "../devices/pci0000:17/0000:17:00.0/0000:18:00.0/host0/port-0:0/end_device-0:0/"
    "target0:0:0/0:0:0:0/block/sdb"
)
NVME0 = "../devices/pci0000:5d/0000:5d:00.0/0000:5e:00.0/nvme/nvme0"
NVME1 = "../devices/pci0000:5d/0000:5d:02.0/0000:5f:00.0/nvme/nvme1"


def _vpd80(serial):
    return bytes([0, 0x80, 0, len(serial)]) + serial


@pytest.fixture
def disk_tree(tmp_path):
    links = {
        "sys/block/sda": SATA_PATH,
        "sys/block/sda/device": "../../../2:0:0:0",
        "sys/block/sdb": SAS_PATH,
        "sys/block/sdb/device": "../../../0:0:0:0",
        "sys/block/nvme0n1": f"{NVME0}/nvme0n1",
        "sys/block/nvme0n1/device": "../../nvme0",
        "sys/block/nvme0n2": f"{NVME0}/nvme0n2",
        "sys/block/nvme0n2/device": "../../nvme0",
        "sys/block/nvme1n1": f"{NVME1}/nvme1n1",
        "sys/block/nvme1n1/device": "../../nvme1",
        "sys/block/loop0": "../devices/virtual/block/loop0",
        "sys/block/dm-0": "../devices/virtual/block/dm-0",
        "dev/disk/by-path/pci-0000:00:17.0-ata-3": "../../sda",
        "dev/disk/by-path/pci-0000:00:17.0-ata-3-part1": "../../sda1",
        "dev/disk/by-path/pci-0000:00:17.0-ata-3.0": "../../sda",
    }
    files = {
        "sys/block/sda/size": b"468862128\n",
        "sys/block/sda/queue/rotational": b"0\n",
        "sys/block/sda/device/model": b"MTFDDAV240TDU   \n",
        "sys/block/sda/device/vpd_pg80": _vpd80(b"  PLCH00000001"),
        "sys/block/sda/device/wwid": b"naa.500a07511f4a3b2c\n",
        "sys/block/sdb/size": b"15628053168\n",
        "sys/block/sdb/queue/rotational": b"1\n",
        "sys/block/sdb/device/model": b"HUS728T8TAL5204 \n",
        "sys/block/sdb/device/vpd_pg80": _vpd80(b"VAGB1234"),
        "sys/block/nvme0n1/size": b"7501476528\n",
        "sys/block/nvme0n1/queue/rotational": b"0\n",
        "sys/block/nvme0n1/wwid": b"eui.000000000000000e00a0750100000001\n",
        "sys/block/nvme0n1/device/model": b"Micron_9300_MTFDHAL3T8TDP               \n",
        # The controller serial, padded with spaces as the drive reports it.
        "sys/block/nvme0n1/device/serial": b"PLCH00000003        \n",
        "sys/block/nvme0n2/size": b"2048\n",
        "sys/block/nvme0n2/wwid": b"eui.000000000000000e00a0750100000002\n",
        "sys/block/nvme0n2/device/serial": b"PLCH00000003        \n",
        "sys/block/nvme1n1/size": b"500118192\n",
        "sys/block/nvme1n1/device/serial": b"        \n",
        "sys/block/loop0/size": b"100\n",
        "sys/block/dm-0/size": b"100\n",
    }
    lsblk = {
        "blockdevices": [
            {"name": "nvme0n1", "kname": "nvme0n1", "serial": None, "tran": "nvme"},
            {"name": "nvme1n1", "kname": "nvme1n1", "serial": "", "tran": "nvme"},
        ]
    }
    files["cloudboot-capture/tools/lsblk.txt"] = json.dumps(lsblk).encode()
    write_tree(tmp_path, files, links)
    return tmp_path


def test_disks_from_a_sysfs_tree(disk_tree):
    disks = {d["name"]: d for d in collect(str(disk_tree))["disks"]}
    assert sorted(disks) == ["nvme0n1", "nvme1n1", "sda", "sdb"]  # loop, dm skipped

    sata = disks["sda"]
    assert sata["size_bytes"] == 468862128 * 512
    assert sata["model"] == "MTFDDAV240TDU"
    assert sata["serial"] == "PLCH00000001"
    assert sata["wwn"] == "naa.500a07511f4a3b2c"
    assert sata["rotational"] is False
    assert sata["transport"] == "sata"
    assert sata["by_path"] == "pci-0000:00:17.0-ata-3"  # the shortest, not a partition

    sas = disks["sdb"]
    assert (sas["transport"], sas["rotational"], sas["serial"]) == ("sas", True, "VAGB1234")
    assert sas["by_path"] == "pci-0000:18:00.0-scsi-0:0:0:0"


def test_nvme_serial_padding_and_namespaces(disk_tree):
    disks = {d["name"]: d for d in collect(str(disk_tree))["disks"]}
    nvme = disks["nvme0n1"]
    assert nvme["serial"] == "PLCH00000003"  # lsblk said null; sysfs padded
    assert nvme["model"] == "Micron_9300_MTFDHAL3T8TDP"
    assert nvme["transport"] == "nvme"
    assert nvme["nvme_namespaces"] == [
        {
            "name": "nvme0n1",
            "nsid": 1,
            "size_bytes": 7501476528 * 512,
            "wwn": "eui.000000000000000e00a0750100000001",
        },
        {
            "name": "nvme0n2",
            "nsid": 2,
            "size_bytes": 2048 * 512,
            "wwn": "eui.000000000000000e00a0750100000002",
        },
    ]


def test_serial_less_disks_never_share_an_identity(disk_tree):
    disks = {d["name"]: d for d in collect(str(disk_tree))["disks"]}
    blank = disks["nvme1n1"]
    assert blank["serial"] is None  # "" in lsblk and spaces in sysfs: null, never ""
    assert blank["wwn"] is None
    assert blank["by_path"] == "pci-0000:5f:00.0-nvme-1"
    identities = [(d["serial"], d["wwn"], d["by_path"]) for d in disks.values()]
    assert len(set(identities)) == len(identities)


def test_disk_tree_document_passes_the_schema_validator(disk_tree):
    inventory = pytest.importorskip("appliance.proto.inventory")
    document = collect(str(disk_tree))
    assert inventory.validate(document) == document
