"""The agent routes refuse bad input with a clear error and keep nothing of it."""

from appliance.core import jobs
from appliance.proto import agent as protocol
from tests.agent_api_support import call, start_api, user_token
from tests.identity_support import inventory, registration


def good(mac="52:54:00:50:00:01"):
    return registration(inventory(nics=[mac], clean=False), mac)


def _count(conn):
    return conn.execute("SELECT count(*) FROM machines").fetchone()[0]


async def test_protocol_header_missing_or_unsupported_gets_426(nursery, tmp_path):
    api = await start_api(nursery, tmp_path)
    missing = await api.call("POST", "/api/v1/agent/register", good(), agent=False)
    assert missing.status == 426
    assert missing.error_code == "agent_protocol_unsupported"
    assert "speaks version(s) 1" in missing.json["error"]["message"]

    future = await call(
        api.port,
        "POST",
        "/api/v1/agent/register",
        good(),
        agent=False,
        headers=[(protocol.PROTOCOL_HEADER, "7")],
    )
    assert future.status == 426 and "'7'" in future.json["error"]["message"]
    assert await api.store.read(_count) == 0


async def test_malformed_registrations_name_the_bad_field(nursery, tmp_path):
    api = await start_api(nursery, tmp_path)
    bad_nic = good()
    bad_nic["inventory"]["nics"] = [{"name": "eth0", "mac": "52:54:00:zz:00:01"}]
    bad_schema = good()
    bad_schema["inventory"]["schema"] = "cloudboot.inventory/9"
    cases = [
        (b"{not json", "bad_json", "not valid JSON"),
        ([1, 2, 3], "bad_agent_message", "must be a JSON object"),
        ({**good(), "boot_mac": "nope"}, "bad_agent_message", "boot_mac"),
        (bad_nic, "bad_agent_message", "nics[0].mac"),
        (bad_schema, "bad_agent_message", "cloudboot.inventory/9"),
        ({**good(), "pxe_guid": "123"}, "bad_agent_message", "pxe_guid"),
    ]
    for body, code, words in cases:
        reply = await api.call("POST", "/api/v1/agent/register", body)
        assert reply.status == 400, body
        assert reply.error_code == code, reply.json
        assert words in reply.json["error"]["message"], reply.json
    assert await api.store.read(_count) == 0


async def test_registration_only_from_the_pxe_networks(nursery, tmp_path):
    closed = await start_api(nursery, tmp_path / "a", registration_networks=["10.99.0.0/16"])
    reply = await closed.call("POST", "/api/v1/agent/register", good())
    assert reply.status == 403 and reply.error_code == "registration_not_allowed"
    assert "10.99.0.0/16" in reply.json["error"]["message"]

    # Loopback in the list (IPv4 clients of a dual-stack socket match too).
    open_ = await start_api(nursery, tmp_path / "b", registration_networks=["127.0.0.0/8"])
    assert (await open_.call("POST", "/api/v1/agent/register", good())).status == 200


async def test_registration_is_rate_limited_per_source(nursery, tmp_path):
    api = await start_api(nursery, tmp_path, registration_per_minute=3)
    statuses = []
    for index in range(5):
        reply = await api.call("POST", "/api/v1/agent/register", good(f"52:54:00:51:00:0{index}"))
        statuses.append(reply.status)
    assert statuses == [200, 200, 200, 429, 429]
    assert int(reply.headers["retry-after"]) >= 1
    assert reply.error_code == "rate_limited"
    assert await api.store.read(_count) == 3


async def test_poll_and_report_refuse_bad_parameters(nursery, tmp_path):
    api = await start_api(nursery, tmp_path)
    answer = (await api.call("POST", "/api/v1/agent/register", good())).json
    token = answer["token"]

    for wait in ("soon", "-1", "3600"):
        reply = await api.call("GET", f"/api/v1/agent/jobs/next?wait={wait}", token=token)
        assert reply.status == 400 and "wait" in reply.json["error"]["message"], wait

    operator = await user_token(api.store, "olga", "operator")
    await api.call(
        "POST", f"/api/v1/machines/{answer['machine_id']}/approve", token=operator, agent=False
    )
    job, _ = await jobs.create_job(
        api.store, "olga", {"machine_id": answer["machine_id"], "kind": "inventory"}
    )
    assert (await api.call("GET", "/api/v1/agent/jobs/next?wait=2", token=token)).status == 200

    path = f"/api/v1/agent/jobs/{job['id']}"
    cases = [
        ("events", {"progress": 101, "lines": []}, "progress"),
        ("events", {"lines": "one line"}, "lines"),
        ("result", {"status": "done"}, "status"),
        ("result", {"status": "succeeded", "data": []}, "data"),
        (
            "result",
            {
                "status": "succeeded",
                "data": {
                    "inventory": {"schema": "cloudboot.inventory/1", "cpus": [{"cores": -2}]}
                },
            },
            "cpus[0].cores",
        ),
    ]
    for suffix, body, words in cases:
        reply = await api.call("POST", f"{path}/{suffix}", body, token=token)
        assert reply.status == 400, body
        assert words in reply.json["error"]["message"], reply.json
    assert (await jobs.get_job(api.store, job["id"]))["state"] == "running"

    # A good inventory result is kept as a new snapshot.
    fresh = inventory(nics=["52:54:00:50:00:01"], disk_serials=["S3Z9NB0K123456"])
    reply = await api.call(
        "POST",
        f"{path}/result",
        {"status": "succeeded", "data": {"inventory": fresh}},
        token=token,
    )
    assert reply.status == 204

    def _snapshots(conn):
        return conn.execute("SELECT count(*) FROM inventory_snapshots").fetchone()[0]

    assert await api.store.read(_snapshots) == 2
