"""GET /api/v1/agent/jobs/{job_id}/provider: an imported RAID package for the agent's job.

Against the real API on 127.0.0.1 with a package made, signed, stamped and imported with
the real commands (tests/agent_packages_support.py). The route hands the stored bytes to
the machine running the raid job only after the checks of import pass again; a changed
byte, a revoked vendor key or a foreign licensee gets 403 provider_refused with the reason
and a denied `provider.run` audit event, never the bytes. Job creation refuses a provider
that is neither built in nor imported.
"""

import hashlib

import pytest
import trio

from appliance.core import _agent_packages
from appliance.core._jobsql import JobError
from tests.agent_packages_support import (
    LICENSEE,
    NAME,
    VENDOR,
    VERSION,
    copy_data_dir,
    flip_a_byte,
    import_package,
    provider_runs,
    revoke,
    start_appliance,
    stored_package,
    vendor_data_dir,
)

MAC_A, MAC_B = "52:54:00:5a:00:01", "52:54:00:5a:00:02"


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vendor")
    vendor = vendor_data_dir(folder)
    return folder, vendor


async def appliance_with_job(nursery, template, tmp_path, spoil=None, licensee=LICENSEE):
    folder, vendor = template
    data = copy_data_dir(folder, tmp_path)
    appliance = await start_appliance(nursery, data, licensee)
    machine, token = await appliance.machine(MAC_A, "SN-PKG-A")
    created = await appliance.raid_job(machine)
    assert created.status_code == 201, created.text
    job = await appliance.hand_out(token)
    assert job["id"] == created.json()["id"]
    if spoil is not None:
        spoil(data, vendor)
    return appliance, data, machine, token, job


async def test_the_running_job_gets_the_checked_bytes_and_the_run_is_audited(
    nursery, template, tmp_path
):
    appliance, data, machine, token, job = await appliance_with_job(nursery, template, tmp_path)

    answer = await appliance.request(
        "GET", f"/api/v1/agent/jobs/{job['id']}/provider", token=token
    )

    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/octet-stream"
    assert answer.content == stored_package(data).read_bytes()
    assert (
        answer.headers["x-cloudboot-package-sha256"] == hashlib.sha256(answer.content).hexdigest()
    )
    [(actor, resource, result, details, source)] = await appliance.store.read(provider_runs)
    assert (actor, resource, result) == (f"machine:{machine}", f"{NAME}/{VERSION}", "ok")
    assert details["job_id"] == job["id"] and source == "127.0.0.1"
    assert details["sha256"] == answer.headers["x-cloudboot-package-sha256"]


async def test_another_machine_and_a_finished_job_get_no_package(nursery, template, tmp_path):
    appliance, _data, _machine, token, job = await appliance_with_job(nursery, template, tmp_path)
    _other, other_token = await appliance.machine(MAC_B, "SN-PKG-B")
    path = f"/api/v1/agent/jobs/{job['id']}/provider"

    answer = await appliance.request("GET", path, token=other_token)
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "job_not_yours"

    done = {"status": "succeeded", "message": "done", "data": {}}
    result = await appliance.request("POST", f"/api/v1/agent/jobs/{job['id']}/result", done, token)
    assert result.status_code == 204, result.text
    answer = await appliance.request("GET", path, token=token)
    assert answer.status_code == 409 and answer.json()["error"]["code"] == "job_finished"

    unknown = await appliance.request("GET", "/api/v1/agent/jobs/job-nope/provider", token=token)
    assert unknown.status_code == 404
    # None of these reached the package: nothing was sent, so no provider.run at all.
    assert await appliance.store.read(provider_runs) == []


SPOILED = {
    "changed byte": (lambda data, vendor: flip_a_byte(data), LICENSEE, "digest_mismatch"),
    "revoked vendor": (revoke, LICENSEE, "revoked_key"),
    "foreign licensee": (None, "Other Bank", "watermark_violation"),
}


