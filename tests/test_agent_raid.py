"""`raid` jobs in the agent: params, the capability grant, the sandboxed run, cancel.

The providers here are small stand-ins written by the test (this machine has no md
driver); they run through the real sandbox, so these tests need root. The agent's side is
real too: the Runtime against the fake appliance over pinned HTTPS (tests/agent_https.py).
mdadm itself, through the same path, is proven in a VM by tests/test_mdadm_vm.py.
"""

import json
import os
import shutil
import tempfile
import threading
from pathlib import Path

import pytest

from bootos.agent import raid
from bootos.agent.client import AgentClient
from bootos.agent.runtime import EXIT_STOPPED, JobStopped, Runtime
from providers import manifest
from providers.sandbox import runner
from tests.agent_https import FakeAppliance, make_certificate
from tests.hostile.support import require_sandbox

MAC = "52:54:00:12:34:56"
ADMIN = ["CAP_SYS_ADMIN"]
POLICY = {"caps-raid": frozenset(ADMIN), "hangs": frozenset(ADMIN)}

REPORTS = """import json, sys
request = json.loads(sys.stdin.readline())
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
print(json.dumps({"type": "progress", "percent": 50, "message": "halfway"}), flush=True)
data = {"action": request["action"], "params": request["params"], "job": request["job_id"],
        "effective": status["CapEff"].strip()}
print(json.dumps({"type": "result", "status": "succeeded", "message": "done", "data": data}))
"""
HANGS = """import sys, time
sys.stdin.readline()
while True:
    time.sleep(1)
"""


def write_provider(root, name, code, capabilities=ADMIN):
    directory = root / name
    directory.mkdir(mode=0o755)
    document = {
        "schema": "cloudboot.provider/1", "name": name, "version": "1", "vendor": "test",
        "kind": "raid", "entry": "provider.py", "interpreter": "python3",
        "capabilities": {"linux_capabilities": capabilities, "paths": {"read": ["/proc"]}},
    }  # fmt: skip
    (directory / "provider.json").write_text(json.dumps(document))
    (directory / "provider.py").write_text(code)
    for path in (directory, directory / "provider.json", directory / "provider.py"):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)


@pytest.fixture(scope="module")
def shipped():
    """A providers directory like BootOS's, outside /tmp (see the caps tests)."""
    require_sandbox()
    root = Path(tempfile.mkdtemp(prefix="cloudboot-raid-", dir="/var/tmp"))
    os.chmod(root, 0o755)
    write_provider(root, "caps-raid", REPORTS)
    write_provider(root, "hangs", HANGS)
    write_provider(root, "unprivileged", REPORTS, capabilities=[])
    (root / "runtime").mkdir()
    settings = runner.SandboxSettings(runtime_root=str(root / "runtime"))
    yield raid.RaidRunner(str(root), settings, POLICY)
    shutil.rmtree(root, ignore_errors=True)


def job(provider="caps-raid", allow=None, request=None, job_id="j1"):
    params = {
        "provider": provider,
        "request": request or {"action": "create", "params": {"level": 1}},
        "allow": allow if allow is not None else {"capabilities": ADMIN, "devices": []},
    }
    return {"id": job_id, "kind": "raid", "params": params}


# --- params and grants (no sandbox needed) --------------------------------------------------


@pytest.mark.parametrize(
    "params, complaint",
    [
        ("mdadm", "params must be an object"),
        ({"provider": "mdadm", "request": {"action": "x"}, "force": True}, "unknown key(s) force"),
        ({"provider": "../etc", "request": {"action": "x"}}, "params.provider must name"),
        ({"provider": "mdadm", "request": {"params": {}}}, "params.request must be"),
        ({"provider": "mdadm", "request": {"action": "x", "params": []}}, "request.params must"),
        ({"provider": "mdadm", "request": {"action": "x"}, "allow": []}, "params.allow must"),
        (
            {"provider": "mdadm", "request": {"action": "x"}, "allow": {"devices": "/dev/sda"}},
            "allow.devices must be a list",
        ),
    ],
)
def test_bad_params_are_refused_with_the_reason(params, complaint):
    with pytest.raises(raid.RaidJobError) as caught:
        raid.check_params(params)
    assert complaint in str(caught.value)


def test_a_capability_the_job_does_not_allow_is_not_granted():
    found = manifest.from_dict(
        {
            "schema": "cloudboot.provider/1", "name": "mdadm", "version": "1", "vendor": "t",
            "kind": "raid", "entry": "p.py", "capabilities": {"linux_capabilities": ADMIN},
        }
    )  # fmt: skip
    allow = {"capabilities": [], "devices": ["/dev/vda"]}
    with pytest.raises(raid.RaidJobError, match="capability not granted: CAP_SYS_ADMIN"):
        raid.grants_for(found, allow)

    allow["capabilities"] = ADMIN
    assert raid.grants_for(found, allow) == {"capabilities": ADMIN, "devices": ["/dev/vda"]}
    with pytest.raises(raid.RaidJobError, match="this agent's policy for mdadm"):
        raid.grants_for(found, allow, policy={})


