"""Machines, inventory and the event feed over real HTTP, with machines that really registered."""

import pytest

from appliance.core import jobs, machines
from appliance.proto import inventory
from appliance.proto.agent import validate_registration
from tests.api_support import start_api


@pytest.fixture
async def api(nursery, tmp_path):
    client = await start_api(nursery, tmp_path)
    yield client
    await client.store.close()


def document(serial, mac, product="ProLiant DL380 Gen10"):
    return {
        "schema": inventory.SCHEMA,
        "system": {"manufacturer": "HPE", "product": product, "serial": serial},
        "nics": [{"name": "eno1", "mac": mac, "permanent_mac": mac}],
    }


async def register(api, serial, mac, approve=True):
    registration = validate_registration(
        {"protocol": 1, "boot_mac": mac, "pxe_guid": None, "inventory": document(serial, mac)}
    )
    outcome = await machines.register(api.store, registration, "127.0.0.1", 1)
    if approve:
        await machines.approve(api.store, outcome["machine_id"], "test")
    return outcome["machine_id"]


async def test_list_filters_by_state_label_serial_and_mac(api):
    first = await register(api, "CZJ0001", "52:54:00:00:00:01")
    second = await register(api, "CZJ0002", "52:54:00:00:00:02", approve=False)
    await api.call("PATCH", f"/api/v1/machines/{first}/labels", {"rack": "r12", "row": "b"})

    async def ids(query):
        status, _, body = await api.call("GET", f"/api/v1/machines?{query}", role="viewer")
        assert status == 200, body
        return [m["id"] for m in body["items"]]

    assert await ids("") == [first, second]
    assert await ids("state=ready") == [first]
    assert await ids("state=inventoried") == [second]
    assert await ids("label=rack=r12") == [first]
    assert await ids("label=rack&label=row=b") == [first]
    assert await ids("label=rack=r13") == []
    assert await ids("serial=j0002") == [second]
    assert await ids("mac=52-54-00-00-00-02") == [second]


