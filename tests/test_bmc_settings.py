"""Per-machine BMC settings through the REST API: the password goes in sealed and never comes
out, nothing is stored without a usable master key (503 no_master_key / keys_sealed), bad
bodies get a clear 400, and BMC jobs are never handed to an agent."""

import json

import pytest

from appliance.core import _jobsql as sql
from appliance.core import engine
from keys import cli as keys_cli
from keys.master import load_master
from tests.bmc_support import audit_rows, files_holding, remove_runtime, start_appliance
from tests.jobs_support import set_job_columns, set_machine_columns
from tests.keys_support import FAST_LIMITS, OFFICERS

PASSWORD = "bmc-Secret-4711"
SETTINGS = {
    "protocol": "redfish",
    "address": "192.0.2.44",
    "username": "admin",
    "password": PASSWORD,
    "tls_fingerprint_sha256": "AB:" * 31 + "CD",
}


@pytest.fixture
async def appliance(nursery, tmp_path):
    started = await start_appliance(nursery, tmp_path, run_bmc=False)
    yield started
    remove_runtime(started)


async def test_put_get_delete_and_the_password_is_only_stored_sealed(appliance, caplog):
    machine = await appliance.machine()
    path = f"/api/v1/machines/{machine}/bmc"

    status, _, view = await appliance.api.call("PUT", path, SETTINGS, role="operator")
    assert status == 200, view
    assert view["password_set"] is True and view["port"] == 443 and "password" not in view
    assert view["tls_fingerprint_sha256"] == "ab" * 31 + "cd"

    status, _, read = await appliance.api.call("GET", path, role="operator")
    assert status == 200 and read == view
    assert PASSWORD not in json.dumps(read)

    set_events = await appliance.store.read(audit_rows, "machine.bmc.set")
    assert [(e[0], e[2], e[3]) for e in set_events] == [("operator-user", machine, "ok")]
    assert PASSWORD not in json.dumps(set_events)
    # Sealing unwrapped the "bmc-secrets" data key: a key use in the same audit log.
    unwraps = await appliance.store.read(audit_rows, "key.unwrap")
    assert any("bmc-secrets" in row[4] for row in unwraps)

    assert files_holding(appliance.data, PASSWORD) == []
    assert PASSWORD not in caplog.text

    status, _, _ = await appliance.api.call("DELETE", path, role="operator")
    assert status == 204
    status, _, error = await appliance.api.call("GET", path, role="operator")
    assert status == 404 and error["error"]["code"] == "bmc_not_set"


async def test_ipmi_defaults_to_port_623_and_a_viewer_may_not_set_it(appliance):
    machine = await appliance.machine()
    path = f"/api/v1/machines/{machine}/bmc"
    body = {"protocol": "ipmi", "address": "192.0.2.45", "username": "u", "password": "p"}

    status, _, _ = await appliance.api.call("PUT", path, body, role="viewer")
    assert status == 403
    status, _, view = await appliance.api.call("PUT", path, body, role="operator")
    assert status == 200 and view["port"] == 623 and view["protocol"] == "ipmi"


@pytest.mark.parametrize(
    "change, words",
    [
        ({"protocol": "snmp"}, "protocol must be redfish or ipmi"),
        ({"address": "bmc.example"}, "address must be an IPv4 address"),
        ({"address": "224.0.0.1"}, "not a unicast address"),
        ({"port": 70000}, "port must be 1-65535"),
        ({"username": "-oProxy"}, "must not start with '-'"),
        ({"password": "a\nb"}, "control characters"),
        ({"password": ""}, "password must be text"),
        ({"tls_fingerprint_sha256": None}, "verify_tls needs tls_fingerprint_sha256"),
        ({"tls_fingerprint_sha256": "zz"}, "expected 64 hex digits"),
        ({"colour": "blue"}, "unknown field(s) ['colour']"),
    ],
)
async def test_bad_bodies_get_a_clear_400_and_store_nothing(appliance, change, words):
    machine = await appliance.machine()
    body = {k: v for k, v in {**SETTINGS, **change}.items() if v is not None}
    path = f"/api/v1/machines/{machine}/bmc"

    status, _, error = await appliance.api.call("PUT", path, body, role="operator")

    assert status == 400, error
    assert words in error["error"]["message"]
    assert (await appliance.api.call("GET", path, role="operator"))[0] == 404


