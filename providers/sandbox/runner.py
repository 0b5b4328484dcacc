"""The runner: start a provider in the sandbox, feed it its request, police it, report.

Blocking and standard-library only, so the BootOS agent calls it directly and the appliance
calls it from a worker thread. The sandbox itself is built by a fresh launcher process
(providers/sandbox/launcher.py); this side enforces what only a parent can: the wall-clock
deadline, the output-size limit, the protocol (garbage or a second result ends the run at
once), and the kill of the whole process tree. It never trusts the provider's exit status
on its own: a run succeeds only when the provider said so in exactly one result.
"""

import contextlib
import ipaddress
import json
import logging
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from providers import protocol
from providers.sandbox import _kernel, landlock, limits, relay

log = logging.getLogger(__name__)

DEFAULT_RUNTIME_ROOT = "/opt/cloudboot/runtime"
DEFAULT_REQUIRED = ("namespaces", "no_new_privs", "landlock_fs", "seccomp", "rlimits")
UID_BASE = 2_100_000_000  # far above any account a distribution hands out
STDERR_TAIL = 8192
# Longest line the launcher's report may hold (a "started" line is a few KiB).
REPORT_LINE_LIMIT = 1 << 20
INTERPRETERS = {
    "python3": ["/usr/bin/python3", "-I", "-B"],
    "sh": ["/bin/sh"],
}
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# A job names one BMC; a few more leave room for a provider that needs a second port.
MAX_JOB_DESTINATIONS = 4


@dataclass(frozen=True)
class SandboxSettings:
    """Operator settings: where work directories go, global ceilings, what is required."""

    runtime_root: str = DEFAULT_RUNTIME_ROOT
    ceiling: limits.Limits = field(default_factory=limits.Limits)
    required: tuple = DEFAULT_REQUIRED
    allow_missing: bool = False
    cgroup_root: str = limits.CGROUP_ROOT
    # Use at most this Landlock ABI, to see what a provider gets on an older kernel
    # (Debian 12's own kernel has ABI 2: no network rules, no signal scoping).
    landlock_abi_cap: int | None = None
    # How long a provider may keep running after its result before it is killed.
    result_grace_seconds: float = 5.0


@dataclass
class RunResult:
    """What happened, for the job record and the audit log."""

    status: str  # "succeeded" or "failed"
    reason: str  # "ok", "provider_failed", "protocol_violation", "timeout", ...
    message: str
    data: dict = field(default_factory=dict)
    events: list = field(default_factory=list)
    protections: dict = field(default_factory=dict)
    refusals: list = field(default_factory=list)
    connections: list = field(default_factory=list)  # relayed to granted destinations
    limits: dict = field(default_factory=dict)
    exit_code: int | None = None
    stderr: str = ""
    duration: float = 0.0

    def to_dict(self):
        return dict(self.__dict__)


def probe():
    """Which protections this kernel can give, without starting anything."""
    abi = landlock.abi_version()
    return {
        "landlock_abi": abi,
        "landlock_fs": abi >= 1,
        "landlock_net": abi >= 4,
        "seccomp": _kernel.seccomp_available(),
        "root": os.geteuid() == 0,
    }


def run(package_dir, manifest, request, grants=None, settings=None, on_event=None, cancel=None):
    """Run the provider unpacked at `package_dir` (its `manifest` already validated).

    `grants` is what the operator allows of the manifest's requests:
    {"network": [ports], "devices": [paths] or {path: ioctl_allowed}}, plus, for a manifest
    that takes its destinations from the job ({"from_job": true}), the job's own
    {"destinations": [{"host": IPv4, "port": int, "protocol": "tcp"|"udp"}]}. Destinations
    come only from here and the manifest; the provider's request never widens them.
    `on_event(event)` sees progress and log events as they arrive (in this thread).
    `cancel` is anything with `is_set()` (a threading.Event): once set, the provider's tree
    is killed and the run fails with reason "cancelled". Never raises for anything the
    provider does; returns a RunResult.
    """
    settings = settings or SandboxSettings()
    run_id = f"{manifest.name}-{secrets.token_hex(4)}"
    run_limits = manifest.limits.capped_by(settings.ceiling)
    destinations, refused = granted_destinations(manifest, grants or {})
    devices = _granted_devices(manifest, grants or {})
    required = list(settings.required)

    try:
        workdir = _make_workdir(settings.runtime_root, run_id)
    except OSError as exc:
        message = f"cannot make a work directory under {settings.runtime_root}: {exc.strerror}"
        log.error("provider %s: %s", run_id, message)
        return RunResult("failed", "sandbox_error", message)
    group = limits.create(run_id, run_limits, settings.cgroup_root)
    try:
        spec = _spec(package_dir, manifest, workdir, run_limits, destinations, required, settings)
        spec["cgroup_paths"] = group.paths
        spec["devices"] = devices
        spec["capabilities"] = _granted_capabilities(manifest, grants or {})
        spec["paths"] = _granted_paths(manifest, spec["capabilities"])
        spec["destinations"] = destinations
        supervisor = _Supervisor(spec, request, run_limits, group, on_event, cancel)
        supervisor.refusals.extend(refused)
        result = supervisor.run(settings.result_grace_seconds)
    finally:
        group.kill_all()
        group.remove()
        shutil.rmtree(workdir, ignore_errors=True)  # a mount point; the tmpfs died with the run
    result.limits = {**run_limits.__dict__, "mechanism": group.mechanism}
    log.info("provider %s: %s (%s) %s", run_id, result.status, result.reason, result.message)
    return result