async def test_list_pages_with_cursor(api):
    made = [await register(api, f"SN{i:04d}", f"52:54:00:00:01:{i:02x}") for i in range(5)]
    seen, cursor = [], None

    while True:
        query = "limit=2" + (f"&cursor={cursor}" if cursor else "")
        _, _, body = await api.call("GET", f"/api/v1/machines?{query}")
        seen += [m["id"] for m in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break

    assert seen == made


async def test_get_shows_identifiers_and_labels_replace_and_merge(api):
    machine = await register(api, "CZJ0003", "52:54:00:00:00:03")

    put = await api.call("PUT", f"/api/v1/machines/{machine}/labels", {"a": "1", "b": "2"})
    patch = await api.call("PATCH", f"/api/v1/machines/{machine}/labels", {"a": None, "c": "3"})
    replaced = await api.call("PUT", f"/api/v1/machines/{machine}/labels", {"z": "9"})
    bad = await api.call("PUT", f"/api/v1/machines/{machine}/labels", {"bad key": "x"})
    viewer = await api.call("PUT", f"/api/v1/machines/{machine}/labels", {}, role="viewer")
    status, _, got = await api.call("GET", f"/api/v1/machines/{machine}", role="viewer")

    assert put[2]["labels"] == {"a": "1", "b": "2"}
    assert patch[2]["labels"] == {"b": "2", "c": "3"}
    assert replaced[2]["labels"] == {"z": "9"}
    assert (bad[0], bad[2]["error"]["code"]) == (400, "invalid_labels")
    assert viewer[0] == 403
    assert status == 200
    assert {"kind": "system_serial", "value": "czj0003"} in got["identifiers"]
    assert got["system_serial"] == "CZJ0003" and got["approved"] is True


async def test_retire_is_for_admins_and_cancels_the_machines_jobs(api):
    machine = await register(api, "CZJ0004", "52:54:00:00:00:04")
    _, _, job = await api.call("POST", "/api/v1/jobs", {"machine_id": machine, "kind": "wait"})

    by_operator = await api.call("POST", f"/api/v1/machines/{machine}/retire", role="operator")
    by_admin = await api.call("POST", f"/api/v1/machines/{machine}/retire", role="admin")
    _, _, after = await api.call("GET", f"/api/v1/jobs/{job['id']}")
    new_job = await api.call("POST", "/api/v1/jobs", {"machine_id": machine, "kind": "wait"})

    assert by_operator[0] == 403
    assert by_admin[0] == 200 and by_admin[2]["state"] == "retired"
    assert after["state"] == "cancelled"
    assert (new_job[0], new_job[2]["error"]["code"]) == (409, "machine_retired")


async def test_inventory_job_adds_a_snapshot_to_the_history(api):
    machine = await register(api, "CZJ0005", "52:54:00:00:00:05")
    _, _, job = await api.call(
        "POST", "/api/v1/jobs", {"machine_id": machine, "kind": "inventory"}
    )
    await jobs.next_job_for_machine(api.store, machine, 0)
    fresh = document("CZJ0005", "52:54:00:00:00:05", product="ProLiant DL380 Gen10 Plus")
    await jobs.report_job_result(
        api.store, machine, job["id"], "succeeded", "inventory sent", {"inventory": fresh}
    )

    status, _, latest = await api.call("GET", f"/api/v1/machines/{machine}/inventory")
    _, _, history = await api.call("GET", f"/api/v1/machines/{machine}/inventory/history")
    _, _, first_page = await api.call(
        "GET", f"/api/v1/machines/{machine}/inventory/history?limit=1"
    )

    assert status == 200
    assert latest["inventory"]["system"]["product"] == "ProLiant DL380 Gen10 Plus"
    products = [s["inventory"]["system"]["product"] for s in history["items"]]
    assert products == ["ProLiant DL380 Gen10 Plus", "ProLiant DL380 Gen10"]
    assert first_page["next_cursor"] is not None


async def test_rejected_inventory_fails_the_job_with_the_reason(api):
    machine = await register(api, "CZJ0006", "52:54:00:00:00:06")
    _, _, job = await api.call(
        "POST", "/api/v1/jobs", {"machine_id": machine, "kind": "inventory"}
    )
    await jobs.next_job_for_machine(api.store, machine, 0)

    await jobs.report_job_result(
        api.store, machine, job["id"], "succeeded", "", {"inventory": {"schema": "other/9"}}
    )

    _, _, ended = await api.call("GET", f"/api/v1/jobs/{job['id']}")
    assert ended["state"] == "failed"
    assert "rejected the inventory" in ended["message"]


async def test_unknown_machine_is_404_everywhere(api):
    for path in ("", "/inventory", "/inventory/history"):
        status, _, body = await api.call("GET", f"/api/v1/machines/m-nosuch{path}")
        assert (status, body["error"]["code"]) == (404, "machine_not_found")
    status, _, body = await api.call("POST", "/api/v1/machines/m-nosuch/retire")
    assert (status, body["error"]["code"]) == (404, "machine_not_found")


async def test_event_feed_follows_machine_and_job_changes(api):
    machine = await register(api, "CZJ0007", "52:54:00:00:00:07")
    _, _, job = await api.call("POST", "/api/v1/jobs", {"machine_id": machine, "kind": "reboot"})

    _, _, feed = await api.call("GET", f"/api/v1/events?machine_id={machine}", role="viewer")
    await jobs.next_job_for_machine(api.store, machine, 0)
    _, _, newer = await api.call(
        "GET", f"/api/v1/events?machine_id={machine}&cursor={feed['next_cursor']}"
    )
    _, _, job_only = await api.call("GET", f"/api/v1/events?job_id={job['id']}&type=job.state")

    changes = [(e["type"], e["from_state"], e["to_state"]) for e in feed["items"]]
    assert changes == [
        ("machine.state", None, "discovered"),
        ("machine.state", "discovered", "inventoried"),
        ("machine.state", "inventoried", "ready"),
        ("job.state", None, "queued"),
    ]
    assert [(e["from_state"], e["to_state"]) for e in newer["items"]] == [("queued", "running")]
    assert [e["to_state"] for e in job_only["items"]] == ["queued", "running"]
