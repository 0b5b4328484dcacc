"""`raid` jobs: run a built-in RAID provider (mdadm, megaraid) in the sandbox, in BootOS.

Job params (docs/api.md, "raid jobs"):

    {"provider": "mdadm",
     "request": {"action": "create", "params": {"level": 1, "devices": [...], "name": "os"}},
     "allow": {"capabilities": ["CAP_SYS_ADMIN"], "devices": ["/dev/vda", "/dev/vdb"]}}

A capability reaches the provider only when three say yes: its manifest asks for it, the
job's `allow.capabilities` lists it (the operator's grant) and this agent's POLICY permits
it for that provider. A capability the manifest asks for and the job does not grant fails
the job before anything runs ("capability not granted"), because the provider could not
do its work without it. The provider runs in a worker thread through
providers.sandbox.runner; this thread posts its progress as job events, a heartbeat at
least every HEARTBEAT_SECONDS (the job's lease), and sets the run's cancel flag when the
appliance answers that the job was cancelled.

A provider this BootOS does not ship is a vendor package imported on the appliance
(issues 5 and 6): the agent downloads it for this job (GET .../jobs/{id}/provider, where
the appliance checks signature, trust and licence again just before answering), refuses
it unless the bytes hash to the SHA-256 the appliance sent and decode as a package of
kind raid with that name, unpacks it into a fresh directory under the runtime root and
removes that directory after the run. Such a package gets at most IMPORTED_POLICY. This
module must never run a provider outside the sandbox, and never grant what the job did
not ask for.
"""

import hashlib
import hmac
import logging
import os
import queue
import re
import secrets
import shutil
import subprocess
import threading
import time
from contextlib import contextmanager

from bootos.agent.client import AgentClientError
from providers import manifest as manifests
from providers import package as packages
from providers import protocol
from providers.sandbox import runner

log = logging.getLogger(__name__)

# Where bootos/build puts the built-in providers in the initramfs.
PROVIDERS_DIR = "/usr/share/cloudboot/providers"
# /run is a tmpfs in BootOS: work directories vanish with the machine's next boot.
RUNTIME_ROOT = "/run/cloudboot/providers"
# The agent's own ceiling: a capability no job can hand to a provider not named here.
POLICY = {
    "mdadm": frozenset({"CAP_SYS_ADMIN"}),
    "megaraid": frozenset({"CAP_SYS_ADMIN", "CAP_SYS_RAWIO"}),
}
# The ceiling for any imported (vendor) RAID package, whatever its name: what a RAID tool
# needs to drive a controller or md (ioctls behind CAP_SYS_ADMIN, raw SCSI passthrough
# behind CAP_SYS_RAWIO), never more. The job's allow and the manifest must ask as well.
IMPORTED_POLICY = frozenset({"CAP_SYS_ADMIN", "CAP_SYS_RAWIO"})
# Kernel modules a provider's tool needs, loaded by the agent before the run: the sandbox
# refuses module loading, and /init loads only drivers for devices that announce a
# modalias, which md's personalities do not.
KERNEL_MODULES = {"mdadm": ("md_mod", "raid1", "raid10")}
PARAM_KEYS = {"provider", "request", "allow"}
ALLOW_KEYS = {"capabilities", "devices"}
PROVIDER_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
MAX_LINES_PER_EVENT = 50


class RaidJobError(ValueError):
    """Job params this agent cannot run; the message is the job's failure."""


def check_params(params):
    """(provider name, request, allow) from the job params; RaidJobError when wrong."""
    if not isinstance(params, dict):
        raise RaidJobError(f"raid job params must be an object, got {params!r:.80}")
    unknown = sorted(set(params) - PARAM_KEYS)
    if unknown:
        raise RaidJobError(f"raid job params: unknown key(s) {', '.join(unknown)}")
    name = params.get("provider")
    if not isinstance(name, str) or not PROVIDER_NAME.match(name):
        raise RaidJobError(f"raid job params.provider must name a provider, got {name!r:.80}")
    request = params.get("request")
    if not isinstance(request, dict) or not isinstance(request.get("action"), str):
        raise RaidJobError(
            f"raid job params.request must be {{'action': ..., 'params': {{...}}}}, "
            f"got {request!r:.120}"
        )
    if not isinstance(request.get("params", {}), dict):
        raise RaidJobError(f"raid job params.request.params must be an object: {request!r:.120}")
    return name, request, _allow(params.get("allow", {}))