def granted_destinations(manifest, grants):
    """The destinations this run may reach, and the grants refused (for the run's record).

    A manifest destination counts when the operator granted its port; the job's own
    destinations count only when the manifest says {"from_job": true}, and each must be
    a literal IPv4 unicast address, a port and tcp or udp.
    """
    allowed = set(grants.get("network") or [])
    named = [d for d in manifest.network if not d.get("from_job") and d["port"] in allowed]
    destinations = relay.resolve(named)
    refused = []
    from_job = grants.get("destinations") or []
    if from_job and not any(d.get("from_job") for d in manifest.network):
        note = "the manifest does not take its network destinations from the job"
        return destinations, [{"by": "runner", "grant": "destinations", "note": note}]
    for index, destination in enumerate(from_job):
        problem = _destination_problem(destination)
        if problem is None and index >= MAX_JOB_DESTINATIONS:
            problem = f"at most {MAX_JOB_DESTINATIONS} destinations per job"
        if problem:
            refused.append({"by": "runner", "grant": "destinations", "note": problem})
            continue
        destinations.extend(relay.resolve([destination]))
    return relay.resolve(destinations), refused


def _destination_problem(destination):
    if not isinstance(destination, dict):
        return f"a destination must be an object, got {destination!r:.60}"
    host, port = destination.get("host"), destination.get("port")
    try:
        if not isinstance(host, str):  # IPv4Address(2130706433) would be 127.0.0.1
            raise ValueError(host)
        address = ipaddress.IPv4Address(host)
    except ValueError:
        return f"host must be a literal IPv4 address, got {host!r:.60}"
    if address.is_multicast or address.is_reserved or address.packed[0] == 0:
        return f"host {host} is not a unicast address"
    if address.is_link_local:
        # 169.254.169.254 and its like: metadata services the relay would reach from the host.
        return f"host {host} is a link-local address"
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        return f"port must be 1-65535, got {port!r:.20}"
    if destination.get("protocol", "tcp") not in relay.PROTOCOLS:
        return f"protocol must be tcp or udp, got {destination.get('protocol')!r:.20}"
    return None


def _granted_devices(manifest, grants):
    """Devices the manifest asks for and the operator listed; ioctl only if both say so."""
    allowed = grants.get("devices") or {}
    if isinstance(allowed, list):
        allowed = dict.fromkeys(allowed, True)
    return [
        {"path": device["path"], "ioctl": device["ioctl"] and bool(allowed[device["path"]])}
        for device in manifest.devices
        if device["path"] in allowed
    ]


def _granted_capabilities(manifest, grants):
    """Capabilities the manifest asks for and the operator listed in grants["capabilities"].

    With any granted, the launcher keeps the run in the host's user namespace as uid 0 with
    only these capabilities (providers/sandbox/capabilities.py).
    """
    allowed = set(grants.get("capabilities") or [])
    return [name for name in manifest.linux_capabilities if name in allowed]


def _granted_paths(manifest, granted_capabilities):
    """Read rules always; write rules only with a capability (useless, and unasked, without)."""
    write = list(manifest.write_paths) if granted_capabilities else []
    return {"read": list(manifest.read_paths), "write": write}


def _make_workdir(root, run_id):
    # Absolute: the launcher changes into the work directory before Landlock's rules are
    # opened, so a relative path would name nothing and leave the work dir unwritable.
    root = os.path.abspath(root)
    os.makedirs(root, mode=0o711, exist_ok=True)
    path = os.path.join(root, run_id)
    os.mkdir(path, 0o700)
    return path


