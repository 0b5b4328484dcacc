"""BMC jobs end to end: the API, the BMC runner and the built-in providers in the real sandbox,
against sushy-tools' emulator (Redfish over HTTPS, pinned certificate) and ipmi_sim (RMCP+ over
UDP), both on 127.0.0.1. The job is granted exactly the machine's BMC address and port.

What a user checks: the job succeeds with the state read back from the BMC, the BMC really
changed, a wrong password or a silent BMC fails the job with a clear message, a cancel stops
the provider, and the password is nowhere in clear: not in the database or logs, not in a
job line, not in any process's command line or environment while the provider runs."""

import json
import os
import socket
import threading
from pathlib import Path

import pytest
import trio

from tests.bmc_support import audit_rows, files_holding, remove_runtime, start_appliance
from tests.hostile.support import require_sandbox
from tests.ipmi_support import PASSWORD as IPMI_PASSWORD
from tests.ipmi_support import USER as IPMI_USER
from tests.ipmi_support import IpmiSim, free_udp_port
from tests.test_redfish_sushy import PASSWORD as SUSHY_PASSWORD
from tests.test_redfish_sushy import USER as SUSHY_USER
from tests.test_redfish_sushy import Sushy, free_port

pytestmark = pytest.mark.netns


@pytest.fixture
async def appliance(nursery, tmp_path):
    require_sandbox()
    started = await start_appliance(nursery, tmp_path)
    yield started
    remove_runtime(started)


@pytest.fixture
def sushy(tmp_path):
    (tmp_path / "sushy").mkdir()
    emulator = Sushy(tmp_path / "sushy")
    yield emulator
    emulator.stop()


@pytest.fixture
def sim(tmp_path):
    (tmp_path / "ipmi").mkdir()
    simulator = IpmiSim(tmp_path / "ipmi")
    yield simulator
    simulator.stop()


async def set_bmc(appliance, machine, body):
    status, _, view = await appliance.api.call(
        "PUT", f"/api/v1/machines/{machine}/bmc", body, role="operator"
    )
    assert status == 200, view


def redfish_body(sushy, password=SUSHY_PASSWORD, port=None):
    return {"protocol": "redfish", "address": "127.0.0.1", "port": port or sushy.port,
            "username": SUSHY_USER, "password": password,
            "tls_fingerprint_sha256": sushy.fingerprint}  # fmt: skip


def ipmi_body(sim, password=IPMI_PASSWORD, port=None):
    return {"protocol": "ipmi", "address": "127.0.0.1", "port": port or sim.port,
            "username": IPMI_USER, "password": password}  # fmt: skip


class ProcessWatch:
    """Reads every provider process's cmdline and environ while a job runs (root sees all).

    `entries` name the programs to look at: the provider, and the tool it runs.
    """

    def __init__(self, *entries):
        self.entries = [entry.encode() for entry in entries]
        self.seen = {}  # pid -> (cmdline, environ)
        self.stop = threading.Event()

    def loop(self):
        while not self.stop.is_set():
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    self._look(pid)

    def _look(self, pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if not any(entry in cmdline for entry in self.entries):
                return
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            return  # gone meanwhile
        self.seen[pid] = (cmdline, environ)

    def holding(self, secret):
        return [
            pid for pid, texts in self.seen.items() if any(secret.encode() in t for t in texts)
        ]


async def run_watched(appliance, machine, kind, params, *entries):
    watch = ProcessWatch(*entries)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, watch.loop)
        try:
            job = await appliance.job(machine, kind, params)
            job = await appliance.wait(job["id"])
        finally:
            watch.stop.set()
    return job, watch


