"""IPMI provider against ipmi_sim (Debian openipmi) on 127.0.0.1 through the real ipmitool:
power state, on, off (landing a few reads later), reset, one-time PXE with read-back, the
password kept off the command line, and clear failures. Plus the provider run end to end
through the sandbox, its UDP destination granted by the job and relayed by the launcher."""

import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from providers import manifest, protocol
from providers.ipmi import provider
from providers.ipmi.ipmitool import Bmc, IpmiError, parse_boot_flags
from providers.sandbox import runner
from tests.hostile.support import make_lab, require_sandbox
from tests.ipmi_support import PASSWORD, USER, IpmiSim
from tests.redfish_support import Recorder


@pytest.fixture
def sim(tmp_path):
    simulator = IpmiSim(tmp_path)
    yield simulator
    simulator.stop()


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def bmc_for(sim, password=PASSWORD, events=None, **options):
    clock = FakeClock()
    return Bmc("127.0.0.1", sim.port, USER, password, events or Recorder(), clock=clock,
               sleep=clock.sleep, **options)  # fmt: skip


def test_power_on_and_off_are_read_back(sim):
    bmc = bmc_for(sim)

    assert bmc.power_state() == "off"
    assert bmc.power_on()["data"] == {"power_state": "on"}
    assert sim.file("power") == "1"
    assert bmc.power_off()["data"] == {"power_state": "off"}
    assert sim.file("power") == "0"


def test_power_that_lands_later_is_polled(sim):
    sim.set_file("delay", "3")
    events = Recorder()

    outcome = bmc_for(sim, events=events).power_on()

    assert outcome["data"] == {"power_state": "on"}
    waits = [m for kind, _, m in events.events if kind == "progress"]
    assert waits and all(m == "waiting for power on, now off" for m in waits)


def test_power_that_never_lands_times_out(sim):
    sim.set_file("delay", "1000000")

    with pytest.raises(IpmiError, match=r"power is still off after 3 s \(expected on\)"):
        bmc_for(sim, power_timeout=3).power_on()


def test_reset_of_a_running_machine_and_of_a_stopped_one(sim):
    bmc = bmc_for(sim)

    off = bmc.reset()  # off: powers it on
    assert off["data"] == {"power_state": "on"}
    running = bmc.reset()
    assert running["data"] == {"power_state": "on"}
    assert "0x20 set reset 1" in sim.calls()


def test_pxe_once_is_set_and_read_back(sim):
    events = Recorder()

    outcome = bmc_for(sim, events=events).boot_pxe_once()

    assert sim.file("boot") == "pxe"
    assert outcome["data"]["device"] == "Force PXE"
    assert outcome["data"]["once"] is True
    # ipmi_sim never reports the valid bit set: the provider says so instead of hiding it.
    assert outcome["data"]["valid"] is False
    assert any("not valid" in w for w in events.warnings())


def test_a_bmc_that_keeps_the_old_boot_device_fails_the_job(sim):
    sim.set_file("ignore_boot", "yes")

    with pytest.raises(
        IpmiError, match="accepted bootdev pxe but reads back 'Force Boot from default Hard-Drive'"
    ):
        bmc_for(sim).boot_pxe_once()


def test_wrong_password_is_a_clear_failure(sim):
    with pytest.raises(IpmiError, match=r"chassis power status on 127\.0\.0\.1:\d+: .*session"):
        bmc_for(sim, password="wrong").power_state()


def test_the_password_is_never_on_the_command_line_nor_in_the_environment():
    seen = {}

    def run(argv, **options):
        path = argv[argv.index("-f") + 1]
        seen.update(argv=argv, env=options["env"], path=path, mode=os.stat(path).st_mode)
        seen["content"] = Path(path).read_text()
        return subprocess.CompletedProcess(argv, 0, "Chassis Power is on\n", "")

    bmc = Bmc("127.0.0.1", 623, USER, PASSWORD, Recorder(), run=run)
    assert bmc.power_state() == "on"

    assert PASSWORD not in " ".join(seen["argv"]) and PASSWORD not in json.dumps(seen["env"])
    assert "-E" not in seen["argv"] and "-P" not in seen["argv"]
    assert seen["content"] == PASSWORD and seen["mode"] & 0o077 == 0
    assert not os.path.exists(seen["path"])  # removed after the call


def test_an_ipmitool_that_hangs_is_cut_off():
    def run(argv, **options):
        raise subprocess.TimeoutExpired(argv, options["timeout"])

    bmc = Bmc("127.0.0.1", 623, USER, PASSWORD, Recorder(), run=run, command_timeout=7)
    with pytest.raises(IpmiError, match="no answer within 7 s"):
        bmc.power_state()