def test_the_shipped_providers_ask_only_what_the_agent_policy_permits():
    repo = Path(__file__).resolve().parent.parent
    for name, permitted in raid.POLICY.items():
        found = manifest.load(repo / "providers" / name)
        assert found.kind == "raid"
        assert set(found.linux_capabilities) <= permitted, name


# --- through the sandbox ---------------------------------------------------------------------


def test_the_provider_runs_with_the_granted_capability_and_its_events_are_posted(shipped):
    posted = []
    status, message, data = shipped.run(job(), lambda lines, p: posted.append((lines, p)), 30)

    assert (status, message) == ("succeeded", "done")
    assert data["action"] == "create" and data["params"] == {"level": 1} and data["job"] == "j1"
    assert data["effective"] == f"{1 << 21 | 1 << 27:016x}"  # CAP_SYS_ADMIN and CAP_MKNOD
    assert data["sandbox"]["capabilities"] == ADMIN
    assert posted[0] == (["provider caps-raid 1: create"], None)
    assert (["50% halfway"], 50) in posted


def test_a_provider_that_asks_for_nothing_runs_unprivileged(shipped):
    status, _message, data = shipped.run(job("unprivileged"), lambda *a: None, 30)
    assert status == "succeeded"
    assert data["effective"] == "0" * 16 and data["sandbox"]["capabilities"] == []


def test_an_unknown_provider_names_what_this_bootos_has(shipped):
    with pytest.raises(raid.RaidJobError, match="no provider 'megaraid2'.*caps-raid"):
        shipped.run(job("megaraid2"), lambda *a: None, 30)


def test_cancel_from_the_appliance_kills_the_provider(shipped):
    calls = []

    def post(lines, progress):
        calls.append(lines)
        if lines == []:  # the first heartbeat: the appliance answers job_cancelled
            raise JobStopped("409 job_cancelled")

    with pytest.raises(JobStopped):
        shipped.run(job("hangs"), post, 0.5)
    assert [] in calls
    assert not [t for t in threading.enumerate() if t.name == "provider-hangs"]
    assert os.listdir(shipped.settings.runtime_root) == []  # the run cleaned up after itself


# --- the agent's job loop ----------------------------------------------------------------------


@pytest.fixture
def appliance(tmp_path):
    cert, key, pin = make_certificate(tmp_path)
    server = FakeAppliance(cert, key).start()
    server.pin = pin
    yield server
    server.stop()


def test_the_agent_reports_raid_jobs_and_says_why_one_was_refused(appliance, shipped, tmp_path):
    appliance.jobs.put(job(job_id="granted"))
    appliance.jobs.put(job(allow={"capabilities": []}, job_id="ungranted"))
    appliance.jobs.put({"id": "wipe", "kind": "wipe", "params": {}})
    appliance.jobs.put({"id": "end", "kind": "poweroff", "params": {}})
    (tmp_path / "net" / "eno1").mkdir(parents=True)
    (tmp_path / "net" / "eno1" / "address").write_text(MAC + "\n")
    boot = {"url": appliance.url, "fp": appliance.pin, "mac": MAC, "guid": None, "proto": 1}
    runtime = Runtime(
        boot, AgentClient(appliance.url, appliance.pin, timeout=5),
        inventory=lambda: {"schema": "cloudboot.inventory/1"},
        run=lambda argv, timeout=None: (0, ""),
        sleep=lambda s: None, console=lambda line: None, net_dir=tmp_path / "net", poll_wait=1,
        raid=shipped,
    )  # fmt: skip

    assert runtime.run() == EXIT_STOPPED

    results = {r["job_id"]: r for r in appliance.results}
    assert results["granted"]["status"] == "succeeded"
    assert results["granted"]["data"]["sandbox"]["capabilities"] == ADMIN
    assert results["ungranted"]["status"] == "failed"
    assert results["ungranted"]["message"].startswith("capability not granted: CAP_SYS_ADMIN")
    assert results["wipe"]["status"] == "failed" and "'wipe'" in results["wipe"]["message"]
    events = [
        r["body"]
        for r in appliance.requests
        if r["path"] == "/api/v1/agent/jobs/granted/events" and r["body"]
    ]
    assert {"progress": 50, "lines": ["50% halfway"]} in events


def test_the_md_modules_are_loaded_before_mdadm_runs_and_a_failure_says_so():
    repo = Path(__file__).resolve().parent.parent
    asked = []

    def modprobe(modules):
        asked.append(modules)
        return 1, "modprobe: FATAL: Module raid10 not found in directory /lib/modules/x\n"

    runner_ = raid.RaidRunner(str(repo / "providers"), modprobe=modprobe)
    with pytest.raises(raid.RaidJobError, match="modprobe md_mod raid1 raid10 failed: .*raid10"):
        runner_.run(job("mdadm"), lambda *a: None, 30)
    assert asked == [("md_mod", "raid1", "raid10")]