@pytest.mark.parametrize("case", list(SPOILED))
async def test_a_package_failing_its_checks_is_refused_with_the_reason(
    nursery, template, tmp_path, case
):
    spoil, licensee, reason = SPOILED[case]
    appliance, data, machine, token, job = await appliance_with_job(
        nursery, template, tmp_path, spoil, licensee
    )

    answer = await appliance.request(
        "GET", f"/api/v1/agent/jobs/{job['id']}/provider", token=token
    )

    assert answer.status_code == 403, answer.text
    error = answer.json()["error"]
    assert error["code"] == "provider_refused"
    assert error["message"].startswith(f"provider {NAME} refused: ")
    assert error["message"].endswith(f"({reason})"), error["message"]
    assert b"CBPROVPK" not in answer.content and b"acme array built" not in answer.content
    assert "x-cloudboot-package-sha256" not in answer.headers
    runs = await appliance.store.read(provider_runs)
    assert [(r[0], r[2], r[3]["reason"], r[3]["job_id"]) for r in runs] == [
        (f"machine:{machine}", "denied", reason, job["id"])
    ]


async def test_a_raid_job_naming_an_unknown_provider_is_refused_at_creation(
    nursery, template, tmp_path
):
    folder, _vendor = template
    appliance = await start_appliance(nursery, copy_data_dir(folder, tmp_path))
    machine, _token = await appliance.machine(MAC_A, "SN-PKG-C")

    refused = await appliance.raid_job(machine, provider="nobody-raid")
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["code"] == "unknown_provider"
    assert "provider nobody-raid is not imported" in error["message"]
    assert "mdadm" in error["message"]

    for name in ("mdadm", NAME):
        accepted = await appliance.raid_job(machine, provider=name)
        assert accepted.status_code == 201, accepted.text


async def test_a_built_in_provider_is_never_sent(nursery, template, tmp_path):
    folder, _vendor = template
    appliance = await start_appliance(nursery, copy_data_dir(folder, tmp_path))
    _machine, token = await appliance.machine(MAC_A, "SN-PKG-D")
    created = await appliance.raid_job(_machine, provider="megaraid")
    job = await appliance.hand_out(token)
    assert job["id"] == created.json()["id"]

    answer = await appliance.request(
        "GET", f"/api/v1/agent/jobs/{job['id']}/provider", token=token
    )
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "no_provider_package"


BMC_MANIFEST = {
    "schema": "cloudboot.provider/1",
    "name": "acme-bmc",
    "version": "1.0.0",
    "vendor": VENDOR,
    "kind": "bmc",
    "entry": "provider.py",
    "interpreter": "python3",
    "protocol": [1],
    "capabilities": {"network": [{"from_job": True}]},
}


async def test_a_package_of_another_kind_is_neither_accepted_nor_sent(nursery, template, tmp_path):
    folder, vendor = template
    data = copy_data_dir(folder, tmp_path)
    import_package(tmp_path / "bmc-src", data, vendor, BMC_MANIFEST, "print('never run')\n")
    appliance = await start_appliance(nursery, data)
    machine, _token = await appliance.machine(MAC_A, "SN-PKG-E")

    refused = await appliance.raid_job(machine, provider="acme-bmc")
    assert refused.status_code == 400, refused.text
    assert "acme-bmc is a bmc provider, not a raid one" in refused.json()["error"]["message"]

    # The check before sending holds on its own, should a job name it anyway.
    findings = _agent_packages._Findings("trace-kind", "127.0.0.1")
    context = {"actor": f"machine:{machine}", "job_id": "job-kind", "machine_id": machine}
    with pytest.raises(JobError) as caught:
        await trio.to_thread.run_sync(
            _agent_packages._checked_blob, appliance.app.settings, "acme-bmc", context, findings
        )
    assert (caught.value.status, caught.value.code) == (403, "provider_refused")
    assert caught.value.message.endswith("(wrong_kind)")
    [denied] = [r for r in findings.records if r["action"] == "provider.run"]
    assert (denied["result"], denied["details"]["reason"]) == ("denied", "wrong_kind")
    assert denied["details"]["job_id"] == "job-kind"
