"""Redfish provider against captured BMC documents (DMTF mockup, Dell iDRAC, Supermicro,
Lenovo XCC) served over real HTTP on 127.0.0.1: discovery and inventory golden values read
from the files in ../shared/corpus/redfish, and the vendors' reset-type lists."""

import pytest

from providers.redfish.client import Client
from providers.redfish.system import System
from tests.redfish_support import PASSWORD, USER, FakeBmc, Recorder, load_documents


def inventory_of(corpus, vendor):
    events = Recorder()
    with FakeBmc(load_documents(corpus, vendor)) as bmc:
        client = Client("127.0.0.1", bmc.port, USER, PASSWORD, scheme="http")
        system = System(client, events, sleep=lambda s: None)
        outcome = system.inventory()
    return outcome, events, system.path


GOLDEN = {
    "dmtf": {
        "path": "/redfish/v1/Systems/437XR1138R2",
        "system": ("Contoso", "3500", "437XR1138R2", "38947555-7742-3448-3784-823347823834"),
        "processors": (2, "Multi-Core Intel(R) Xeon(R) processor 7xxx Series", 16),
        "memory_gib": 96,
    },
    "dell": {
        "path": "/redfish/v1/Systems/System.Embedded.1",
        "system": (
            "Dell Inc.",
            "PowerEdge R6515",
            "CNPLACEHOLDER1",
            "4c4c4544-0041-4b10-8045-c6c04f373839",
        ),
        "processors": (1, "AMD EPYC 7402P 24-Core Processor", 48),
        "memory_gib": 64,
    },
    "supermicro": {
        "path": "/redfish/v1/Systems/1",
        "system": (
            "Supermicro",
            "SYS-510T-MR-EI018",
            "S000000X0000001",
            "B11CC600-6D10-11EC-8000-3CECEF000001",
        ),
        "processors": (1, "Intel(R) Xeon(R) processor", None),
        "memory_gib": 64,
    },
    "lenovo": {
        "path": "/redfish/v1/Systems/1",
        "system": (
            "Lenovo",
            "ThinkSystem SR650",
            "J100ABCD",
            "92384634-2938-2342-8820-489239905423",
        ),
        "processors": (None, None, None),
        "memory_gib": None,
    },
}


@pytest.mark.parametrize("vendor", sorted(GOLDEN))
def test_inventory_matches_the_captured_documents(corpus, vendor):
    outcome, events, path = inventory_of(corpus, vendor)
    golden = GOLDEN[vendor]
    data = outcome["data"]

    assert path == golden["path"]
    system = data["system"]
    assert (system["manufacturer"], system["model"], system["serial"], system["uuid"]) == (
        golden["system"]
    )
    processors = data["processors"]
    assert (processors["count"], processors["model"], processors["logical_count"]) == (
        golden["processors"]
    )
    assert data["memory"]["total_gib"] == golden["memory_gib"]


def test_dmtf_nic_mac_comes_from_its_ethernet_interface(corpus):
    outcome, events, _ = inventory_of(corpus, "dmtf")

    # The mockup lists four interfaces; only 12446A3B0411 was captured. The others 404,
    # which is a warning per member, not a failed inventory.
    assert outcome["data"]["nics"] == [
        {"id": "12446A3B0411", "mac": "12:44:6a:3b:04:11", "speed_mbps": 1000,
         "link_status": "LinkUp"}
    ]  # fmt: skip
    assert sum("EthernetInterfaces member not readable" in w for w in events.warnings()) == 3


def test_dell_sub_collections_missing_from_the_capture_are_warnings(corpus):
    outcome, events, _ = inventory_of(corpus, "dell")

    assert outcome["data"]["nics"] == []
    assert any("EthernetInterfaces not readable" in w for w in events.warnings())
    assert outcome["message"] == "Dell Inc. PowerEdge R6515 serial CNPLACEHOLDER1"


def test_supermicro_run_together_reset_type_is_reported_and_never_chosen(corpus):
    outcome, events, _ = inventory_of(corpus, "supermicro")

    reset_types = outcome["data"]["reset_types"]
    assert reset_types["unknown"] == ["GracefulShutdownGracefulRestart"]
    assert "GracefulShutdownGracefulRestart" not in reset_types["usable"]
    assert any("GracefulShutdownGracefulRestart" in w for w in events.warnings())


def test_supermicro_power_off_picks_force_off_and_reset_force_restart(corpus):
    with FakeBmc(load_documents(corpus, "supermicro")) as bmc:
        client = Client("127.0.0.1", bmc.port, USER, PASSWORD, scheme="http")
        system = System(client, Recorder(), sleep=lambda s: None)

        off = system.power_off()
        on = system.reset()  # the system is off now: reset powers it on

    assert off["data"] == {"reset_type": "ForceOff", "power_state": "Off"}
    assert on["data"] == {"reset_type": "On", "power_state": "On"}
    posted = [body["ResetType"] for method, _, body in bmc.requests if method == "POST"]
    assert posted == ["ForceOff", "On"]


def test_lenovo_pxe_once_is_kept_and_read_back(corpus):
    with FakeBmc(load_documents(corpus, "lenovo")) as bmc:
        client = Client("127.0.0.1", bmc.port, USER, PASSWORD, scheme="http")
        outcome = System(client, Recorder(), sleep=lambda s: None).boot_pxe_once()
        boot = bmc.system()["Boot"]

    assert outcome["data"] == {"target": "Pxe", "enabled": "Once", "clear_after_boot": False}
    assert (boot["BootSourceOverrideTarget"], boot["BootSourceOverrideEnabled"]) == ("Pxe", "Once")
