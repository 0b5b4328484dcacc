"""Resource limits for one provider run: cgroup v2, cgroup v1, and rlimits underneath.

rlimits are always set in the sandboxed child (they cost nothing and hold on any kernel),
but they are per process: a provider that forks spreads its CPU time and memory over its
children. A cgroup bounds the whole tree, so the runner makes one per run: the unified
hierarchy (v2) when its controllers are there, else the v1 memory, cpu and pids
hierarchies (the build machines have only v1; a systemd appliance has v2). One log line per
run says which mechanism is in force. This module must never touch a cgroup it did not make.
"""

import contextlib
import logging
import os
import resource
import signal
import time
from dataclasses import asdict, dataclass

log = logging.getLogger(__name__)

CGROUP_ROOT = "/sys/fs/cgroup"
GROUP_PREFIX = "cloudboot-provider"


@dataclass(frozen=True)
class Limits:
    """What one run may use. The runner takes the smaller of the manifest and the operator."""

    run_seconds: int = 300
    cpu_seconds: int = 60
    memory_mb: int = 256
    processes: int = 32
    open_files: int = 64
    file_size_mb: int = 64
    output_bytes: int = 1 << 20
    work_mb: int = 64  # size of the tmpfs the work directory is mounted on

    def capped_by(self, ceiling):
        mine, theirs = asdict(self), asdict(ceiling)
        return Limits(**{key: min(mine[key], theirs[key]) for key in mine})


def apply_rlimits(limits):
    """Set rlimits on this process (the sandboxed child, before execve)."""
    memory = limits.memory_mb << 20
    pairs = {
        # SIGXCPU at the soft limit, SIGKILL one second later (setrlimit(2)).
        resource.RLIMIT_CPU: (limits.cpu_seconds, limits.cpu_seconds + 1),
        resource.RLIMIT_AS: (memory, memory),
        resource.RLIMIT_NPROC: (limits.processes, limits.processes),
        resource.RLIMIT_NOFILE: (limits.open_files, limits.open_files),
        resource.RLIMIT_FSIZE: (limits.file_size_mb << 20, limits.file_size_mb << 20),
        resource.RLIMIT_CORE: (0, 0),
    }
    for which, value in pairs.items():
        resource.setrlimit(which, value)
    return True


class CgroupSet:
    """The cgroups made for one run; `paths` holds the directories a pid is written into."""

    def __init__(self, version, paths):
        self.version = version
        self.paths = paths

    @property
    def mechanism(self):
        return f"cgroup v{self.version}" if self.version else "rlimits only"

    def memory_events(self):
        """How many times the memory limit was hit (OOM kills), from either version."""
        for path in self.paths:
            for name, key in (("memory.events", "oom_kill"), ("memory.oom_control", "oom_kill")):
                value = _read_key(os.path.join(path, name), key)
                if value is not None and value > 0:
                    return value
        return 0

    def kill_all(self):
        """SIGKILL every process left in the run's cgroups."""
        for path in self.paths:
            if self.version == 2 and os.path.exists(os.path.join(path, "cgroup.kill")):
                _write(os.path.join(path, "cgroup.kill"), "1")
                continue
            for pid in _pids(path):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)

    def remove(self):
        """Remove the run's cgroups, waiting briefly for killed processes to leave."""
        deadline = time.monotonic() + 2.0
        for path in self.paths:
            while True:
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        log.warning("could not remove cgroup %s", path)
                        break
                    self.kill_all()
                    time.sleep(0.02)


def create(run_id, limits, root=CGROUP_ROOT):
    """Make the cgroups for a run; falls back to rlimits only (version 0) with a log line."""
    try:
        group = _create_v2(run_id, limits, root) or _create_v1(run_id, limits, root)
    except OSError as exc:
        log.warning("provider %s: cgroups unavailable (%s); rlimits only", run_id, exc)
        group = None
    group = group or CgroupSet(0, [])
    log.info("provider %s: resource limits by %s and rlimits", run_id, group.mechanism)
    return group


def _create_v2(run_id, limits, root):
    controllers = _read(os.path.join(root, "cgroup.controllers")).split()
    if not {"memory", "pids", "cpu"} <= set(controllers):
        return None
    parent = os.path.join(root, GROUP_PREFIX)
    os.makedirs(parent, exist_ok=True)
    _write(os.path.join(root, "cgroup.subtree_control"), "+memory +pids +cpu")
    _write(os.path.join(parent, "cgroup.subtree_control"), "+memory +pids +cpu")
    path = os.path.join(parent, run_id)
    os.mkdir(path)
    _write(os.path.join(path, "memory.max"), str(limits.memory_mb << 20))
    _write(os.path.join(path, "memory.swap.max"), "0", missing_ok=True)
    _write(os.path.join(path, "pids.max"), str(limits.processes))
    _write(os.path.join(path, "cpu.max"), "100000 100000")  # one CPU at most
    return CgroupSet(2, [path])


def _create_v1(run_id, limits, root):
    wanted = {
        "memory": {"memory.limit_in_bytes": str(limits.memory_mb << 20)},
        "pids": {"pids.max": str(limits.processes)},
        "cpu": {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "100000"},
    }
    if not all(os.path.isdir(os.path.join(root, name)) for name in wanted):
        return None
    paths = []
    group = CgroupSet(1, paths)
    try:
        for controller, settings in wanted.items():
            path = os.path.join(root, controller, GROUP_PREFIX, run_id)
            os.makedirs(path)
            paths.append(path)
            for name, value in settings.items():
                _write(os.path.join(path, name), value)
        # Without a swap bound the memory limit only pushes the provider into swap.
        memsw = os.path.join(paths[0], "memory.memsw.limit_in_bytes")
        _write(memsw, str(limits.memory_mb << 20), missing_ok=True)
    except OSError:
        group.remove()
        raise
    return group


def join(paths, pid):
    """Move `pid` into each cgroup directory (called by the launcher for the child)."""
    for path in paths:
        _write(os.path.join(path, "cgroup.procs"), str(pid))


def _pids(path):
    try:
        return [int(line) for line in _read(os.path.join(path, "cgroup.procs")).split()]
    except OSError:
        return []


def _read(path):
    try:
        with open(path) as handle:
            return handle.read()
    except FileNotFoundError:
        return ""


def _read_key(path, key):
    for line in _read(path).splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == key:
            return int(parts[1])
    return None


def _write(path, value, missing_ok=False):
    try:
        with open(path, "w") as handle:
            handle.write(value)
    except FileNotFoundError:
        if not missing_ok:
            raise
