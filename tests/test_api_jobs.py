"""The jobs REST routes over real HTTP: roles, idempotency, errors, paging, cancel, retry, log."""

import pytest

from appliance.core import jobs
from tests.api_support import start_api
from tests.jobs_support import add_machine


@pytest.fixture
async def api(nursery, tmp_path):
    client = await start_api(nursery, tmp_path)
    yield client
    await client.store.close()


def assert_error(status, body, expected_status, code):
    assert status == expected_status, body
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "trace_id"}
    assert body["error"]["code"] == code
    assert "Traceback" not in body["error"]["message"]


async def test_operator_creates_a_job_and_viewer_reads_it(api):
    machine = await add_machine(api.store, state="ready")
    body = {"machine_id": machine, "kind": "inventory", "params": {}, "timeout_seconds": 600}

    status, headers, job = await api.call("POST", "/api/v1/jobs", body, role="operator")
    read_status, _, read = await api.call("GET", f"/api/v1/jobs/{job['id']}", role="viewer")

    assert status == 201
    assert headers["location"] == f"/api/v1/jobs/{job['id']}"
    assert (job["state"], job["kind"], job["created_by"]) == (
        "queued",
        "inventory",
        "operator-user",
    )
    assert read_status == 200 and read == job


async def test_roles_are_enforced(api):
    machine = await add_machine(api.store)
    body = {"machine_id": machine, "kind": "wait"}

    viewer = await api.call("POST", "/api/v1/jobs", body, role="viewer")
    anonymous = await api.call("POST", "/api/v1/jobs", body, role=None)
    listing = await api.call("GET", "/api/v1/jobs", role=None)

    assert_error(viewer[0], viewer[2], 403, "forbidden")
    assert_error(anonymous[0], anonymous[2], 401, "unauthenticated")
    assert anonymous[1]["www-authenticate"].startswith("Bearer")
    assert_error(listing[0], listing[2], 401, "unauthenticated")


async def test_idempotency_key_replays_or_conflicts(api):
    machine = await add_machine(api.store)
    body = {"machine_id": machine, "kind": "wait", "params": {"seconds": 1}}
    key = {"Idempotency-Key": "order-7781"}

    first = await api.call("POST", "/api/v1/jobs", body, headers=key)
    replay = await api.call("POST", "/api/v1/jobs", body, headers=key)
    other = await api.call("POST", "/api/v1/jobs", {**body, "kind": "reboot"}, headers=key)

    assert first[0] == 201 and replay[0] == 200
    assert replay[2]["id"] == first[2]["id"]
    assert_error(other[0], other[2], 409, "idempotency_key_reused")
    assert first[2]["id"] in other[2]["error"]["message"]


async def test_destructive_job_on_deployed_machine_is_refused_without_confirm(api):
    machine = await add_machine(api.store, state="deployed")

    refused = await api.call("POST", "/api/v1/jobs", {"machine_id": machine, "kind": "install"})
    confirmed = await api.call(
        "POST", "/api/v1/jobs", {"machine_id": machine, "kind": "install", "confirm": True}
    )

    assert_error(refused[0], refused[2], 409, "confirmation_required")
    assert "deployed" in refused[2]["error"]["message"]
    assert confirmed[0] == 201


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{not json", "bad_json"),
        (b"[]", "invalid_request"),
        (b'{"machine_id": "m-1", "kind": "format"}', "invalid_request"),
        (b'{"machine_id": "m-1", "kind": "wait", "timeout_seconds": -5}', "invalid_request"),
    ],
)
async def test_bad_bodies_get_one_error_shape(api, raw, code):
    status, headers, body = await api.call("POST", "/api/v1/jobs", raw=raw)

    assert_error(status, body, 400, code)
    assert headers["x-request-id"] == body["error"]["trace_id"]


async def test_unknown_job_and_machine_are_404(api):
    job = await api.call("GET", "/api/v1/jobs/job_nosuch")
    machine = await api.call("POST", "/api/v1/jobs", {"machine_id": "m-nosuch", "kind": "wait"})

    assert_error(job[0], job[2], 404, "job_not_found")
    assert_error(machine[0], machine[2], 404, "machine_not_found")


async def test_list_filters_and_pages(api):
    machine = await add_machine(api.store)
    other = await add_machine(api.store)
    for _ in range(3):
        await api.call("POST", "/api/v1/jobs", {"machine_id": machine, "kind": "wait"})
    await api.call("POST", "/api/v1/jobs", {"machine_id": other, "kind": "reboot"})

    _, _, first = await api.call("GET", f"/api/v1/jobs?machine_id={machine}&limit=2")
    _, _, second = await api.call(
        "GET", f"/api/v1/jobs?machine_id={machine}&limit=2&cursor={first['next_cursor']}"
    )
    _, _, reboots = await api.call("GET", "/api/v1/jobs?kind=reboot")
    bad_cursor = await api.call("GET", "/api/v1/jobs?cursor=abc")
    bad_limit = await api.call("GET", "/api/v1/jobs?limit=0")
    bad_state = await api.call("GET", "/api/v1/jobs?state=sleeping")

    assert len(first["items"]) == 2 and len(second["items"]) == 1
    assert second["next_cursor"] is None
    assert {j["machine_id"] for j in first["items"] + second["items"]} == {machine}
    assert [j["machine_id"] for j in reboots["items"]] == [other]
    assert_error(bad_cursor[0], bad_cursor[2], 400, "invalid_cursor")
    assert_error(bad_limit[0], bad_limit[2], 400, "invalid_query")
    assert_error(bad_state[0], bad_state[2], 400, "invalid_filter")


async def test_cancel_retry_and_log(api):
    machine = await add_machine(api.store)
    _, _, job = await api.call("POST", "/api/v1/jobs", {"machine_id": machine, "kind": "wait"})
    await jobs.next_job_for_machine(api.store, machine, 0)
    await jobs.append_job_events(api.store, machine, job["id"], 40, ["sleeping", "still"])

    cancel = await api.call("POST", f"/api/v1/jobs/{job['id']}/cancel", role="operator")
    with pytest.raises(jobs.JobError):
        await jobs.append_job_events(api.store, machine, job["id"], 50, ["done?"])
    retry = await api.call("POST", f"/api/v1/jobs/{job['id']}/retry", role="operator")
    log = await api.call("GET", f"/api/v1/jobs/{job['id']}/log?after=1", role="viewer")
    viewer_cancel = await api.call("POST", f"/api/v1/jobs/{job['id']}/cancel", role="viewer")

    assert cancel[0] == 200 and cancel[2]["cancel_requested"] is True
    assert retry[0] == 201 and retry[2]["retry_of"] == job["id"]
    assert log[0] == 200
    assert [entry["line"] for entry in log[2]["lines"]] == ["still", "done?"]
    assert log[2]["next_after"] == 3
    assert_error(viewer_cancel[0], viewer_cancel[2], 403, "forbidden")