def _allow(allow):
    if not isinstance(allow, dict) or set(allow) - ALLOW_KEYS:
        raise RaidJobError(
            f"raid job params.allow must be {{'capabilities': [...], 'devices': [...]}}, "
            f"got {allow!r:.120}"
        )
    for key in ALLOW_KEYS:
        items = allow.get(key, [])
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise RaidJobError(
                f"raid job params.allow.{key} must be a list of text: {items!r:.80}"
            )
    return {key: list(allow.get(key, [])) for key in ALLOW_KEYS}


def grants_for(found, allow, policy=POLICY):
    """The runner's grants for this job; RaidJobError naming a capability not granted."""
    permitted = policy.get(found.name, frozenset())
    missing = [
        name
        for name in found.linux_capabilities
        if name not in allow["capabilities"] or name not in permitted
    ]
    if missing:
        where = [] if all(n in allow["capabilities"] for n in missing) else ["allow.capabilities"]
        if not all(n in permitted for n in missing):
            where.append(f"this agent's policy for {found.name}")
        raise RaidJobError(
            f"capability not granted: {', '.join(missing)} (provider {found.name} needs it; "
            f"missing from {' and '.join(where)})"
        )
    return {"capabilities": list(found.linux_capabilities), "devices": allow["devices"]}


class RaidRunner:
    """Runs one raid job's provider; the Runtime hands it the job and its event poster."""

    def __init__(
        self, providers_dir=PROVIDERS_DIR, settings=None, policy=POLICY, modprobe=None, fetch=None
    ):
        self.providers_dir = providers_dir
        self.settings = settings or runner.SandboxSettings(runtime_root=RUNTIME_ROOT)
        self.policy = policy
        self.modprobe = modprobe or _modprobe
        # fetch(job_id) -> (package bytes, sha256 hex): AgentClient.provider_package.
        self.fetch = fetch

    def shipped(self, name):
        return os.path.isdir(os.path.join(self.providers_dir, name))

    def load(self, name):
        directory = os.path.join(self.providers_dir, name)
        if not os.path.isdir(directory):
            shipped = (
                sorted(os.listdir(self.providers_dir)) if os.path.isdir(self.providers_dir) else []
            )
            raise RaidJobError(f"no provider {name!r} in this BootOS (it has {shipped or 'none'})")
        try:
            found = manifests.load(directory)
        except manifests.ManifestError as exc:
            raise RaidJobError(f"provider {name}: {exc}") from None
        if found.kind != "raid":
            raise RaidJobError(f"provider {name} is a {found.kind} provider, not raid")
        return directory, found

    def run(self, job, post_event, heartbeat_seconds):
        """(status, message, data) for the job. post_event(lines, progress) may raise
        the Runtime's JobStopped, which cancels the run and is raised again here."""
        name, request, allow = check_params(job.get("params"))
        with self._provider(name, job["id"]) as (directory, found, policy):
            grants = grants_for(found, allow, policy)
            self._load_modules(found.name)
            provider_request = protocol.make_request(
                request["action"], request.get("params", {}), job_id=job["id"]
            )
            post_event([f"provider {found.name} {found.version}: {request['action']}"], None)
            result = self._run_in_thread(directory, found, provider_request, grants, post_event,
                                         heartbeat_seconds)  # fmt: skip
        return result.status, result.message, _data(result, grants)

    @contextmanager
    def _provider(self, name, job_id):
        """(directory, manifest, policy): the shipped provider, else the downloaded one."""
        if self.shipped(name) or self.fetch is None:
            directory, found = self.load(name)
            yield directory, found, self.policy
            return
        package = self._download(name, job_id)
        root = os.path.abspath(self.settings.runtime_root)
        os.makedirs(root, mode=0o711, exist_ok=True)
        # Fresh per run and readable by the sandbox's own uid; removed whatever happens.
        directory = os.path.join(root, f"pkg-{name}-{secrets.token_hex(4)}")
        try:
            packages.unpack(package, directory)
            found = manifests.load(directory)
        except (OSError, ValueError) as exc:
            shutil.rmtree(directory, ignore_errors=True)
            raise RaidJobError(f"provider {name}: cannot unpack the package: {exc}") from None
        try:
            yield directory, found, {found.name: IMPORTED_POLICY}
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    def _download(self, name, job_id):
        """The imported package for this job, refused unless it is what the appliance sent."""
        try:
            blob, declared = self.fetch(job_id)
        except AgentClientError as exc:
            raise RaidJobError(f"provider {name}: not shipped in this BootOS, and {exc}") from None
        actual = hashlib.sha256(blob).hexdigest()
        # As bytes: compare_digest refuses str with non-ASCII, which a header may carry.
        said = str(declared).strip().lower().encode("utf-8", "replace")
        if not hmac.compare_digest(actual.encode(), said):
            raise RaidJobError(
                f"provider {name}: the package download hashes to sha256 {actual}, "
                f"the appliance sent {str(declared)[:80]!r}; refusing to run it"
            )
        try:
            package = packages.decode(blob)
        except packages.PackageError as exc:
            raise RaidJobError(f"provider {name}: the download is not a package: {exc}") from None
        found = package.manifest
        if found.name != name or found.kind != "raid":
            raise RaidJobError(
                f"provider {name}: the appliance sent {found.kind} provider {found.name}"
            )
        log.info("provider %s %s downloaded (sha256 %s)", name, found.version, actual)
        return package

    def _load_modules(self, name):
        modules = KERNEL_MODULES.get(name, ())
        if modules:
            status, output = self.modprobe(modules)
            if status != 0:
                raise RaidJobError(f"modprobe {' '.join(modules)} failed: {output.strip()[-300:]}")

    def _run_in_thread(self, directory, found, request, grants, post_event, heartbeat_seconds):
        events, cancel, done = queue.Queue(), threading.Event(), []

        def work():
            try:
                done.append(
                    runner.run(
                        directory, found, request, grants, self.settings, events.put, cancel
                    )
                )
            except Exception as exc:  # the sandbox itself broke: the job says how
                log.exception("provider %s: the sandbox failed", found.name)
                done.append(RaidJobError(f"sandbox error: {type(exc).__name__}: {exc}"))
            finally:
                events.put(None)  # wakes the loop below at once

        thread = threading.Thread(target=work, name=f"provider-{found.name}", daemon=True)
        thread.start()
        try:
            _forward(events, post_event, heartbeat_seconds)
        except BaseException:
            cancel.set()  # the appliance said stop: kill the provider's whole tree
            thread.join()
            raise
        thread.join()
        if isinstance(done[0], RaidJobError):
            raise done[0]
        return done[0]


