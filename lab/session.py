"""One running lab: its network, the bank's DHCP server, the appliance and the VMs.

Both `build.py lab` (lab/run.py) and the VM tests (tests/vmlab.py) drive a
LabSession. It records every process it starts so stop() can end exactly
those, and it watches the logs and the API to report each VM's progress
through the boot: DHCP offer, proxyDHCP answer, iPXE script, registration.
It must never start anything outside the namespaces it created.
"""

import logging
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from lab import appliance, dnsmasq, expect, netns, vm

logger = logging.getLogger(__name__)

# Milestones in boot order; each is reported once per VM.
STEPS = ("dhcp offer", "proxydhcp answer", "ipxe script fetched", "registered")


class LabError(Exception):
    """A lab step failed or ran out of time; the message says which and why."""


@dataclass
class VmProgress:
    spec: object
    started: float
    reached: dict = field(default_factory=dict)
    machine: dict = None
    inventory: dict = None
    problems: list = field(default_factory=list)

    def seconds(self, step):
        return self.reached.get(step)


class LabSession:
    def __init__(self, repo, workdir, network, report=None):
        self.repo = Path(repo)
        self.workdir = Path(workdir)
        self.network = network
        self.data_dir = self.workdir / "data"
        self.config_path = self.workdir / "cloudboot.toml"
        self.appliance_log = self.workdir / "appliance.log"
        self.processes = {}
        self.token = None
        self.progress = {}
        self.report = report or (lambda line: logger.info("%s", line))
        self._log_text = {}

    # Starting the parts, bottom up.

    def start_network(self):
        self.workdir.mkdir(parents=True, exist_ok=True)
        netns.teardown(self.network)
        netns.build(self.network)
        self.processes["dnsmasq"] = dnsmasq.start(self.network, self.workdir)

    def start_appliance(self, specs, bootos_dir, extra_config=""):
        missing = appliance.install_boot_files(self.data_dir, bootos_dir)
        if missing:
            self.report(f"BootOS missing ({', '.join(missing)}): VMs cannot register")
        http_boot = [s.mac for s in specs if s.firmware == "uefi-http"]
        appliance.write_config(self.config_path, self.network, http_boot, extra_config)
        process = appliance.start(
            self.repo, self.network, self.data_dir, self.config_path, self.appliance_log
        )
        self.processes["appliance"] = process
        try:
            appliance.wait_ready(self.network, process, self.appliance_log)
        except appliance.ApplianceError as e:
            raise LabError(str(e)) from None
        self.token = appliance.issue_token(self.repo, self.data_dir, self.config_path)
        self.report(f"appliance ready at https://{self.network.appliance_address}")

    def start_vms(self, specs):
        for index, spec in enumerate(specs):
            process = vm.start(spec, self.network, index, self.workdir)
            self.processes[f"vm-{spec.name}"] = process
            self.progress[spec.mac] = VmProgress(spec, time.monotonic())
            self.report(f"vm {spec.name}: powered on ({spec.firmware}, {spec.mac})")

    # Watching.

    def wait_for(self, step, timeout):
        """Poll until every VM reached step; raise LabError naming the VMs that did not."""
        deadline = time.monotonic() + timeout
        next_api_poll = 0.0
        while True:
            self._scan_logs()
            if step == "registered" and time.monotonic() >= next_api_poll:
                self._poll_registrations()
                next_api_poll = time.monotonic() + 3
            self._check_vms_alive()

            waiting = [p for p in self.progress.values() if not self._done(p, step)]
            if not waiting:
                return list(self.progress.values())
            if time.monotonic() > deadline:
                raise LabError(self._timeout_message(step, waiting, timeout))
            time.sleep(1)

    def _done(self, progress, step):
        # A registration counts once its inventory can be compared as well.
        if step == "registered":
            return progress.inventory is not None
        return step in progress.reached

    def _scan_logs(self):
        offers = dnsmasq.leases_in_log(self._read(self.workdir / "dnsmasq.log"))
        appliance_lines = self._read(self.appliance_log).lower().splitlines()
        for mac, progress in self.progress.items():
            if "offer" in offers.get(mac, {}):
                self._reach(progress, "dhcp offer", f"address {offers[mac]['offer']}")
            dashed = mac.replace(":", "-")
            for line in appliance_lines:
                if mac not in line and dashed not in line:
                    continue
                if "sent proxy" in line:
                    self._reach(progress, "proxydhcp answer", _boot_file(line))
                if "ipxe script fetched" in line:
                    self._reach(progress, "ipxe script fetched")

    def _poll_registrations(self):
        try:
            listing = appliance.api_get(self.network, "/api/v1/machines", self.token)
        except appliance.ApplianceError as e:
            logger.debug("machine list not available yet: %s", e)
            return
        for mac, progress in self.progress.items():
            if progress.inventory is not None:
                continue
            machine = expect.find_machine(listing, mac)
            if machine is None:
                continue
            progress.machine = machine
            self._reach(progress, "registered")
            progress.inventory = self._inventory(machine)
            if progress.inventory is not None:
                progress.problems = expect.mismatches(progress.spec, progress.inventory)

    def _inventory(self, machine):
        """The latest inventory document the appliance stored for machine (None if none yet)."""
        path = f"/api/v1/machines/{machine['id']}/inventory"
        try:
            snapshot = appliance.api_get(self.network, path, self.token)
        except appliance.ApplianceError as e:
            logger.warning("inventory of %s unavailable: %s", machine["id"], e)
            return None
        return expect.inventory_document(snapshot)

    def _reach(self, progress, step, detail=""):
        if step in progress.reached:
            return
        seconds = round(time.monotonic() - progress.started)
        progress.reached[step] = seconds
        suffix = f" ({detail})" if detail else ""
        self.report(f"vm {progress.spec.name}: {step} after {seconds} s{suffix}")

    def _check_vms_alive(self):
        for progress in self.progress.values():
            process = self.processes.get(f"vm-{progress.spec.name}")
            if process is not None and process.poll() is not None:
                out = self.workdir / f"qemu-{progress.spec.name}.out"
                raise LabError(
                    f"vm {progress.spec.name}: QEMU exited with status {process.returncode}:\n"
                    f"{appliance.tail(out)}"
                )
        appliance_process = self.processes.get("appliance")
        if appliance_process is not None and appliance_process.poll() is not None:
            raise LabError(
                f"the appliance exited with status {appliance_process.returncode}:\n"
                f"{appliance.tail(self.appliance_log)}"
            )

    def _timeout_message(self, step, waiting, timeout):
        lines = [f"{len(waiting)} VM(s) did not reach '{step}' within {timeout} s:"]
        for progress in waiting:
            got = ", ".join(progress.reached) or "nothing"
            serial = self.workdir / f"vm-{progress.spec.name}.log"
            lines.append(f"  {progress.spec.name} ({progress.spec.firmware}) reached: {got}")
            lines.append(f"    serial console {serial}, last lines:")
            console = appliance.tail(serial, 6).replace("\x1b", "")
            lines += [f"      {line}" for line in console.splitlines()]
            screen = vm.screendump(progress.spec, self.workdir)
            if screen is not None:
                lines.append(f"    screen (VGA console, where BootOS prints): {screen}")
        lines.append(f"appliance log {self.appliance_log}")
        return "\n".join(lines)

    def _read(self, path):
        try:
            return Path(path).read_text(errors="replace")
        except OSError:
            return ""

    # Stopping.

    def pids(self):
        return {name: process.pid for name, process in self.processes.items()}

    def stop(self):
        """End every process this session started and delete its namespaces."""
        for name, process in reversed(list(self.processes.items())):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    logger.warning("%s (pid %d) ignored SIGTERM; killing it", name, process.pid)
                    process.kill()
                    process.wait(timeout=10)
        self.processes.clear()
        netns.teardown(self.network)


def _boot_file(line):
    match = re.search(r"boot file (\S+)", line)
    return f"boot file {match.group(1)}" if match else ""
