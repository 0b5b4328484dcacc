"""The agent routes over real HTTP on loopback: register, poll, report, enrolment gate."""

import trio

from appliance.core import jobs
from tests.agent_api_support import start_api, user_token
from tests.identity_support import inventory, registration


def machine_registration(mac, uuid=None, serial=None):
    document = inventory(uuid=uuid, system_serial=serial, nics=[mac], clean=False)
    return registration(document, mac)


async def test_a_new_machine_gets_no_job_until_an_operator_approves_it(nursery, tmp_path):
    api = await start_api(nursery, tmp_path)
    reply = await api.call(
        "POST", "/api/v1/agent/register", machine_registration("52:54:00:20:00:01")
    )
    assert reply.status == 200
    answer = reply.json
    assert set(answer) == {"machine_id", "token", "state", "approved"}
    assert answer["approved"] is False and answer["state"] == "inventoried"
    machine_id, agent_token = answer["machine_id"], answer["token"]

    # A job is queued, but the machine is not approved: the poll stays empty.
    job, _ = await jobs.create_job(api.store, "alice", {"machine_id": machine_id, "kind": "wait"})
    poll = await api.call("GET", "/api/v1/agent/jobs/next?wait=0", token=agent_token)
    assert poll.status == 204

    viewer = await user_token(api.store, "victor", "viewer")
    refused = await api.call(
        "POST", f"/api/v1/machines/{machine_id}/approve", token=viewer, agent=False
    )
    assert refused.status == 403

    operator = await user_token(api.store, "olga", "operator")
    approved = await api.call(
        "POST", f"/api/v1/machines/{machine_id}/approve", token=operator, agent=False
    )
    assert approved.status == 200
    assert approved.json["approved"] is True and approved.json["state"] == "ready"
    assert approved.json["approved_by"] == "olga"

    poll = await api.call("GET", "/api/v1/agent/jobs/next?wait=5", token=agent_token)
    assert poll.status == 200
    assert poll.json["job"]["id"] == job["id"] and poll.json["job"]["kind"] == "wait"

    events = await api.call(
        "POST",
        f"/api/v1/agent/jobs/{job['id']}/events",
        {"progress": 50, "lines": ["waiting"]},
        token=agent_token,
    )
    assert events.status == 204
    result = await api.call(
        "POST",
        f"/api/v1/agent/jobs/{job['id']}/result",
        {"status": "succeeded", "message": "waited", "data": {}},
        token=agent_token,
    )
    assert result.status == 204
    assert (await jobs.get_job(api.store, job["id"]))["state"] == "succeeded"


async def test_the_long_poll_wakes_when_the_machine_is_approved(nursery, tmp_path):
    api = await start_api(nursery, tmp_path)
    answer = (
        await api.call("POST", "/api/v1/agent/register", machine_registration("52:54:00:20:00:02"))
    ).json
    machine_id = answer["machine_id"]
    await jobs.create_job(api.store, "alice", {"machine_id": machine_id, "kind": "reboot"})
    operator = await user_token(api.store, "olga", "operator")

    got = {}

    async def poll():
        got["reply"] = await api.call(
            "GET", "/api/v1/agent/jobs/next?wait=30", token=answer["token"]
        )

    async with trio.open_nursery() as inner:
        inner.start_soon(poll)
        await trio.sleep(0.3)
        assert "reply" not in got
        await api.call(
            "POST", f"/api/v1/machines/{machine_id}/approve", token=operator, agent=False
        )
    assert got["reply"].status == 200
    assert got["reply"].json["job"]["kind"] == "reboot"


async def test_an_agent_reaches_only_its_own_machine(nursery, tmp_path):
    api = await start_api(nursery, tmp_path)
    a = (
        await api.call("POST", "/api/v1/agent/register", machine_registration("52:54:00:20:00:03"))
    ).json
    b = (
        await api.call("POST", "/api/v1/agent/register", machine_registration("52:54:00:20:00:04"))
    ).json
    operator = await user_token(api.store, "olga", "operator")
    await api.call(
        "POST", f"/api/v1/machines/{b['machine_id']}/approve", token=operator, agent=False
    )
    job_b, _ = await jobs.create_job(
        api.store, "alice", {"machine_id": b["machine_id"], "kind": "wait"}
    )
    assert (
        await api.call("GET", "/api/v1/agent/jobs/next?wait=2", token=b["token"])
    ).status == 200

    # A's token on B's job: refused, and B's job is untouched.
    for suffix, body in (
        ("events", {"progress": 1, "lines": ["x"]}),
        ("result", {"status": "failed", "message": "not mine"}),
    ):
        reply = await api.call(
            "POST", f"/api/v1/agent/jobs/{job_b['id']}/{suffix}", body, token=a["token"]
        )
        assert reply.status == 403, reply.json
    assert (await jobs.get_job(api.store, job_b["id"]))["state"] == "running"

    unknown = await api.call(
        "POST", "/api/v1/agent/jobs/no-such-job/events", {"lines": []}, token=a["token"]
    )
    assert unknown.status == 404

    # An agent token is not an operator's: it may not approve or list users.
    reply = await api.call(
        "POST", f"/api/v1/machines/{a['machine_id']}/approve", token=a["token"], agent=False
    )
    assert reply.status == 403
    assert (await api.call("GET", "/api/v1/users", token=a["token"], agent=False)).status == 403


async def test_re_registration_revokes_the_previous_agent_token(nursery, tmp_path):
    api = await start_api(nursery, tmp_path)
    message = machine_registration(
        "52:54:00:20:00:05", uuid="4c4c4544-0000-0000-0000-00000000a001"
    )
    first = (await api.call("POST", "/api/v1/agent/register", message)).json
    second = (await api.call("POST", "/api/v1/agent/register", message)).json
    assert second["machine_id"] == first["machine_id"]
    assert second["token"] != first["token"]

    old = await api.call("GET", "/api/v1/agent/jobs/next?wait=0", token=first["token"])
    assert old.status == 401 and old.error_code == "token_revoked"
    assert old.headers["www-authenticate"].startswith("Bearer")
    new = await api.call("GET", "/api/v1/agent/jobs/next?wait=0", token=second["token"])
    assert new.status == 204


async def test_a_user_token_is_not_an_agent_token(nursery, tmp_path):
    api = await start_api(nursery, tmp_path)
    admin = await user_token(api.store, "ada", "admin")
    reply = await api.call("GET", "/api/v1/agent/jobs/next?wait=0", token=admin)
    assert reply.status == 403