async def test_redfish_power_and_pxe_jobs_run_in_the_sandbox(appliance, sushy, caplog):
    machine = await appliance.machine()
    await set_bmc(appliance, machine, redfish_body(sushy))

    status = await appliance.wait(
        (await appliance.job(machine, "power", {"action": "status"}))["id"]
    )
    assert status["state"] == "succeeded", status
    assert status["result"]["power_state"]["power_state"] == "Off"

    on, watch = await run_watched(
        appliance, machine, "power", {"action": "on"}, "redfish/provider.py"
    )
    assert on["state"] == "succeeded", on
    assert on["result"]["power_on"]["power_state"] == "On"
    system = sushy.client().get(on["result"]["power_on"]["system_path"]).json()
    assert system["PowerState"] == "On"
    # The provider was seen running, and its command line and environment held no password.
    assert watch.seen and watch.holding(SUSHY_PASSWORD) == []

    boot = await appliance.wait((await appliance.job(machine, "boot_pxe", {}))["id"])
    assert boot["state"] == "succeeded", boot
    assert boot["result"]["boot_pxe_once"]["target"] == "Pxe"
    lines = await appliance.log_lines(boot["id"])
    assert "step 1/1: boot_pxe_once" in lines
    assert any("one-time override" in line for line in lines)  # sushy keeps it continuous

    # Each run opened the password: a key use naming the job, in the audit log.
    unwraps = await appliance.store.read(audit_rows, "key.unwrap")
    assert any(boot["id"] in row[0] for row in unwraps)
    assert files_holding(appliance.data, SUSHY_PASSWORD) == []
    assert SUSHY_PASSWORD not in caplog.text
    for job in (status, on, boot):
        assert SUSHY_PASSWORD not in json.dumps(job)
        assert SUSHY_PASSWORD not in json.dumps(await appliance.log_lines(job["id"]))


async def test_a_wrong_redfish_password_fails_the_job_clearly(appliance, sushy):
    machine = await appliance.machine()
    await set_bmc(appliance, machine, redfish_body(sushy, password="not-the-password"))

    job = await appliance.wait((await appliance.job(machine, "power", {"action": "on"}))["id"])

    assert job["state"] == "failed"
    assert job["message"].startswith("power_on: ") and "401" in job["message"], job
    assert sushy.client().get("/redfish/v1/Systems").status == 200  # the BMC itself is fine


async def test_an_unreachable_bmc_fails_the_job_with_the_reason(appliance):
    machine = await appliance.machine()
    silent = free_port()  # nobody listens there
    body = {"protocol": "redfish", "address": "127.0.0.1", "port": silent, "username": "u",
            "password": "p", "verify_tls": False}  # fmt: skip
    await set_bmc(appliance, machine, body)

    job = await appliance.wait((await appliance.job(machine, "power", {"action": "status"}))["id"])

    assert job["state"] == "failed"
    assert job["message"].startswith(f"power_state: cannot connect to https://127.0.0.1:{silent}")
    assert job["message"].endswith(
        f"the BMC at 127.0.0.1:{silent}/tcp answered: Connection refused"
    )


async def test_ipmi_power_and_pxe_jobs_run_over_the_udp_relay(appliance, sim):
    machine = await appliance.machine()
    await set_bmc(appliance, machine, ipmi_body(sim))

    status = await appliance.wait(
        (await appliance.job(machine, "power", {"action": "status"}))["id"]
    )
    assert status["state"] == "succeeded", status
    assert status["result"]["power_state"] == {"power_state": "off"}

    entries = ("ipmi/provider.py", "/usr/bin/ipmitool")
    on, watch = await run_watched(appliance, machine, "power", {"action": "on"}, *entries)
    assert on["state"] == "succeeded", on
    assert sim.file("power") == "1"
    tools = [pid for pid, (cmdline, _) in watch.seen.items() if b"ipmitool" in cmdline]
    assert tools and watch.holding(IPMI_PASSWORD) == []

    boot = await appliance.job(machine, "boot_pxe", {"reset": True})
    boot = await appliance.wait(boot["id"])
    assert boot["state"] == "succeeded", boot
    assert boot["result"]["boot_pxe_once"]["device"] == "Force PXE"
    assert boot["result"]["reset"]["power_state"] == "on"
    assert sim.file("boot") == "pxe" and "0x20 set reset 1" in sim.calls()
    assert files_holding(appliance.data, IPMI_PASSWORD) == []


async def test_a_wrong_ipmi_password_and_a_silent_port_fail_clearly(appliance, sim):
    machine = await appliance.machine()
    await set_bmc(appliance, machine, ipmi_body(sim, password="wrong-one"))
    job = await appliance.wait((await appliance.job(machine, "power", {"action": "status"}))["id"])
    assert job["state"] == "failed"
    assert "Unable to establish IPMI v2 / RMCP+ session" in job["message"], job

    other = await appliance.machine()
    silent = free_udp_port()
    await set_bmc(appliance, other, ipmi_body(sim, port=silent))
    job = await appliance.wait((await appliance.job(other, "power", {"action": "on"}))["id"])
    assert job["state"] == "failed", job
    assert f"the BMC at 127.0.0.1:{silent}/udp answered: Connection refused" in job["message"]
    assert sim.file("power") == "0"


