"""NICs, PCI devices, RAID/HBA controllers and the BMC from hand-built sysfs trees."""

import pytest

from bootos.agent.inventory import build_document, collect
from bootos.agent.inventory._network import parse_ipmitool_lan
from tests.inventory_builders import write_tree

NIC0 = "../../devices/pci0000:3a/0000:3a:00.0/0000:3b:00.0/net/eno1"
NIC1 = "../../devices/pci0000:3a/0000:3a:00.0/0000:3b:00.1/net/eno2"
NIC2 = "../../devices/pci0000:d7/0000:d7:00.0/0000:d8:00.0/net/enp216s0f0"

# Typical `ipmitool lan print 1` output (trimmed), as the tool prints it.
IPMITOOL_LAN = """Set in Progress         : Set Complete
Auth Type Support       : NONE MD5 PASSWORD
IP Address Source       : Static Address
IP Address              : 192.0.2.41
Subnet Mask             : 255.255.255.0
MAC Address             : 0C:C4:7A:00:00:99
SNMP Community String   : public
Default Gateway IP      : 192.0.2.1
802.1q VLAN ID          : Disabled
"""


@pytest.fixture
def net_tree(tmp_path):
    links = {
        "sys/class/net/lo": "../../devices/virtual/net/lo",
        "sys/class/net/bond0": "../../devices/virtual/net/bond0",
        "sys/class/net/eno1": NIC0,
        "sys/class/net/eno1/device": "../../../0000:3b:00.0",
        "sys/class/net/eno1/device/driver": "../../../../bus/pci/drivers/i40e",
        "sys/class/net/eno2": NIC1,
        "sys/class/net/eno2/device": "../../../0000:3b:00.1",
        "sys/class/net/eno2/device/driver": "../../../../bus/pci/drivers/i40e",
        "sys/class/net/enp216s0f0": NIC2,
        "sys/class/net/enp216s0f0/device": "../../../0000:d8:00.0",
        "sys/class/net/enp216s0f0/device/driver": "../../../../bus/pci/drivers/mlx5_core",
        "sys/bus/pci/devices/0000:18:00.0": "../../../devices/pci0000:17/0000:18:00.0",
        "sys/bus/pci/devices/0000:18:00.0/driver": "../../../bus/pci/drivers/mpt3sas",
        "sys/bus/pci/devices/0000:19:00.0": "../../../devices/pci0000:17/0000:19:00.0",
        "sys/bus/pci/devices/0000:19:00.0/driver": "../../../bus/pci/drivers/megaraid_sas",
        "sys/bus/pci/devices/0000:00:17.0": "../../../devices/pci0000:00/0000:00:17.0",
        "sys/bus/pci/devices/0000:00:17.0/driver": "../../../bus/pci/drivers/ahci",
    }
    files = {
        "sys/class/net/lo/address": b"00:00:00:00:00:00\n",
        "sys/class/net/bond0/address": b"3c:ec:ef:00:00:01\n",
        "sys/class/net/eno1/address": b"3c:ec:ef:00:00:01\n",
        "sys/class/net/eno1/addr_assign_type": b"0\n",
        "sys/class/net/eno1/carrier": b"1\n",
        "sys/class/net/eno1/operstate": b"up\n",
        "sys/class/net/eno1/speed": b"10000\n",
        # A bond slave carries the bond's MAC; the hardware one is in perm_hwaddr.
        "sys/class/net/eno2/address": b"3c:ec:ef:00:00:01\n",
        "sys/class/net/eno2/addr_assign_type": b"3\n",
        "sys/class/net/eno2/bonding_slave/perm_hwaddr": b"3c:ec:ef:00:00:02\n",
        "sys/class/net/eno2/operstate": b"down\n",
        "sys/class/net/eno2/speed": b"-1\n",
        "sys/class/net/enp216s0f0/address": b"0e:00:00:00:00:07\n",
        "sys/class/net/enp216s0f0/addr_assign_type": b"1\n",
        "sys/class/net/enp216s0f0/carrier": b"0\n",
        "cloudboot-capture/tools/ethtool-P-enp216s0f0.txt": (
            b"Permanent address: 0c:42:a1:00:00:06\n"
        ),
        "sys/bus/pci/devices/0000:18:00.0/vendor": b"0x1000\n",
        "sys/bus/pci/devices/0000:18:00.0/device": b"0x0097\n",
        "sys/bus/pci/devices/0000:18:00.0/class": b"0x010700\n",
        "sys/bus/pci/devices/0000:19:00.0/vendor": b"0x1000\n",
        "sys/bus/pci/devices/0000:19:00.0/device": b"0x10e2\n",
        "sys/bus/pci/devices/0000:19:00.0/class": b"0x010400\n",
        "sys/bus/pci/devices/0000:00:17.0/vendor": b"0x8086\n",
        "sys/bus/pci/devices/0000:00:17.0/device": b"0xa182\n",
        "sys/bus/pci/devices/0000:00:17.0/class": b"0x010601\n",
        "cloudboot-capture/tools/ipmitool-lan.txt": IPMITOOL_LAN.encode(),
    }
    write_tree(tmp_path, files, links)
    return tmp_path


