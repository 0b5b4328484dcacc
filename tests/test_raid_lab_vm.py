"""RAID through the whole product: the API's `raid` job, the agent, mdadm in the sandbox.

One VM (SeaBIOS + iPXE) with a virtio and an NVMe disk boots BootOS from a real appliance
in a private lab. The test approves it, then creates through the API what an operator
would: a RAID 1 on both disks with CAP_SYS_ADMIN granted, an inventory of the arrays, the
teardown, and the same create without the grant. Each job's result is read back from
the API; the arrays shown are what the provider read from /proc/mdstat in the VM, and
the serial console shows the agent's line for each job. Costs several minutes under TCG.
"""

import json
import subprocess
import time

import pytest

from lab import netns
from tests import vmlab

pytestmark = [pytest.mark.vm, pytest.mark.netns]

REGISTER_SECONDS = 600
JOB_SECONDS = 420
DISKS = ["/dev/vda", "/dev/nvme0n1"]
ALLOW = {"capabilities": ["CAP_SYS_ADMIN"], "devices": [*DISKS, "/dev/md127"]}
FINISHED = ("succeeded", "failed", "cancelled", "timed_out")


def require_raid_bootos():
    """Skip unless the BootOS build carries the built-in providers (bootos/build)."""
    vmlab.require_bootos()
    initrd = vmlab.BOOTOS_DIR / "initrd.img"
    unpacked = subprocess.run(["zstd", "-dc", str(initrd)], capture_output=True, check=True)
    if b"usr/share/cloudboot/providers/mdadm/provider.json" not in unpacked.stdout:
        pytest.skip(f"the BootOS build in {vmlab.BOOTOS_DIR} has no providers: rebuild it")


def api(lab, method, path, body=None):
    url = f"https://{lab.network.appliance_address}{path}"
    argv = ["curl", "-sk", "--max-time", "20", "-X", method, "-w", "\n%{http_code}"]
    argv += ["-H", f"Authorization: Bearer {lab.token}"]
    if body is not None:
        argv += ["-H", "Content-Type: application/json", "--data", json.dumps(body)]
    done = netns.in_ns(lab.network.netns, *argv, url, check=False)
    text, _, status = done.stdout.rpartition("\n")
    return int(status or 0), json.loads(text) if text.strip() else None


def run_job(lab, machine_id, request, allow):
    params = {"provider": "mdadm", "request": request, "allow": allow}
    status, job = api(lab, "POST", "/api/v1/jobs", {"machine_id": machine_id, "kind": "raid",
                                                     "params": params})  # fmt: skip
    assert status in (200, 201), job
    deadline = time.monotonic() + JOB_SECONDS
    while time.monotonic() < deadline:
        status, job = api(lab, "GET", f"/api/v1/jobs/{job['id']}")
        if job["state"] in FINISHED:
            return job
        time.sleep(3)
    raise AssertionError(f"job {job['id']} still {job['state']} after {JOB_SECONDS} s")


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    vmlab.require_vm_tools()
    require_raid_bootos()
    workdir = tmp_path_factory.mktemp("raid-lab")
    with vmlab.running_lab(workdir, ["bios-ipxe"]) as lab:
        lab.wait_for("registered", REGISTER_SECONDS)
        [progress] = lab.progress.values()
        machine_id = progress.machine["id"]
        status, answer = api(lab, "POST", f"/api/v1/machines/{machine_id}/approve")
        assert status == 200, answer

        create = {"action": "create", "params": {"level": 1, "devices": DISKS, "name": "lab"}}
        done = {
            "create": run_job(lab, machine_id, create, ALLOW),
            "inventory": run_job(lab, machine_id, {"action": "inventory"}, ALLOW),
            "delete": run_job(
                lab, machine_id, {"action": "delete", "params": {"array": "lab"}}, ALLOW
            ),  # fmt: skip
            "after": run_job(lab, machine_id, {"action": "inventory"}, ALLOW),
            "ungranted": run_job(lab, machine_id, create, {**ALLOW, "capabilities": []}),
        }
        done["console"] = vmlab.serial_console(lab, progress.spec)
        (workdir / "jobs.json").write_text(json.dumps(done, indent=2))
        yield done


def test_raid1_job_runs_mdadm_in_the_sandbox_and_mdstat_shows_the_array(jobs):
    job = jobs["create"]
    assert job["state"] == "succeeded", job
    array = job["result"]["array"]  # read back from /proc/mdstat by the provider
    assert (array["level"], array["active"]) == ("raid1", True)
    assert sorted(m["path"] for m in array["members"]) == sorted(DISKS)
    sandbox = job["result"]["sandbox"]
    assert sandbox["capabilities"] == ["CAP_SYS_ADMIN"] and sandbox["reason"] == "ok"
    assert f"job {job['id']} succeeded: RAID 1 /dev/md/lab" in jobs["console"]

    [listed] = jobs["inventory"]["result"]["arrays"]
    assert (listed["name"], listed["level"], listed["device"]) == ("lab", "raid1", array["device"])


def test_a_teardown_job_removes_the_array(jobs):
    assert jobs["delete"]["state"] == "succeeded", jobs["delete"]
    assert sorted(jobs["delete"]["result"]["zeroed"]) == sorted(DISKS)
    assert jobs["after"]["state"] == "succeeded" and jobs["after"]["result"]["arrays"] == []


def test_without_the_operators_allow_the_job_fails_saying_so(jobs):
    job = jobs["ungranted"]
    assert job["state"] == "failed"
    assert job["message"].startswith("capability not granted: CAP_SYS_ADMIN"), job["message"]