async def test_cancel_stops_a_running_provider(appliance, sim):
    sim.set_file("delay", "1000000")  # the power change never lands: the provider polls
    machine = await appliance.machine()
    await set_bmc(appliance, machine, ipmi_body(sim))
    job = await appliance.job(machine, "power", {"action": "on"})

    while not any("waiting for power on" in line for line in await appliance.log_lines(job["id"])):
        await trio.sleep(0.2)
    status, _, _ = await appliance.api.call("POST", f"/api/v1/jobs/{job['id']}/cancel")
    assert status == 200
    ended = await appliance.wait(job["id"])

    assert ended["state"] == "cancelled", ended
    await appliance.provider_gone()
    calls_after = len(sim.calls())
    await trio.sleep(2.5)  # the provider polled every second while it ran
    assert len(sim.calls()) == calls_after


NOSY_PROVIDER = """import ctypes, json, socket, sys
request = json.loads(sys.stdin.readline())
params = request["params"]
ctypes.CDLL(None, use_errno=True).syscall(ctypes.c_long({keyctl}), 0, -3, 0)


def reach(port):
    try:
        socket.create_connection((params["host"], port), timeout=5).close()
        return "connected"
    except OSError as exc:
        return exc.strerror


data = {{"granted": reach(params["port"]), "other": reach({other})}}
print(json.dumps({{"type": "result", "status": "succeeded", "message": "looked", "data": data}}))
"""


def nosy_redfish(root, other_port):
    """A stand-in for the Redfish provider: the shipped manifest, a nosy program."""
    from providers.sandbox import _kernel

    target = root / "stand-in" / "redfish"
    target.mkdir(parents=True)
    manifest_text = (Path(__file__).parent.parent / "providers/redfish/provider.json").read_text()
    (target / "provider.json").write_text(manifest_text)
    keyctl = _kernel.syscall_table()["keyctl"]
    (target / "provider.py").write_text(NOSY_PROVIDER.format(keyctl=keyctl, other=other_port))
    for path in (root / "stand-in", target, *target.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return target.parent


async def test_refusals_are_logged_and_audited_and_only_the_bmc_port_is_reached(
    appliance, monkeypatch
):
    from appliance.core import bmc

    with socket.socket() as granted, socket.socket() as other:
        for listener in (granted, other):
            listener.bind(("127.0.0.1", 0))
            listener.listen(4)
            listener.setblocking(False)
        other_port = other.getsockname()[1]
        monkeypatch.setattr(bmc, "PROVIDERS", nosy_redfish(appliance.runtime, other_port))
        machine = await appliance.machine()
        body = {"protocol": "redfish", "address": "127.0.0.1", "port": granted.getsockname()[1],
                "username": "u", "password": "stand-in-pass", "verify_tls": False}  # fmt: skip
        await set_bmc(appliance, machine, body)

        job = await appliance.wait((await appliance.job(machine, "power", {"action": "on"}))["id"])

        assert job["state"] == "succeeded", job
        seen = job["result"]["power_on"]
        assert seen["granted"] == "connected" and seen["other"] != "connected", seen
        granted.accept()[0].close()  # the relay did connect to the granted port
        with pytest.raises(BlockingIOError):
            other.accept()  # nothing ever reached the other one
    assert "refused by the sandbox: seccomp keyctl" in await appliance.log_lines(job["id"])
    refusals = await appliance.store.read(audit_rows, "provider.refusal")
    assert len(refusals) == 1 and refusals[0][2] == machine and refusals[0][3] == "denied"
    assert job["id"] in refusals[0][4] and "keyctl" in refusals[0][4]


async def test_a_job_past_its_timeout_is_ended_and_its_provider_stopped(appliance, sim):
    sim.set_file("delay", "1000000")  # the power change never lands
    machine = await appliance.machine()
    await set_bmc(appliance, machine, ipmi_body(sim))

    job = await appliance.job(machine, "power", {"action": "on"}, timeout_seconds=4)
    ended = await appliance.wait(job["id"])

    assert ended["state"] == "timed_out", ended
    assert ended["message"] == "no result within timeout_seconds=4"
    await appliance.provider_gone()
    calls_after = len(sim.calls())
    await trio.sleep(2.5)  # the provider polled every second while it ran
    assert len(sim.calls()) == calls_after