async def test_unknown_machine_is_404(appliance):
    status, _, error = await appliance.api.call(
        "PUT", "/api/v1/machines/m-nope/bmc", SETTINGS, role="operator"
    )
    assert status == 404 and error["error"]["code"] == "machine_not_found"


async def test_without_a_master_key_nothing_is_stored(nursery, tmp_path):
    appliance = await start_appliance(nursery, tmp_path, master=None, run_bmc=False)
    machine = await appliance.machine()
    path = f"/api/v1/machines/{machine}/bmc"

    status, headers, error = await appliance.api.call("PUT", path, SETTINGS, role="operator")

    assert status == 503 and error["error"]["code"] == "no_master_key"
    assert headers["retry-after"] == "60"
    assert (await appliance.api.call("GET", path, role="operator"))[0] == 404
    assert files_holding(appliance.data, PASSWORD) == []
    remove_runtime(appliance)


def officer_phrase(prompt):
    return next(phrase for name, phrase in OFFICERS.items() if f"officer {name}" in prompt)


async def test_a_sealed_dual_control_key_refuses_with_503(nursery, tmp_path):
    keys_dir = tmp_path / "keys-data"
    keys_cli.keys_init(
        data_dir=keys_dir,
        source="dual-control",
        officers="alice,bob,carol",
        threshold=2,
        read_secret=officer_phrase,
        argon2_limits=FAST_LIMITS,
    )
    sealed = load_master(keys_dir)
    assert sealed.is_sealed()
    appliance = await start_appliance(nursery, tmp_path, master=sealed, run_bmc=False)
    machine = await appliance.machine()
    path = f"/api/v1/machines/{machine}/bmc"

    status, _, error = await appliance.api.call("PUT", path, SETTINGS, role="operator")

    assert status == 503 and error["error"]["code"] == "keys_sealed"
    assert (await appliance.api.call("GET", path, role="operator"))[0] == 404
    remove_runtime(appliance)


async def put_settings(appliance, machine):
    path = f"/api/v1/machines/{machine}/bmc"
    assert (await appliance.api.call("PUT", path, SETTINGS, role="operator"))[0] == 200


async def test_an_agent_never_receives_a_bmc_job(appliance):
    machine = await appliance.machine()
    await put_settings(appliance, machine)
    power = await appliance.job(machine, "power", {"action": "status"})
    boot = await appliance.job(machine, "boot_pxe", {})

    handed = await engine.next_job_for_machine(appliance.store, machine, 0)

    assert handed is None
    for job in (power, boot):
        _, _, now = await appliance.api.call("GET", f"/api/v1/jobs/{job['id']}")
        assert now["state"] == "queued"
    # Nor may an agent report on one it learnt the id of.
    with pytest.raises(engine.JobError) as refused:
        await engine.append_job_events(appliance.store, machine, power["id"], None, ["x"])
    assert refused.value.code in ("job_not_yours", "job_not_running")


async def test_a_retired_machine_keeps_readable_settings_but_takes_no_new_ones(appliance):
    machine = await appliance.machine()
    path = f"/api/v1/machines/{machine}/bmc"
    assert (await appliance.api.call("PUT", path, SETTINGS, role="operator"))[0] == 200
    await set_machine_columns(appliance.store, machine, state="retired")

    status, _, error = await appliance.api.call("PUT", path, SETTINGS, role="operator")
    assert status == 409 and error["error"]["code"] == "machine_retired"
    assert (await appliance.api.call("GET", path, role="operator"))[0] == 200
    assert (await appliance.api.call("DELETE", path, role="operator"))[0] == 204


async def test_a_bmc_job_running_before_a_restart_fails_with_the_restart_as_reason(appliance):
    machine = await appliance.machine()
    await put_settings(appliance, machine)
    job = await appliance.job(machine, "power", {"action": "status"})
    past = "2020-01-01T00:00:00.000000Z"
    await set_job_columns(appliance.store, job["id"], state="running", attempt=1,
                          started_at=sql.now(), lease_owner="run-before-restart",
                          lease_expires_at=past)  # fmt: skip

    await engine.sweep(appliance.store)

    _, _, ended = await appliance.api.call("GET", f"/api/v1/jobs/{job['id']}")
    assert ended["state"] == "failed" and ended["message"] == engine.RESTART_MESSAGE
