"""The agent's main loop: network up, register, then run jobs until told to stop.

The order follows docs/architecture.md ("Agent protocol"): find the NIC the
firmware booted from (cloudboot.mac), bring it up and get an address with
busybox udhcpc, register with the appliance over pinned HTTPS, then long-poll
for jobs and report each result. Whenever the appliance cannot be reached the
agent waits with exponential backoff and jitter, and says on the console, in
one line, what it is waiting for; a technician at the server reads that line.

Clock, sleep, command runner and console are parameters, so tests drive the
loop with fake time and recorded commands while the HTTP path stays real.
This module must never import appliance server code, and never raises out of
run(): every failure is a console line and a retry, or an exit status.
"""

import logging
import random
import subprocess
import sys
import time
from pathlib import Path

from appliance.proto import agent as protocol
from bootos.agent.client import (
    AgentClientError,
    ProtocolMismatch,
    Rejected,
    Unauthorized,
    Unreachable,
)

log = logging.getLogger(__name__)

EXIT_STOPPED = 0
EXIT_PROTOCOL = 3
UDHCPC_SCRIPT = "/usr/share/cloudboot/udhcpc.script"
MAX_WAIT_JOB_SECONDS = 24 * 3600

# The appliance fails a running job whose agent stays silent for its lease
# (jobs.lease_seconds: 120 s by default, 60 s at least); a heartbeat every 30 s
# leaves room for one missed even at the shortest lease.
HEARTBEAT_SECONDS = 30


class JobStopped(Exception):
    """The appliance cancelled or ended the job this agent is running."""


def run_command(argv, timeout=None):
    """Run a program; returns (exit status, combined output). 127 when it is missing."""
    try:
        done = subprocess.run(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout, check=False
        )
    except FileNotFoundError:
        return 127, f"{argv[0]}: not found"
    except subprocess.TimeoutExpired:
        return 124, f"{argv[0]}: no answer within {timeout} s"
    return done.returncode, done.stdout.decode("utf-8", "replace")


# The kernel command line names the screen first and the serial port last, so
# /dev/console (our stdout) is the serial port a BMC's serial-over-LAN shows.
# The same line also goes to the screen a technician at the crash cart sees.
SCREEN = Path("/dev/tty0")


def console_line(text):
    line = f"cloudboot-agent: {text}"
    print(line, file=sys.stdout, flush=True)
    try:
        with SCREEN.open("w") as screen:
            screen.write(line + "\n")
    except OSError:
        pass


class Backoff:
    """Exponential delays with jitter: base, 2*base, 4*base ... up to cap.

    Jitter keeps a rack of servers that lost the appliance together from
    coming back in lock step: each delay is drawn from [d/2, d].
    """

    def __init__(self, rng, base=1.0, cap=30.0):
        self.rng = rng
        self.base = base
        self.cap = cap
        self.attempt = 0

    def next_delay(self):
        delay = min(self.cap, self.base * 2**self.attempt)
        self.attempt += 1
        return delay / 2 + self.rng() * delay / 2

    def reset(self):
        self.attempt = 0