def _spec(package_dir, manifest, workdir, run_limits, destinations, required, settings):
    uid = UID_BASE + secrets.randbelow(1_000_000) if os.geteuid() == 0 else os.getuid()
    gid = uid if os.geteuid() == 0 else os.getgid()
    if os.geteuid() == 0:
        os.chown(workdir, uid, gid)
    package_dir = os.path.realpath(package_dir)
    entry = os.path.join(package_dir, manifest.entry)
    argv = [*INTERPRETERS[manifest.interpreter], entry] if manifest.interpreter else [entry]
    env = {
        "PATH": "/usr/bin:/bin:/usr/sbin:/sbin",
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "CLOUDBOOT_PROTOCOL": str(protocol.VERSION),
        "CLOUDBOOT_PACKAGE_DIR": package_dir,
        "CLOUDBOOT_WORK_DIR": workdir,
    }
    return {
        "argv": argv,
        "env": env,
        "workdir": workdir,
        "uid": uid,
        "gid": gid,
        "read_execute": [package_dir],
        "network": bool(destinations),
        # Landlock rules cover TCP only; UDP destinations are held to the namespace.
        "tcp_ports": sorted({d["port"] for d in destinations if d["protocol"] == "tcp"}),
        "limits": run_limits.__dict__,
        "required": required,
        "allow_missing": settings.allow_missing,
        "landlock_abi_cap": settings.landlock_abi_cap,
    }


