"""Enrolment: operator approval and the imported list of expected serials and MACs."""

from appliance.core import audit
from tests.agent_api_support import start_api, user_token
from tests.identity_support import inventory, registration


def message(mac, serial=None, chassis=None, uuid=None):
    document = inventory(
        uuid=uuid, system_serial=serial, chassis_serial=chassis, nics=[mac], clean=False
    )
    return registration(document, mac)


async def register(api, body):
    reply = await api.call("POST", "/api/v1/agent/register", body)
    assert reply.status == 200, reply.json
    return reply.json


async def test_expected_serials_and_macs_approve_on_registration(nursery, tmp_path):
    api = await start_api(nursery, tmp_path)
    operator = await user_token(api.store, "olga", "operator")
    imported = await api.call(
        "POST",
        "/api/v1/enrolment/expected",
        {"serials": ["  cz-0001 "], "macs": ["B4-96-91-00-40-02"]},
        token=operator,
        agent=False,
    )
    assert imported.status == 200
    assert imported.json == {"added": 2, "serials": 1, "macs": 1, "approved": []}

    # The serial matches case-insensitively, in the chassis record as well.
    by_serial = await register(api, message("52:54:00:40:00:01", chassis="CZ-0001"))
    assert by_serial["approved"] is True and by_serial["state"] == "ready"

    by_mac = await register(api, message("b4:96:91:00:40:02"))
    assert by_mac["approved"] is True

    stranger = await register(api, message("52:54:00:40:00:03", serial="CZ-9999"))
    assert stranger["approved"] is False and stranger["state"] == "inventoried"

    events = await api.store.read(audit.events, "machine", by_serial["machine_id"])
    approval = [e for e in events if e["action"] == "machine.approve"][0]
    assert approval["details"] == {"via": "expected", "kind": "serial", "value": "cz-0001"}

    listing = await api.call("GET", "/api/v1/enrolment/expected", token=operator, agent=False)
    matched = {item["value"]: item["matched_machine_id"] for item in listing.json["items"]}
    assert matched == {
        "cz-0001": by_serial["machine_id"],
        "b4:96:91:00:40:02": by_mac["machine_id"],
    }


async def test_an_import_approves_machines_already_waiting(nursery, tmp_path):
    api = await start_api(nursery, tmp_path)
    waiting = await register(api, message("52:54:00:41:00:01", serial="SRV-42"))
    assert waiting["approved"] is False

    operator = await user_token(api.store, "olga", "operator")
    imported = await api.call(
        "POST", "/api/v1/enrolment/expected", {"serials": ["srv-42"]}, token=operator, agent=False
    )
    assert imported.json["approved"] == [waiting["machine_id"]]

    actions = [e["action"] for e in await api.store.read(audit.events)]
    assert "enrolment.expected_import" in actions and "machine.approve" in actions


async def test_placeholders_and_malformed_entries_are_refused_whole(nursery, tmp_path):
    api = await start_api(nursery, tmp_path)
    operator = await user_token(api.store, "olga", "operator")
    cases = [
        {"serials": ["Default string", "GOOD-1"]},
        {"macs": ["52:54:00:42:00:01", "not-a-mac"]},
        {"serials": "GOOD-1"},
        {"serials": [], "macs": []},
        {"serial": ["GOOD-1"]},
        [1, 2],
    ]
    for body in cases:
        reply = await api.call(
            "POST", "/api/v1/enrolment/expected", body, token=operator, agent=False
        )
        assert reply.status == 400, body
        assert reply.json["error"]["message"], body

    placeholder = await api.call(
        "POST", "/api/v1/enrolment/expected", cases[0], token=operator, agent=False
    )
    assert "Default string" in placeholder.json["error"]["message"]
    listing = await api.call("GET", "/api/v1/enrolment/expected", token=operator, agent=False)
    assert listing.json["items"] == []


async def test_operator_approval_is_audited_and_idempotent(nursery, tmp_path):
    api = await start_api(nursery, tmp_path)
    machine = await register(api, message("52:54:00:43:00:01"))
    operator = await user_token(api.store, "olga", "operator")
    path = f"/api/v1/machines/{machine['machine_id']}/approve"

    first = await api.call("POST", path, token=operator, agent=False)
    second = await api.call("POST", path, token=operator, agent=False)
    assert first.status == second.status == 200
    assert second.json["approved_via"] == "operator"

    events = await api.store.read(audit.events, "machine", machine["machine_id"])
    approvals = [e for e in events if e["action"] == "machine.approve"]
    assert [e["actor"] for e in approvals] == ["olga", "olga"]
    assert [e["details"]["already_approved"] for e in approvals] == [True, False]

    missing = await api.call(
        "POST", "/api/v1/machines/m-nope/approve", token=operator, agent=False
    )
    assert (missing.status, missing.error_code) == (404, "machine_not_found")


async def test_conflicts_are_visible_through_the_api(nursery, tmp_path):
    api = await start_api(nursery, tmp_path)
    a = await register(
        api,
        message("52:54:00:44:00:01", serial="DUP-1", uuid="aaaaaaaa-1111-4000-8000-000000000001"),
    )
    b = await register(
        api,
        message("52:54:00:44:00:02", serial="DUP-1", uuid="aaaaaaaa-1111-4000-8000-000000000002"),
    )
    viewer = await user_token(api.store, "vic", "viewer")
    reply = await api.call(
        "GET", f"/api/v1/machines/{a['machine_id']}/conflicts", token=viewer, agent=False
    )
    assert reply.status == 200
    assert reply.json["conflicts"] == [
        {"kind": "system_serial", "value": "dup-1", "machine_id": b["machine_id"]}
    ]
    assert reply.json["uuid_trusted"] is True


async def test_the_api_marks_a_shared_template_uuid_as_untrusted(nursery, tmp_path):
    api = await start_api(nursery, tmp_path)
    template = "03000200-0400-0500-0006-000700080009"
    a = await register(api, message("52:54:00:45:00:01", uuid=template))
    b = await register(api, message("52:54:00:45:00:02", uuid=template))
    assert a["machine_id"] != b["machine_id"]

    viewer = await user_token(api.store, "vic", "viewer")
    for machine in (a, b):
        reply = await api.call(
            "GET", f"/api/v1/machines/{machine['machine_id']}/conflicts", token=viewer, agent=False
        )
        assert reply.json["uuid_trusted"] is False
        assert reply.json["conflicts"] == []
        assert [i["kind"] for i in reply.json["identifiers"]] == ["mac"]