def test_nics(net_tree):
    nics = {n["name"]: n for n in collect(str(net_tree))["nics"]}
    assert sorted(nics) == ["eno1", "eno2", "enp216s0f0"]  # no lo, no bond0
    assert nics["eno1"] == {
        "name": "eno1",
        "mac": "3c:ec:ef:00:00:01",
        "permanent_mac": "3c:ec:ef:00:00:01",
        "driver": "i40e",
        "link": True,
        "speed_mbps": 10000,
        "pci_address": "0000:3b:00.0",
    }
    assert nics["eno2"]["permanent_mac"] == "3c:ec:ef:00:00:02"
    assert (nics["eno2"]["link"], nics["eno2"]["speed_mbps"]) == (False, None)
    assert nics["enp216s0f0"]["permanent_mac"] == "0c:42:a1:00:00:06"  # from ethtool -P
    assert nics["enp216s0f0"]["driver"] == "mlx5_core"
    assert nics["enp216s0f0"]["link"] is False


def test_pci_and_raid_controllers(net_tree):
    document = collect(str(net_tree))
    assert {"address": "0000:19:00.0", "vendor_id": "1000", "device_id": "10e2"}.items() <= (
        document["pci"][2].items()
    )
    assert [p["class"] for p in document["pci"]] == ["010601", "010700", "010400"]
    assert document["raid_controllers"] == [
        {
            "pci_address": "0000:18:00.0",
            "vendor_id": "1000",
            "device_id": "0097",
            "driver": "mpt3sas",
            "model": "Broadcom / LSI SAS3008 PCI-Express Fusion-MPT SAS-3",
        },
        {
            "pci_address": "0000:19:00.0",
            "vendor_id": "1000",
            "device_id": "10e2",
            "driver": "megaraid_sas",
            "model": None,  # not in the table of ids we are sure of
        },
    ]


def test_bmc_from_ipmitool(net_tree):
    assert collect(str(net_tree))["bmc"] == {"ipv4": "192.0.2.41", "mac": "0c:c4:7a:00:00:99"}


def test_bmc_unset_or_absent():
    unset = IPMITOOL_LAN.replace("192.0.2.41", "0.0.0.0").replace(
        "0C:C4:7A:00:00:99", "00:00:00:00:00:00"
    )
    assert parse_ipmitool_lan(unset) is None
    assert build_document({})["bmc"] is None


def test_failed_tool_is_a_warning():
    raw = {"cloudboot-capture/tools/ipmitool-lan.err": b"ipmitool lan print exited 1: no BMC"}
    document = build_document(raw)
    assert document["bmc"] is None
    assert "ipmitool lan print exited 1: no BMC" in document["warnings"]


def test_net_tree_document_passes_the_schema_validator(net_tree):
    inventory = pytest.importorskip("appliance.proto.inventory")
    document = collect(str(net_tree))
    assert inventory.validate(document) == document
