"""Redfish provider against sushy-tools' emulator (fake driver) on 127.0.0.1 over HTTPS with a
pinned self-signed certificate and Basic authentication: power changes that land 1-11 s
after they were accepted, a one-time override the emulator turns into a continuous one, and
the whole provider run end to end through the real sandbox with a network grant."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from providers import manifest, protocol
from providers.redfish.client import Client
from providers.redfish.system import System
from providers.sandbox import runner
from tests.hostile.support import make_lab, require_sandbox
from tests.redfish_support import Recorder, self_signed_certificate

bcrypt = pytest.importorskip("bcrypt", reason="sushy-tools (pip, test extras) brings bcrypt")
REPO = Path(__file__).resolve().parent.parent
SUSHY = Path(sys.executable).parent / "sushy-emulator"
USER, PASSWORD = "cloudboot", "sushy-pass-7"
NIC_MAC = "52:54:00:a1:b2:c3"


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Sushy:
    def __init__(self, directory):
        if not SUSHY.exists():
            pytest.skip("sushy-tools is not installed in this environment (pip: sushy-tools)")
        self.port = free_port()
        self.uuid = str(uuid.uuid4())
        cert, key, self.fingerprint = self_signed_certificate(directory)
        users = directory / "htpasswd"
        users.write_text(f"{USER}:{bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt()).decode()}\n")
        systems = [{"uuid": self.uuid, "name": "node-1", "power_state": "Off",
                    "nics": [{"mac": NIC_MAC, "ip": "192.0.2.10"}]}]  # fmt: skip
        config = directory / "sushy.conf"
        config.write_text(
            "SUSHY_EMULATOR_FAKE_DRIVER = True\n"
            f"SUSHY_EMULATOR_STATE_DIR = {str(directory / 'state')!r}\n"
            "SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\n"
            f"SUSHY_EMULATOR_LISTEN_PORT = {self.port}\n"
            f"SUSHY_EMULATOR_SSL_CERT = {str(cert)!r}\n"
            f"SUSHY_EMULATOR_SSL_KEY = {str(key)!r}\n"
            f"SUSHY_EMULATOR_AUTH_FILE = {str(users)!r}\n"
            f"SUSHY_EMULATOR_FAKE_SYSTEMS = {systems!r}\n"
        )
        self.log = open(directory / "sushy.log", "wb")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [str(SUSHY), "--config", str(config)], stdout=self.log, stderr=subprocess.STDOUT
        )
        self._wait_ready()

    def client(self, password=PASSWORD):
        return Client("127.0.0.1", self.port, USER, password, fingerprint=self.fingerprint)

    def _wait_ready(self):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sushy-emulator exited with {self.process.returncode}")
            try:
                if self.client().get("/redfish/v1").status == 200:
                    return
            except Exception:  # noqa: BLE001 (not listening yet)
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError("sushy-emulator did not answer within 30 s")

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.log.close()


@pytest.fixture
def sushy(tmp_path):
    emulator = Sushy(tmp_path)
    yield emulator
    emulator.stop()


def test_power_changes_that_land_seconds_later_are_polled(sushy):
    events = Recorder()
    system = System(sushy.client(), events, power_timeout=60)

    assert system.power_state()["data"] == {"power_state": "Off"}
    on = system.power_on()
    assert on["data"] == {"reset_type": "On", "power_state": "On"}
    off = system.power_off()
    assert off["data"] == {"reset_type": "ForceOff", "power_state": "Off"}
    assert sushy.client().get(system.path).json()["PowerState"] == "Off"


def test_sushy_keeps_pxe_only_as_continuous_and_the_override_is_cleared(sushy):
    events = Recorder()
    system = System(sushy.client(), events)

    outcome = system.boot_pxe_once()
    assert outcome["data"] == {"target": "Pxe", "enabled": "Continuous", "clear_after_boot": True}
    assert any("did not keep a one-time override" in w for w in events.warnings())

    system.clear_boot_override()
    boot = sushy.client().get(system.path).json()["Boot"]
    assert boot["BootSourceOverrideTarget"] == "None"


def test_inventory_reports_the_emulated_system_and_its_nic(sushy):
    data = System(sushy.client(), Recorder()).inventory()["data"]

    assert data["system"]["uuid"] == sushy.uuid
    assert data["system"]["manufacturer"] == "Sushy Emulator"
    assert [nic["mac"] for nic in data["nics"]] == [NIC_MAC]


# --- end to end through the sandbox ---------------------------------------------------------


def sandboxed_copy(lab, port):
    """The provider as the runner sees a package: world-readable, asking for the BMC's port."""
    target = lab.packages / "redfish"
    shutil.copytree(REPO / "providers" / "redfish", target,
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    document = json.loads((target / "provider.json").read_text())
    document["capabilities"]["network"] = [{"host": "127.0.0.1", "port": port}]
    (target / "provider.json").write_text(json.dumps(document))
    for path in [target, *target.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    return target


def run_sandboxed(lab, directory, sushy, action):
    params = {
        "host": "127.0.0.1",
        "port": sushy.port,
        "username": USER,
        "password": PASSWORD,
        "tls_fingerprint_sha256": sushy.fingerprint,
        "power_timeout_seconds": 60,
    }
    request = protocol.make_request(action, params, job_id=f"redfish-{action}")
    settings = runner.SandboxSettings(runtime_root=str(lab.runtime))
    found = manifest.load(directory)
    return runner.run(directory, found, request, {"network": [sushy.port]}, settings)


@pytest.mark.netns
def test_the_provider_runs_end_to_end_in_the_sandbox(sushy):
    require_sandbox()
    lab = make_lab()
    try:
        directory = sandboxed_copy(lab, sushy.port)

        inventory = run_sandboxed(lab, directory, sushy, "inventory")
        assert inventory.status == "succeeded", inventory.to_dict()
        assert inventory.data["system"]["uuid"] == sushy.uuid
        assert inventory.protections["landlock_fs"] is True

        boot = run_sandboxed(lab, directory, sushy, "boot_pxe_once")
        assert boot.status == "succeeded", boot.to_dict()
        assert boot.data["clear_after_boot"] is True
        assert any(e.get("level") == "warning" for e in boot.events)

        power = run_sandboxed(lab, directory, sushy, "power_on")
        assert power.status == "succeeded", power.to_dict()
        assert power.data["power_state"] == "On"
        assert sushy.client().get(power.data["system_path"]).json()["PowerState"] == "On"

        assert power.connections and power.connections[0]["port"] == sushy.port
        assert PASSWORD not in json.dumps(power.to_dict())
    finally:
        shutil.rmtree(lab.root, ignore_errors=True)
