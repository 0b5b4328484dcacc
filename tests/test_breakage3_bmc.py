"""Adversarial pass on BMC settings and the per-job network grant.

A BMC job's grant is relayed from the appliance's own network namespace, so whatever
address an operator (or a provider's job) names is reached from the appliance itself.
What a security reviewer checks: the grant cannot be aimed at the appliance's own services
(its API on loopback or on its own address), at link-local metadata addresses, or at
addresses that are no unicast host; and a host that is not text is not read as a number.
Nothing here connects anywhere: refused settings never reach a provider, and the one job
that runs is refused before its provider starts.
"""

import pytest

from appliance.config import Settings
from appliance.core import _bmc_settings, bmc
from appliance.core import _jobsql as sql
from providers.sandbox import runner
from tests.bmc_support import remove_runtime, start_appliance

SETTINGS = {
    "protocol": "redfish",
    "address": "192.0.2.81",
    "username": "u",
    "password": "pw-123456",
    "verify_tls": False,
}


@pytest.fixture
async def appliance(nursery, tmp_path):
    started = await start_appliance(nursery, tmp_path)
    yield started
    remove_runtime(started)


def own_service_ports():
    settings = Settings()
    return [settings.server.https_port, settings.server.http_port, settings.tftp.port]


@pytest.mark.parametrize("address", ["127.0.0.1", "127.3.2.1"])
@pytest.mark.parametrize("port", own_service_ports())
async def test_a_bmc_on_the_appliances_own_service_is_refused(appliance, address, port):
    machine = await appliance.machine()
    body = {**SETTINGS, "address": address, "port": port}

    status, _, error = await appliance.api.call(
        "PUT", f"/api/v1/machines/{machine}/bmc", body, role="operator"
    )

    assert status == 400, error
    assert "this appliance's own service" in error["error"]["message"]
    assert "pw-123456" not in str(error)


def test_a_bmc_on_loopback_at_another_port_is_allowed_only_when_the_lab_says_so():
    settings = Settings()
    with pytest.raises(_bmc_settings.BmcError, match="bmc_allow_this_host is off"):
        _bmc_settings.refuse_appliance_itself("127.0.0.1", 16230, settings)

    # The lab and the tests run their BMC simulators on loopback high ports.
    settings.jobs.bmc_allow_this_host = True
    _bmc_settings.refuse_appliance_itself("127.0.0.1", 16230, settings)


@pytest.mark.parametrize("address", ["169.254.169.254", "169.254.0.1"])
async def test_a_link_local_metadata_address_is_refused_as_a_bmc(appliance, address):
    machine = await appliance.machine()
    body = {**SETTINGS, "address": address, "port": 80}

    status, _, error = await appliance.api.call(
        "PUT", f"/api/v1/machines/{machine}/bmc", body, role="operator"
    )

    assert status == 400, error
    assert "link-local" in error["error"]["message"]


async def test_a_stored_bmc_aimed_at_the_appliance_fails_its_job_before_any_provider(
    appliance,
):
    # A row written before the check existed (or the appliance's ports changed since).
    machine = await appliance.machine()
    path = f"/api/v1/machines/{machine}/bmc"
    assert (await appliance.api.call("PUT", path, SETTINGS, role="operator"))[0] == 200
    https_port = Settings().server.https_port

    def aim_at_self(conn):
        conn.execute(
            "UPDATE machine_bmc SET address = '127.0.0.1', port = ? WHERE machine_id = ?",
            (https_port, machine),
        )

    await appliance.store.write(aim_at_self)

    job = await appliance.wait((await appliance.job(machine, "power", {"action": "status"}))["id"])

    assert job["state"] == "failed", job
    assert "this appliance's own service" in job["message"]
    assert not any(appliance.runtime.iterdir())
    assert await appliance.store.read(lambda conn: sql.load(conn, job["id"])["attempt"]) == 1


@pytest.mark.parametrize(
    "host, words",
    [
        ("169.254.169.254", "link-local"),
        ("0.1.2.3", "not a unicast address"),
        ("240.0.0.1", "not a unicast address"),
        ("255.255.255.255", "not a unicast address"),
        (2130706433, "literal IPv4 address"),
        (b"\x7f\x00\x00\x01", "literal IPv4 address"),
    ],
)
def test_the_runner_refuses_job_destinations_that_are_no_unicast_host(host, words):
    destination = {"host": host, "port": 80, "protocol": "tcp"}

    problem = runner._destination_problem(destination)

    assert problem is not None and words in problem


def test_parse_settings_alone_refuses_link_local():
    with pytest.raises(_bmc_settings.BmcError) as refused:
        bmc.parse_settings({**SETTINGS, "address": "169.254.169.254"})
    assert refused.value.status == 400