def _modprobe(modules):
    """Load kernel modules as the agent (root, outside the sandbox); (status, output)."""
    try:
        done = subprocess.run(
            ["modprobe", "-a", *modules], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 1, str(exc)
    return done.returncode, done.stderr


def _forward(events, post_event, heartbeat_seconds):
    """Post provider events as they come, and a heartbeat when the provider is quiet."""
    last_post = time.monotonic()
    while True:
        wait = max(0.0, heartbeat_seconds - (time.monotonic() - last_post))
        try:
            event = events.get(timeout=wait)
        except queue.Empty:
            post_event([], None)
            last_post = time.monotonic()
            continue
        if event is None:
            return
        lines, progress = [_line(event)], event.get("percent")
        while len(lines) < MAX_LINES_PER_EVENT:
            try:
                more = events.get_nowait()
            except queue.Empty:
                break
            if more is None:
                events.put(None)
                break
            lines.append(_line(more))
            progress = more.get("percent", progress)
        post_event(lines, progress)
        last_post = time.monotonic()


def _line(event):
    if event.get("type") == "progress":
        return f"{event.get('percent')}% {event.get('message', '')}".strip()
    return f"{event.get('level', event.get('type'))}: {event.get('message', '')}"


def _data(result, grants):
    """The provider's own data, and what the sandbox gave it (for the job record)."""
    return {
        **result.data,
        "sandbox": {
            "reason": result.reason,
            "capabilities": result.protections.get("capabilities", []),
            "devices": result.protections.get("devices", grants["devices"]),
            "refusals": result.refusals[:20],
            "exit_code": result.exit_code,
            "stderr": result.stderr[-2000:],
        },
    }
