"""The agent's main loop against a real HTTPS server, with fake time and commands.

The HTTP path is real (TLS on 127.0.0.1, pinned); the clock, sleep, command
runner and /sys/class/net are fakes, so a test sees the exact waits the
agent chose and the commands it would have run, and takes no real time.
"""

import pytest

from bootos.agent.client import AgentClient
from bootos.agent.runtime import EXIT_PROTOCOL, EXIT_STOPPED, Backoff, Runtime
from tests.agent_https import FakeAppliance, closed_port, make_certificate

MAC = "52:54:00:12:34:56"
INVENTORY = {"schema": "cloudboot.inventory/1", "system": {"serial": "SN-RUNTIME"}}


class StopAgent(Exception):
    """Raised by a fake to end a loop that would otherwise retry for ever."""


class Machine:
    """The fakes: a clock that sleep advances, a command log, a console log."""

    def __init__(self, net_dir, commands=None, on_sleep=None, max_sleeps=50):
        self.now = 1000.0
        self.sleeps = []
        self.commands = []
        self.lines = []
        self.net_dir = net_dir
        self.answers = commands or {}
        self.on_sleep = on_sleep
        self.max_sleeps = max_sleeps

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds
        if self.on_sleep:
            self.on_sleep(len(self.sleeps))
        if len(self.sleeps) >= self.max_sleeps:
            raise StopAgent

    def run(self, argv, timeout=None):
        self.commands.append(argv)
        answers = self.answers.get(argv[0])
        if answers:
            return answers.pop(0)
        return 0, ""

    def console(self, text):
        self.lines.append(text)

    def add_nic(self, name, mac=MAC):
        (self.net_dir / name).mkdir(parents=True)
        (self.net_dir / name / "address").write_text(mac + "\n")


@pytest.fixture
def certificate(tmp_path):
    return make_certificate(tmp_path)


@pytest.fixture
def appliance(certificate):
    cert, key, _pin = certificate
    server = FakeAppliance(cert, key).start()
    yield server
    server.stop()


@pytest.fixture
def machine(tmp_path):
    fake = Machine(tmp_path / "net")
    fake.add_nic("eno1", "52:54:00:00:00:99")
    fake.add_nic("eno2")
    return fake


def make_runtime(url, pin, machine, **params):
    boot = {"url": url, "fp": pin, "mac": MAC, "proto": 1, **params}
    return Runtime(
        boot,
        AgentClient(url, pin, timeout=5),
        inventory=lambda: INVENTORY,
        run=machine.run,
        sleep=machine.sleep,
        clock=machine.clock,
        console=machine.console,
        rng=lambda: 1.0,
        net_dir=machine.net_dir,
        poll_wait=1,
    )


def test_session_runs_each_job_kind_and_stops_on_reboot(appliance, certificate, machine):
    for job in (
        {"id": "j1", "kind": "inventory", "params": {}},
        {"id": "j2", "kind": "wait", "params": {"seconds": 7}, "timeout_seconds": 60},
        {"id": "j3", "kind": "flash_bios", "params": {}},
        {"id": "j4", "kind": "reboot", "params": {}},
    ):
        appliance.jobs.put(job)
    runtime = make_runtime(appliance.url, certificate[2], machine, guid="abc")

    assert runtime.run() == EXIT_STOPPED

    assert machine.commands[0] == ["ip", "link", "set", "eno2", "up"]
    assert machine.commands[1][:3] == ["udhcpc", "-i", "eno2"]
    assert machine.commands[-1] == ["reboot", "-f"]
    assert machine.sleeps == [7]

    registration = appliance.requests[0]["body"]
    assert (registration["boot_mac"], registration["pxe_guid"]) == (MAC, "abc")
    results = {r["job_id"]: r for r in appliance.results}
    assert results["j1"]["status"] == "succeeded"
    assert results["j1"]["data"] == {"inventory": INVENTORY}
    assert results["j2"]["status"] == "succeeded"
    assert results["j2"]["message"] == "waited 7 s"
    assert results["j3"]["status"] == "failed"
    assert "'flash_bios'" in results["j3"]["message"]
    assert results["j4"] == {
        "job_id": "j4",
        "status": "succeeded",
        "message": "rebooting",
        "data": {},
    }


def test_waits_with_backoff_while_the_appliance_is_down(certificate, machine):
    port = closed_port()
    cert, key, pin = certificate
    started = []

    def bring_appliance_up(sleeps):
        if sleeps == 4:
            server = FakeAppliance(cert, key, port=port).start()
            server.jobs.put({"id": "j1", "kind": "poweroff", "params": {}})
            started.append(server)

    machine.on_sleep = bring_appliance_up
    url = f"https://127.0.0.1:{port}"

    try:
        assert make_runtime(url, pin, machine).run() == EXIT_STOPPED
    finally:
        for server in started:
            server.stop()

    assert machine.sleeps == [1, 2, 4, 8]
    assert machine.lines[2] == f"appliance {url} unreachable: connection refused; retry in 1 s"
    assert f"appliance {url} unreachable: connection refused; retry in 8 s" in machine.lines
    assert machine.commands[-1] == ["poweroff", "-f"]
    assert started[0].results[0]["status"] == "succeeded"