def test_boot_flags_parse_from_partial_output():
    assert parse_boot_flags("garbage\n") == {"device": None, "valid": None, "once": None}
    text = " - Boot Flag Valid\n - Options apply to all future boots\n" \
           " - Boot Device Selector : Force PXE\n"  # fmt: skip
    assert parse_boot_flags(text) == {"device": "Force PXE", "valid": True, "once": False}


def run_provider(request):
    out = io.StringIO()
    provider.handle(request, provider.Events(out))
    return [json.loads(line) for line in out.getvalue().splitlines()]


@pytest.mark.parametrize(
    "params, words",
    [
        ({"username": "a", "password": "b"}, "params.host"),
        ({"host": "-oProxyCommand=x", "username": "a", "password": "b"}, "params.host"),
        ({"host": "127.0.0.1", "username": "a\nb", "password": "b"}, "control characters"),
        ({"host": "127.0.0.1", "username": "a", "password": "b", "port": 70000}, "params.port"),
    ],
)
def test_bad_requests_end_in_one_clear_failed_result(params, words):
    events = run_provider({"action": "power_on", "params": params})

    assert len(events) == 1 and events[0]["status"] == "failed"
    assert words in events[0]["message"]


def test_the_provider_entry_runs_a_full_request(sim):
    params = {"host": "127.0.0.1", "port": sim.port, "username": USER, "password": PASSWORD}
    events = run_provider({"action": "boot_pxe_once", "params": params})

    assert events[-1]["type"] == "result" and events[-1]["status"] == "succeeded"
    assert events[-1]["data"]["device"] == "Force PXE"
    assert PASSWORD not in json.dumps(events)


def sandboxed_copy(lab):
    """The built-in provider as the runner sees a package: world-readable, its manifest as is
    (it takes its destination from the job)."""
    target = lab.packages / "ipmi"
    shutil.copytree(provider.__file__.rsplit("/", 1)[0], target,
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    for path in [target, *target.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return target


def run_sandboxed(lab, sim, action, grant_port=None, **params):
    target = sandboxed_copy(lab)
    params = {"host": "127.0.0.1", "port": sim.port, "username": USER,
              "password": PASSWORD, "power_timeout_seconds": 10, **params}  # fmt: skip
    request = protocol.make_request(action, params, job_id=f"ipmi-{action}")
    settings = runner.SandboxSettings(runtime_root=str(lab.runtime))
    granted = {"host": "127.0.0.1", "port": grant_port or sim.port, "protocol": "udp"}
    return runner.run(target, manifest.load(target), request, {"destinations": [granted]},
                      settings)  # fmt: skip


@pytest.mark.netns
def test_the_provider_runs_end_to_end_in_the_sandbox(sim):
    require_sandbox()
    lab = make_lab()
    try:
        result = run_sandboxed(lab, sim, "power_on")

        assert result.status == "succeeded", result.to_dict()
        assert sim.file("power") == "1"
        relayed = [c for c in result.connections if c.get("protocol") == "udp"]
        assert relayed and relayed[0]["port"] == sim.port and relayed[0]["datagrams_in"] > 0
        assert PASSWORD not in json.dumps(result.to_dict())
    finally:
        shutil.rmtree(lab.root, ignore_errors=True)


@pytest.mark.netns
def test_a_port_other_than_the_granted_one_reaches_nothing(sim):
    require_sandbox()
    lab = make_lab()
    try:
        # The grant names another UDP port of the same host: the BMC's real port is not
        # reachable from inside the sandbox, so ipmitool gets no session.
        result = run_sandboxed(lab, sim, "power_state", grant_port=sim.port + 1)

        assert result.status == "failed", result.to_dict()
        assert "Unable to establish IPMI v2 / RMCP+ session" in result.message
        assert not any(c["port"] == sim.port for c in result.connections)
    finally:
        shutil.rmtree(lab.root, ignore_errors=True)


@pytest.mark.netns
def test_a_manifest_without_from_job_gets_no_job_destination(sim):
    require_sandbox()
    lab = make_lab()
    try:
        target = sandboxed_copy(lab)
        document = json.loads((target / "provider.json").read_text())
        document["capabilities"]["network"] = []
        (target / "provider.json").write_text(json.dumps(document))
        params = {"host": "127.0.0.1", "port": sim.port, "username": USER, "password": PASSWORD}
        request = protocol.make_request("power_state", params, job_id="ipmi-no-grant")
        settings = runner.SandboxSettings(runtime_root=str(lab.runtime))
        granted = {"host": "127.0.0.1", "port": sim.port, "protocol": "udp"}
        result = runner.run(target, manifest.load(target), request,
                            {"destinations": [granted]}, settings)  # fmt: skip

        assert result.status == "failed"
        assert any(r.get("by") == "runner" and "from the job" in r["note"]
                   for r in result.refusals)  # fmt: skip
    finally:
        shutil.rmtree(lab.root, ignore_errors=True)
