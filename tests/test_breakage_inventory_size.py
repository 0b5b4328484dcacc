"""Adversarial registration: one unauthenticated host must not fill the data disk quickly.

Every registration keeps its inventory as a snapshot for good. Before the
fix a registration could carry an inventory of up to the 8 MB body limit
(4096 PCI entries of 1024-character fields), so one host at the default
120 registrations a minute wrote about 1 GB a minute to the store, while an
inventory job's result is held to 256 KB.
"""

import pytest

from appliance.proto import agent as protocol
from tests.agent_api_support import start_api


def registration(pci_field_chars, mac="52:54:00:ee:00:02"):
    """A registration with 4096 PCI entries whose four fields hold pci_field_chars each."""
    field = "a" * pci_field_chars
    pci = [
        {"address": field, "vendor_id": field, "device_id": field, "class": field}
        for _ in range(4096)
    ]
    inventory = {"schema": "cloudboot.inventory/1", "pci": pci}
    return {"protocol": 1, "boot_mac": mac, "pxe_guid": None, "inventory": inventory}


def _snapshots(conn):
    return conn.execute("SELECT count(*) FROM inventory_snapshots").fetchone()[0]


def test_an_oversized_inventory_is_refused_by_the_protocol():
    with pytest.raises(protocol.AgentProtocolError, match="larger than"):
        protocol.validate_registration(registration(400))


def test_a_large_real_looking_inventory_still_passes():
    # 2048 PCI functions (SR-IOV virtual functions included) with ids as lspci gives them.
    body = registration(0)
    del body["inventory"]["pci"][2048:]
    for entry in body["inventory"]["pci"]:
        entry.update(
            address="0000:3b:00.0", vendor_id="8086", device_id="1572", **{"class": "020000"}
        )
    assert len(protocol.validate_registration(body)["inventory"]["pci"]) == 2048


async def test_an_oversized_registration_is_a_400_and_stores_nothing(nursery, tmp_path):
    api = await start_api(nursery, tmp_path)

    reply = await api.call("POST", "/api/v1/agent/register", registration(400))

    assert reply.status == 400, reply.body[:300]
    assert reply.error_code == "bad_agent_message"
    assert await api.store.read(_snapshots) == 0
    await api.store.close()
