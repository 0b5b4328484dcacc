"""BMC jobs are checked when they are created, not only when they run, and creating one wakes
the BMC runner at once.

What an operator sees: a power or boot_pxe job with bad params is a 400 that names the
param, a BMC job for a machine without BMC settings is a 409 telling them to PUT the BMC
first, and nothing is queued in either case. The runner applies the very same check to a
job that reached the queue some other way. None of this starts a provider: the BMCs here
are on documentation addresses (RFC 5737) and are never contacted.
"""

import pytest

from appliance.core import _jobsql as sql
from appliance.core import bmc
from tests.bmc_support import remove_runtime, start_appliance

SETTINGS = {"protocol": "ipmi", "address": "192.0.2.71", "username": "u", "password": "pw-1234"}


@pytest.fixture
async def appliance(nursery, tmp_path):
    started = await start_appliance(nursery, tmp_path, run_bmc=False)
    yield started
    remove_runtime(started)


async def machine_with_bmc(appliance):
    machine = await appliance.machine()
    path = f"/api/v1/machines/{machine}/bmc"
    status, _, view = await appliance.api.call("PUT", path, SETTINGS, role="operator")
    assert status == 200, view
    return machine


async def jobs_of(appliance, machine):
    _, _, page = await appliance.api.call("GET", f"/api/v1/jobs?machine_id={machine}")
    return page["items"]


@pytest.mark.parametrize(
    "kind, params, words",
    [
        ("power", {"action": "explode"}, 'power params must be {"action": "on"|"off"'),
        ("power", {}, 'power params must be {"action"'),
        ("power", {"action": ["on"]}, 'power params must be {"action"'),
        ("power", {"action": "on", "force": True}, 'power params must be {"action"'),
        ("boot_pxe", {"reset": "yes"}, '"reset" true/false'),
        ("boot_pxe", {"boot_mode": "BIOS"}, '"boot_mode" "UEFI" or "Legacy"'),
        ("boot_pxe", {"persistent": True}, "unknown param(s) ['persistent']"),
        ("power", {"action": "on", "provider": "../evil"}, "provider must name an imported"),
        ("power", {"action": "on", "provider": "acme\n"}, "provider must name an imported"),
        ("boot_pxe", {"provider": 7}, "provider must name an imported"),
    ],
)
async def test_bad_bmc_job_params_are_a_400_at_creation(appliance, kind, params, words):
    machine = await machine_with_bmc(appliance)
    body = {"machine_id": machine, "kind": kind, "params": params}

    status, _, error = await appliance.api.call("POST", "/api/v1/jobs", body, role="operator")

    assert status == 400, error
    assert error["error"]["code"] == "invalid_request"
    assert words in error["error"]["message"]
    assert await jobs_of(appliance, machine) == []


@pytest.mark.parametrize(
    "kind, params",
    [
        ("power", {"action": "status"}),
        ("power", {"action": "reset", "provider": "acme-bmc"}),
        ("boot_pxe", {}),
        ("boot_pxe", {"reset": True, "boot_mode": "UEFI"}),
    ],
)
async def test_good_bmc_job_params_are_queued(appliance, kind, params):
    machine = await machine_with_bmc(appliance)

    job = await appliance.job(machine, kind, params)

    assert job["state"] == "queued" and job["params"] == params


async def test_a_bmc_job_for_a_machine_without_bmc_settings_is_refused(appliance):
    machine = await appliance.machine()
    body = {"machine_id": machine, "kind": "power", "params": {"action": "on"}}

    status, _, error = await appliance.api.call("POST", "/api/v1/jobs", body, role="operator")

    assert status == 409, error
    assert error["error"]["code"] == "bmc_not_set"
    assert f"PUT /api/v1/machines/{machine}/bmc first" in error["error"]["message"]
    assert await jobs_of(appliance, machine) == []


async def test_retrying_a_bmc_job_after_its_bmc_was_forgotten_is_refused(appliance):
    machine = await machine_with_bmc(appliance)
    job = await appliance.job(machine, "power", {"action": "status"})
    assert (await appliance.api.call("POST", f"/api/v1/jobs/{job['id']}/cancel"))[0] == 200
    assert (await appliance.api.call("DELETE", f"/api/v1/machines/{machine}/bmc"))[0] == 204

    status, _, error = await appliance.api.call("POST", f"/api/v1/jobs/{job['id']}/retry")

    assert status == 409 and error["error"]["code"] == "bmc_not_set", error


def _queue_unchecked(conn, machine, params):
    """A power job put straight in the queue, past the job service (an older version's)."""
    at = sql.now()
    fields = {"id": sql.new_job_id(), "machine_id": machine, "kind": "power", "params": params,
              "state": "queued", "timeout_seconds": 60, "max_attempts": 1, "confirmed": False,
              "created_by": "test", "created_at": at, "updated_at": at, "not_before": at,
              "message": "queued"}  # fmt: skip
    return sql.insert(conn, fields)["id"]


async def test_the_runner_applies_the_same_check_and_is_woken_by_creation(
    nursery, tmp_path, monkeypatch
):
    # An hour's fallback poll: only the wake-up can make the runner look within the test.
    monkeypatch.setattr(bmc, "POLL_SECONDS", 3600.0)
    appliance = await start_appliance(nursery, tmp_path, run_bmc=True)
    machine = await machine_with_bmc(appliance)
    unchecked = await appliance.store.write(_queue_unchecked, machine, {"action": "explode"})
    # Nothing announced the unchecked job: it waits for the (hour-long) poll.
    assert (await appliance.api.call("GET", f"/api/v1/jobs/{unchecked}"))[2]["state"] == "queued"

    # Without a master key the runner cannot open the password: the job ends before any
    # provider would start, which is all this test needs to see the runner pick it up.
    appliance.api.app.master = None
    created = await appliance.job(machine, "power", {"action": "status"})
    first = await appliance.wait(unchecked)
    second = await appliance.wait(created["id"])

    # The runner claims in queue order: the unchecked job first, refused by the same check
    # the job service applies; then the new one, which reached the key check.
    assert first["state"] == "failed" and "power params must be" in first["message"], first
    assert second["state"] == "failed" and "no master key" in second["message"], second
    assert first["attempt"] == second["attempt"] == 1
    assert first["finished_at"] <= second["started_at"]
    remove_runtime(appliance)