class Runtime:
    """One agent session on one machine."""

    def __init__(
        self,
        params,
        client,
        *,
        inventory,
        run=run_command,
        sleep=time.sleep,
        clock=time.monotonic,
        console=console_line,
        rng=random.random,
        net_dir="/sys/class/net",
        poll_wait=25,
        raid=None,
    ):
        self.params = params
        self.client = client
        self.inventory = inventory
        self.run_command = run
        self.sleep = sleep
        self.clock = clock
        self.console = console
        self.backoff = Backoff(rng)
        self.net_dir = Path(net_dir)
        self.poll_wait = poll_wait
        self.raid = raid

    def run(self):
        """Bring up the network, register, serve jobs. Returns an exit status."""
        if self.params.get("proto", protocol.CURRENT_VERSION) != protocol.CURRENT_VERSION:
            self.console(
                f"the boot parameters ask for agent protocol {self.params['proto']}, "
                f"this agent speaks {protocol.CURRENT_VERSION}; not starting"
            )
            return EXIT_PROTOCOL

        interface = self.wait_for_interface(self.params["mac"])
        self.configure_address(interface)
        if not self.register():
            return EXIT_PROTOCOL
        return self.serve_jobs()

    # Network -----------------------------------------------------------------

    def wait_for_interface(self, mac):
        """Name of the interface whose MAC is the boot MAC, once its driver has loaded."""
        self.backoff.reset()
        while True:
            interface = self.find_interface(mac)
            if interface:
                self.console(f"boot interface {interface} has MAC {mac}")
                return interface
            self._pause(f"no network interface with MAC {mac} yet (driver not loaded?)")

    def find_interface(self, mac):
        for entry in sorted(self.net_dir.iterdir()) if self.net_dir.is_dir() else []:
            try:
                address = (entry / "address").read_text().strip().lower()
            except OSError:
                continue
            if address == mac:
                return entry.name
        return None

    def configure_address(self, interface):
        """ip link up, then DHCP until a lease arrives (the udhcpc script sets it)."""
        self.backoff.reset()
        while True:
            status, output = self.run_command(["ip", "link", "set", interface, "up"])
            if status == 0:
                argv = ["udhcpc", "-i", interface, "-q", "-f", "-n", "-t", "5"]
                status, output = self.run_command(argv + ["-s", UDHCPC_SCRIPT], timeout=120)
            if status == 0:
                self.console(f"{interface} configured by DHCP")
                return
            reason = _last_line(output) or f"exit status {status}"
            self._pause(f"no DHCP lease on {interface}: {reason}")

    # Registration ----------------------------------------------------------------

    def register(self):
        """Register until it works; False when the appliance speaks another protocol."""
        url = self.params["url"]
        self.backoff.reset()
        while True:
            document = self._inventory_for_registration()
            if document is None:
                continue
            try:
                answer = self.client.register(
                    self.params["mac"], self.params.get("guid"), document
                )
            except ProtocolMismatch as e:
                self.console(f"appliance {url} refused agent protocol: {e}")
                self.console("not retrying registration; this BootOS is older or newer than it")
                return False
            except Rejected as e:
                self._pause(f"appliance {url} refused registration: {e}")
                continue
            except AgentClientError as e:
                self._pause(f"appliance {url} unreachable: {e}")
                continue

            approval = "approved" if answer.get("approved") else "waiting for approval"
            self.console(
                f"registered with {url} as machine {answer.get('machine_id')} "
                f"(state {answer.get('state')}, {approval})"
            )
            return True

    def _inventory_for_registration(self):
        try:
            return self.inventory()
        except Exception as e:
            # The inventory promises not to raise; if it does, the console says so.
            log.exception("inventory failed")
            self._pause(f"cannot collect the inventory: {type(e).__name__}: {e}")
            return None

    # Jobs ------------------------------------------------------------------------

    def serve_jobs(self):
        """Long-poll for jobs and run them; returns after reboot/poweroff or a 426."""
        url = self.params["url"]
        self.backoff.reset()
        while True:
            try:
                job = self.client.next_job(self.poll_wait)
            except ProtocolMismatch as e:
                self.console(f"appliance {url} refused agent protocol: {e}; stopping")
                return EXIT_PROTOCOL
            except Unauthorized as e:
                self.console(f"appliance {url} no longer accepts this agent's token ({e})")
                if not self.register():
                    return EXIT_PROTOCOL
                continue
            except AgentClientError as e:
                self._pause(f"appliance {url} unreachable: {e}")
                continue

            self.backoff.reset()
            if job is not None:
                finish = self.run_job(job)
                if finish is not None:
                    return finish

    def run_job(self, job):
        """Run one job and report it. Returns an exit status when the agent must stop."""
        self.console(f"job {job['id']}: {job['kind']}")
        handlers = {
            "inventory": self._job_inventory,
            "reboot": self._job_reboot,
            "poweroff": self._job_poweroff,
            "wait": self._job_wait,
            "raid": self._job_raid,
        }
        handler = handlers.get(job["kind"])
        if handler is None:
            known = ", ".join(handlers)
            self.report(job, "failed", f"this agent does not run {job['kind']!r} jobs ({known})")
            return None

        try:
            self.job_event(job, f"{job['kind']} started", progress=0)
            status, message, data, then = handler(job)
        except JobStopped as e:
            # Cancelled or ended on the appliance: stop, and post no result for it.
            self.console(f"job {job['id']} stopped by the appliance: {e}")
            return None
        except Exception as e:
            # A job must never take the agent down; the appliance gets the reason.
            log.exception("job %s (%s) failed", job["id"], job["kind"])
            self.report(job, "failed", f"{type(e).__name__}: {e}")
            return None

        self.report(job, status, message, data)
        if then is None:
            return None
        status, output = self.run_command(then)
        self.console(f"{' '.join(then)} did not take effect: {_last_line(output) or status}")
        return EXIT_STOPPED

    def job_event(self, job, line, progress=None):
        """Post a progress line; it also renews the job's lease on the appliance.

        409 means the job was cancelled or has ended there: raise JobStopped so
        the running step stops. A missed event while the appliance is
        unreachable is not fatal: the lease outlasts several heartbeats.
        """
        self.job_event_lines(job, [line], progress)

    def report(self, job, status, message, data=None):
        """Post a job result, retrying while the appliance is unreachable."""
        self.backoff.reset()
        while True:
            try:
                self.client.post_result(job["id"], status, message, data)
            except Unreachable as e:
                self._pause(f"cannot report job {job['id']}: {e}")
                continue
            except AgentClientError as e:
                self.console(f"appliance refused the result of job {job['id']}: {e}")
                return
            self.console(f"job {job['id']} {status}: {message}")
            return

    def _job_inventory(self, job):
        return "succeeded", "inventory collected", {"inventory": self.inventory()}, None

    def _job_reboot(self, job):
        return "succeeded", "rebooting", {}, ["reboot", "-f"]

    def _job_poweroff(self, job):
        return "succeeded", "powering off", {}, ["poweroff", "-f"]

    def _job_wait(self, job):
        seconds = job["params"].get("seconds")
        limit = job.get("timeout_seconds") or MAX_WAIT_JOB_SECONDS
        # A missing duration is a mistake in the request, not a wait of nothing.
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            return "failed", f"wait needs params.seconds >= 0, got {seconds!r}", {}, None
        if seconds > limit:
            return "failed", f"wait of {seconds} s is longer than its {limit} s timeout", {}, None

        started = self.clock()
        remaining = seconds
        while remaining > 0:
            # Sleep in heartbeat-sized steps: each step renews the lease and
            # learns of a cancellation within HEARTBEAT_SECONDS.
            step = min(remaining, HEARTBEAT_SECONDS)
            self.sleep(step)
            remaining -= step
            if remaining > 0:
                done = round(100 * (seconds - remaining) / seconds)
                self.job_event(job, f"waited {seconds - remaining:.0f} of {seconds} s", done)
        waited = self.clock() - started
        return "succeeded", f"waited {waited:.0f} s", {"waited_seconds": round(waited, 3)}, None

    def _job_raid(self, job):
        """A RAID provider in the sandbox (bootos/agent/raid.py); its events keep the lease."""
        from bootos.agent import raid

        runner = self.raid or raid.RaidRunner(fetch=self.client.provider_package)

        def post(lines, progress):
            self.job_event_lines(job, lines, progress)

        try:
            status, message, data = runner.run(job, post, HEARTBEAT_SECONDS)
        except raid.RaidJobError as e:
            return "failed", str(e), {}, None
        return status, message, data, None

    def job_event_lines(self, job, lines, progress=None):
        """Like job_event, for several lines (or none: a heartbeat)."""
        try:
            self.client.post_events(job["id"], lines, progress)
        except Rejected as e:
            if e.status == 409:
                raise JobStopped(str(e)) from None
            log.warning("job %s: event refused: %s", job["id"], e)
        except Unreachable as e:
            log.warning("job %s: event not delivered: %s", job["id"], e)

    def _pause(self, reason):
        delay = self.backoff.next_delay()
        self.console(f"{reason}; retry in {delay:.0f} s")
        self.sleep(delay)


def _last_line(output):
    lines = [line.strip() for line in (output or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""