class _Supervisor:
    """One run's parent-side loop over the provider's stdout, stderr and the report pipe."""

    def __init__(self, spec, request, run_limits, group, on_event, cancel):
        self.spec = spec
        self.cancel = cancel
        self.request = json.dumps(request).encode() + b"\n"
        self.limits = run_limits
        self.group = group
        self.on_event = on_event
        self.parser = protocol.OutputParser()
        self.failure = None  # (reason, message) decided by the parent
        self.protections, self.refusals, self.connections = {}, [], []
        self.setup_error = None
        self.grace_started = False
        self.lingered = False
        self.exit_code = None
        self.output_bytes = 0
        self.stderr = bytearray()
        self.report_buffer = b""

    def run(self, grace):
        self.grace = grace
        started = time.monotonic()
        self.process = self._start()
        self._loop(started + self.limits.run_seconds)
        result = self._result()
        result.duration = round(time.monotonic() - started, 3)
        return result

    def _start(self):
        spec_r, spec_w = os.pipe()
        report_r, report_w = os.pipe()
        code = (
            f"import sys; sys.path.insert(0, {REPO_ROOT!r}); "
            "from providers.sandbox import launcher; launcher.main()"
        )
        process = subprocess.Popen(
            [sys.executable, "-I", "-c", code, str(spec_r), str(report_w)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(spec_r, report_w),
            close_fds=True,
        )
        os.close(spec_r)
        os.close(report_w)
        with os.fdopen(spec_w, "wb") as handle:
            handle.write(json.dumps(self.spec).encode())
        self.report = os.fdopen(report_r, "rb", buffering=0)
        return process

    def _loop(self, deadline):
        selector = selectors.DefaultSelector()
        os.set_blocking(self.process.stdin.fileno(), False)
        selector.register(self.process.stdin, selectors.EVENT_WRITE, "stdin")
        selector.register(self.process.stdout, selectors.EVENT_READ, "stdout")
        selector.register(self.process.stderr, selectors.EVENT_READ, "stderr")
        selector.register(self.report, selectors.EVENT_READ, "report")
        while selector.get_map():
            if self.parser.result and not self.grace_started:
                # A provider that keeps running after its result gets a short grace period,
                # then is killed; its result stands, with a note.
                deadline = min(deadline, time.monotonic() + self.grace)
                self.grace_started = True
            remaining = deadline - time.monotonic()
            if remaining <= 0 and self.grace_started:
                self.lingered = True
                self.group.kill_all()
                self.process.terminate()
                break
            if remaining <= 0:
                self._kill("timeout", f"no result within {self.limits.run_seconds:g} s")
                break
            if self.cancel is not None and self.cancel.is_set():
                self._kill("cancelled", "the job was cancelled while the provider ran")
                break
            for key, _mask in selector.select(min(remaining, 0.25)):
                self._handle(selector, key)
            if self.failure:
                break
        selector.close()
        self._finish()

    def _handle(self, selector, key):
        if key.data == "stdin":
            self._write_request(selector, key.fileobj)
            return
        chunk = os.read(key.fileobj.fileno(), 65536)
        if not chunk:
            selector.unregister(key.fileobj)
            return
        if key.data == "report":
            self._on_report(chunk)
            return
        self.output_bytes += len(chunk)
        if self.output_bytes > self.limits.output_bytes:
            self._kill("output_limit", f"more than {self.limits.output_bytes} bytes of output")
        elif key.data == "stderr":
            self.stderr = (self.stderr + chunk)[-STDERR_TAIL:]
        else:
            self._on_output(chunk)

    def _write_request(self, selector, stdin):
        try:
            written = os.write(stdin.fileno(), self.request)
        except (BrokenPipeError, BlockingIOError):
            written = len(self.request)  # a provider may ignore its request
        self.request = self.request[written:]
        if not self.request:
            selector.unregister(stdin)
            stdin.close()

    def _on_output(self, chunk):
        try:
            events = self.parser.feed(chunk)
        except protocol.ProtocolError as exc:
            self._kill("protocol_violation", str(exc))
            return
        for event in events:
            if self.on_event and event["type"] != "result":
                self.on_event(event)

    def _on_report(self, chunk):
        self.report_buffer += chunk
        *lines, self.report_buffer = self.report_buffer.split(b"\n")
        if len(self.report_buffer) > REPORT_LINE_LIMIT:
            # The launcher writes short lines; anything this long is not one of them and
            # must not grow in this process's memory.
            self.report_buffer = b""
        for line in lines:
            try:
                fact = json.loads(line)
            except ValueError:
                continue  # blank, or cut short by a killed launcher
            if not isinstance(fact, dict):
                continue
            if fact.get("event") == "started":
                self.protections = fact["protections"]
            elif fact.get("event") == "connection":
                self.connections.append({k: v for k, v in fact.items() if k != "event"})
            elif fact.get("event") == "refusal":
                self.refusals.append({k: v for k, v in fact.items() if k != "event"})
            elif fact.get("event") == "setup_failed":
                self.setup_error = fact["message"]
                if fact.get("trace"):
                    log.debug("sandbox launcher failed:\n%s", fact["trace"])
            elif fact.get("event") == "exit":
                self.exit_code = fact["code"]

    def _kill(self, reason, message):
        if self.failure is None:
            self.failure = (reason, message)
        # The launcher kills the sandbox's init (which takes its whole PID namespace with
        # it) and reaps it; the runner never signals a pid it does not own, since a reaped
        # pid may already belong to someone else. The cgroup sweep catches the rest.
        self.group.kill_all()
        with contextlib.suppress(ProcessLookupError):
            self.process.terminate()

    def _finish(self):
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            # Killing the launcher kills the sandbox too (its init has PDEATHSIG).
            self.failure = self.failure or ("sandbox_error", "the launcher did not exit")
            self.process.kill()
            self.process.wait()
        with contextlib.suppress(OSError):
            rest = self.report.read()
            if rest:
                self._on_report(rest + b"\n")
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.close()
        self.report.close()

    def _result(self):
        common = {
            "protections": self.protections,
            "refusals": self.refusals,
            "connections": self.connections,
            "exit_code": self.exit_code,
            "stderr": self.stderr.decode("utf-8", "replace"),
            "events": self.parser.events,
        }
        if self.setup_error:
            return RunResult("failed", "sandbox_setup_failed", self.setup_error, **common)
        reason, message = self.failure or self._limit_reason() or (None, None)
        if reason:
            return RunResult("failed", reason, message, **common)
        try:
            result = self.parser.finish()
        except protocol.ProtocolError as exc:
            return RunResult("failed", "protocol_violation", self._explain(exc), **common)
        status = result["status"]
        reason = "ok" if status == "succeeded" else "provider_failed"
        message = result["message"]
        if self.lingered:
            message += f" (killed {self.grace:g} s after its result: it did not exit)"
        return RunResult(status, reason, message, result["data"], **common)

    def _limit_reason(self):
        if self.group.memory_events():
            return "memory_limit", f"the provider exceeded its {self.limits.memory_mb} MiB"
        if self.exit_code == -signal.SIGXCPU:
            return "cpu_limit", f"the provider used its {self.limits.cpu_seconds} s of CPU"
        return None

    def _explain(self, exc):
        if self.exit_code is not None and self.exit_code < 0:
            name = signal.Signals(-self.exit_code).name
            return f"{exc} (the provider was killed by {name})"
        if self.exit_code:
            return f"{exc} (the provider exited with status {self.exit_code})"
        return str(exc)