def test_backoff_is_capped_and_jittered():
    draws = iter([1.0] * 8 + [0.0])
    backoff = Backoff(lambda: next(draws), base=1, cap=30)

    delays = [backoff.next_delay() for _ in range(9)]

    assert delays == [1, 2, 4, 8, 16, 30, 30, 30, 15]


def test_protocol_mismatch_stops_registration_with_the_appliance_message(
    appliance, certificate, machine
):
    message = "registration protocol must be one of [2], got 1"
    appliance.register_answer = (
        426,
        {"error": {"code": "agent_protocol_unsupported", "message": message}},
    )

    assert make_runtime(appliance.url, certificate[2], machine).run() == EXIT_PROTOCOL

    assert appliance.registrations == 1
    assert machine.sleeps == []
    assert any(message in line for line in machine.lines)
    assert any("not retrying registration" in line for line in machine.lines)


def test_wrong_pin_never_sends_and_keeps_saying_why(appliance, machine, tmp_path):
    _cert, _key, wrong_pin = make_certificate(tmp_path, name="impostor")
    machine.max_sleeps = 3

    with pytest.raises(StopAgent):
        make_runtime(appliance.url, wrong_pin, machine).run()

    assert appliance.requests == []
    assert "does not match cloudboot.fp" in machine.lines[-1]
    assert machine.lines[-1].endswith("retry in 4 s")


def test_waits_for_the_boot_nic_and_retries_dhcp(appliance, certificate, tmp_path):
    machine = Machine(tmp_path / "net", commands={"udhcpc": [(1, "udhcpc: no lease, failing\n")]})
    machine.net_dir.mkdir()
    machine.on_sleep = lambda sleeps: sleeps == 1 and machine.add_nic("enp1s0")
    appliance.jobs.put({"id": "j1", "kind": "poweroff", "params": {}})

    assert make_runtime(appliance.url, certificate[2], machine).run() == EXIT_STOPPED

    assert (
        machine.lines[0]
        == f"no network interface with MAC {MAC} yet (driver not loaded?); retry in 1 s"
    )
    assert "no DHCP lease on enp1s0: udhcpc: no lease, failing; retry in 1 s" in machine.lines
    assert [c[0] for c in machine.commands] == ["ip", "udhcpc", "ip", "udhcpc", "poweroff"]


def test_a_refused_token_leads_to_a_new_registration(appliance, certificate, machine):
    appliance.poll_answers.put((401, {"error": {"code": "unauthorized", "message": "expired"}}))
    appliance.jobs.put({"id": "j1", "kind": "poweroff", "params": {}})

    assert make_runtime(appliance.url, certificate[2], machine).run() == EXIT_STOPPED

    assert appliance.registrations == 2


def test_a_bad_wait_job_fails_with_the_reason(appliance, certificate, machine):
    appliance.jobs.put({"id": "j1", "kind": "wait", "params": {"seconds": "soon"}})
    appliance.jobs.put(
        {"id": "j2", "kind": "wait", "params": {"seconds": 90}, "timeout_seconds": 60}
    )
    appliance.jobs.put({"id": "j4", "kind": "wait", "params": {}})
    appliance.jobs.put({"id": "j3", "kind": "poweroff", "params": {}})

    make_runtime(appliance.url, certificate[2], machine).run()

    results = {r["job_id"]: r for r in appliance.results}
    assert results["j1"]["status"] == "failed"
    assert "'soon'" in results["j1"]["message"]
    assert "longer than its 60 s timeout" in results["j2"]["message"]
    assert results["j4"]["status"] == "failed"
    assert "params.seconds" in results["j4"]["message"]
    assert machine.sleeps == []


def test_a_job_that_raises_is_reported_failed(appliance, certificate, machine):
    appliance.jobs.put({"id": "j1", "kind": "inventory", "params": {}})
    appliance.jobs.put({"id": "j2", "kind": "poweroff", "params": {}})
    runtime = make_runtime(appliance.url, certificate[2], machine)
    calls = []

    def inventory():
        calls.append(1)
        if len(calls) > 1:
            raise OSError("dmidecode vanished")
        return INVENTORY

    runtime.inventory = inventory

    assert runtime.run() == EXIT_STOPPED
    assert appliance.results[0]["status"] == "failed"
    assert appliance.results[0]["message"] == "OSError: dmidecode vanished"


def test_an_inventory_failure_at_registration_is_retried(appliance, certificate, machine):
    appliance.jobs.put({"id": "j1", "kind": "poweroff", "params": {}})
    runtime = make_runtime(appliance.url, certificate[2], machine)
    calls = []

    def inventory():
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("bad SMBIOS table")
        return INVENTORY

    runtime.inventory = inventory

    assert runtime.run() == EXIT_STOPPED
    assert (
        "cannot collect the inventory: ValueError: bad SMBIOS table; retry in 1 s" in machine.lines
    )
    assert appliance.registrations == 1
