"""The launcher: a fresh single-threaded process that builds the sandbox and supervises it.

The runner may live in a threaded process (trio's worker threads on the appliance), where
fork() is unsafe and unshare() of some namespaces is refused, so it starts this module as a
new interpreter instead. Three processes take part:

1. the launcher (this process, still root in the host namespaces) unshares the mount, PID,
   IPC, UTS and network namespaces and forks;
2. the child becomes PID 1 of the new PID namespace ("init"): it mounts a fresh /proc,
   drops to the run's own uid, enters a user namespace where the kernel allows, sets
   no_new_privs, restricts itself with Landlock and seccomp, then forks the provider and
   stays behind only to reap. Because it is init, the kernel kills every process left in
   the namespace when it exits, and signals from the provider cannot reach it;
3. the provider execs with everything above inherited.

The launcher answers the seccomp notifications of refused system calls (EPERM) and writes
one JSON line per fact to the report pipe: "started" with the protections in force,
"refusal" per refused call, "setup_failed", and "exit". It must never run provider code
itself and never outlive the runner by design (the child has PDEATHSIG).
"""

import contextlib
import json
import os
import re
import select
import signal
import socket
import stat
import sys
import traceback

from providers.sandbox import _kernel, capabilities, landlock, limits, relay, seccomp

MAX_REFUSALS_REPORTED = 200
# /bin, /sbin and /lib are symlinks into /usr on merged-/usr systems (the rule then lands on
# the target) and real directories in BootOS.
SYSTEM_READ_EXECUTE = (
    "/usr/bin", "/usr/sbin", "/usr/lib", "/usr/lib64", "/usr/libexec", "/usr/local/lib",
    "/bin", "/sbin", "/lib", "/lib64",
)  # fmt: skip
SYSTEM_READ = ("/etc/ld.so.cache", "/etc/localtime", "/usr/share/zoneinfo")
DEVICES_READ_WRITE = ("/dev/null", "/dev/zero", "/dev/full", "/dev/urandom", "/dev/random")
# Device nodes the kernel makes only once the device exists, which for md is after the
# tool asked for it: md's block major is 9 and its minor the array number
# (Documentation/admin-guide/devices.txt). A granted one that is missing is made here,
# so Landlock has a node to hold a rule; nothing else is ever made.
ON_DEMAND_NODES = ((re.compile(r"^/dev/md(\d{1,3})$"), stat.S_IFBLK, 9),)
# mdadm opens an array by number through a node it makes itself, in /dev or else /tmp
# (mdadm's util.c, dev_open). A run with a capability grant gets its own /tmp tmpfs
# where it may make block nodes: with CAP_MKNOD, which seccomp holds to the granted
# devices' numbers, so a node made there reaches nothing the operator did not grant.
PRIVATE_TMP = "/tmp"


def main():
    spec_fd, report_fd = int(sys.argv[1]), int(sys.argv[2])
    with os.fdopen(spec_fd, "rb") as handle:
        spec = json.loads(handle.read())
    # The report pipe is the runner's record of the run: the provider must never inherit
    # it (it could forge protections, refusals or a setup failure, or flood the runner).
    os.set_inheritable(report_fd, False)
    report = os.fdopen(report_fd, "w", buffering=1)
    try:
        code = launch(spec, report)
    except Exception as exc:  # the report is the only channel the runner reads
        _emit(report, "setup_failed", message=f"launcher: {exc}", trace=traceback.format_exc())
        code = 125
    report.close()
    os._exit(code)


def launch(spec, report):
    own = {
        kind: os.open(f"/proc/self/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)
        for kind in ("pid", "net")
    }
    namespaces = _enter_namespaces(spec)
    missing = _missing(spec, {"namespaces": all(namespaces.values())})
    if missing:
        _emit(report, "setup_failed", message=f"required protection missing: {', '.join(missing)}")
        return 125

    parent_end, child_end = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        parent_end.close()
        report.close()  # only the launcher writes the report; init and the provider never
        _child(spec, child_end, namespaces)
    child_end.close()
    _return_to(own)
    return _supervise(spec, report, parent_end, pid)


def _return_to(own):
    """Back to the host's network and PID namespaces once the sandbox's init exists.

    The relay connects out from the host's network namespace, and needs threads, which a
    process cannot start after unshare(CLONE_NEWPID) (clone(2): EINVAL while its children's
    PID namespace differs from its own).
    """
    for kind, flag in (("pid", _kernel.CLONE_NEWPID), ("net", _kernel.CLONE_NEWNET)):
        with contextlib.suppress(OSError):
            _kernel.setns(own[kind], flag)
        os.close(own[kind])


def _enter_namespaces(spec):
    flags = {
        "mount": _kernel.CLONE_NEWNS,
        "pid": _kernel.CLONE_NEWPID,
        "ipc": _kernel.CLONE_NEWIPC,
        "uts": _kernel.CLONE_NEWUTS,
    }
    # Always a network namespace of its own: granted destinations reach it through the
    # launcher's relay (providers/sandbox/relay.py), never through the host's interfaces.
    flags["net"] = _kernel.CLONE_NEWNET
    combined = 0
    for value in flags.values():
        combined |= value
    try:
        _kernel.unshare(combined)
        return dict.fromkeys(flags, True)
    except _kernel.KernelError:
        return dict.fromkeys(flags, False)


def _missing(spec, found):
    if spec.get("allow_missing"):
        return []
    return [name for name in spec["required"] if name in found and not found[name]]


def _emit(report, event, **fields):
    report.write(json.dumps({"event": event, **fields}) + "\n")


# --- the child: PID 1 of the sandbox -------------------------------------------------------


def _child(spec, channel, namespaces):
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _kernel.prctl(_kernel.PR_SET_PDEATHSIG, signal.SIGKILL)
    if channel.recv(1) != b"g":  # the launcher died before putting us in the cgroups
        os._exit(126)
    try:
        protections = _confine(spec, namespaces)
        missing = [
            name
            for name in spec["required"]
            if not spec.get("allow_missing") and not protections.get(name)
        ]
        if missing:
            raise RuntimeError(f"required protection missing: {', '.join(missing)}")
        listener = protections.pop("_listener")
        relays = protections.pop("_relays")
        fds = ([listener] if listener is not None else []) + [r.fileno() for r in relays]
        socket.send_fds(channel, [json.dumps({"protections": protections}).encode()], fds)
        if listener is not None:
            os.close(listener)
        for server in relays:  # the provider must not inherit them
            server.close()
    except Exception as exc:
        with contextlib.suppress(OSError):
            channel.sendall(json.dumps({"setup_failed": str(exc)}).encode())
        os._exit(126)
    _init(spec, channel)


def _confine(spec, namespaces):
    """Every restriction, in the only order that works; returns what is in force."""
    found = {"namespaces": all(namespaces.values()), "namespace_list": namespaces}
    granted = spec.get("capabilities") or []
    if granted:
        # Capabilities reach init-namespace devices only from the initial user namespace:
        # the run stays uid 0 there, with every capability but the granted ones dropped.
        spec["uid"] = spec["gid"] = 0
    if namespaces.get("mount"):
        _kernel.mount(None, "/", None, _kernel.MS_REC | _kernel.MS_PRIVATE)
        flags = _kernel.MS_NOSUID | _kernel.MS_NODEV | _kernel.MS_NOEXEC
        _kernel.mount("proc", "/proc", "proc", flags)  # shows only this PID namespace
        # A size-limited tmpfs, seen only in this mount namespace, so filling the work
        # directory fills nothing of the host's; it disappears with the namespace.
        size = spec["limits"]["work_mb"]
        options = f"size={size}m,mode=0700,uid={spec['uid']},gid={spec['gid']}"
        _kernel.mount("tmpfs", spec["workdir"], "tmpfs", flags, options)
        found["work_tmpfs_mb"] = size
    if granted and namespaces.get("mount"):
        found["private_tmp"] = spec["private_tmp"] = _mount_private_tmp(spec)
    if namespaces.get("uts"):
        _kernel.sethostname("provider")
    # Listening needs root in this namespace (ports below 1024), so before the uid drop.
    found["_relays"] = relay.listen_inside(spec["destinations"]) if namespaces.get("net") else []
    found["destinations"] = spec["destinations"] if found["_relays"] else []

    found["rlimits"] = limits.apply_rlimits(limits.Limits(**spec["limits"]))
    os.chdir(spec["workdir"])
    # A granted device node is opened through its group's permission; Landlock then
    # limits the run to exactly the granted nodes of that group.
    if granted:
        found["created_nodes"] = _make_on_demand_nodes(spec["devices"])
        _make_write_directories(spec.get("paths", {}).get("write", []))
    spec["devices"] = _checked_devices(spec["devices"])
    device_groups = sorted({os.stat(device["path"]).st_gid for device in spec["devices"]})
    if granted:
        spec["device_numbers"] = sorted({os.stat(d["path"]).st_rdev for d in spec["devices"]})
        found.update(_keep_capabilities([*granted, "CAP_MKNOD"]))
        found["capabilities"] = sorted(granted)
    else:
        found.update(_drop_privileges(spec["uid"], spec["gid"], device_groups))
    found["devices"] = [device["path"] for device in spec["devices"]]

    _kernel.prctl(_kernel.PR_SET_NO_NEW_PRIVS, 1)
    found["no_new_privs"] = _kernel.prctl(_kernel.PR_GET_NO_NEW_PRIVS) == 1
    found.update(_landlock(spec))
    found.update(_seccomp(spec))
    return found


def _checked_devices(devices):
    """The granted devices by their real paths, each a device node under /dev.

    A path under /dev may be an ordinary file or a symlink that any local user left in
    /dev/shm: granting it would hand the provider that file's group and a Landlock rule on
    whatever it points at. Resolved once here, so the rule and the group are taken from
    the node that was checked, not from a link that can change meanwhile.
    """
    checked = []
    for device in devices:
        real = os.path.realpath(device["path"])
        try:
            info = os.lstat(real)
        except OSError as exc:
            raise RuntimeError(f"granted device {device['path']}: {exc.strerror}") from None
        if not real.startswith("/dev/") or not (
            stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode)
        ):
            raise RuntimeError(f"granted device {device['path']} is not a device node in /dev")
        checked.append({**device, "path": real})
    return checked


def _mount_private_tmp(spec):
    """A tmpfs over /tmp for this run, unless the package or work directory lives there."""
    inside = [p for p in (spec["workdir"], *spec["read_execute"]) if _beneath(p, PRIVATE_TMP)]
    if inside:
        return False
    flags = _kernel.MS_NOSUID | _kernel.MS_NOEXEC  # not nodev: nodes made here must open
    _kernel.mount("tmpfs", PRIVATE_TMP, "tmpfs", flags, "size=1m,mode=0700")
    return True


def _beneath(path, directory):
    return os.path.commonpath([os.path.realpath(path), directory]) == directory


def _make_on_demand_nodes(devices):
    made = []
    for device in devices:
        for pattern, kind, major in ON_DEMAND_NODES:
            match = pattern.match(device["path"])
            if match and not os.path.lexists(device["path"]):
                os.mknod(device["path"], kind | 0o600, os.makedev(major, int(match.group(1))))
                made.append(device["path"])
    return made


def _make_write_directories(paths):
    """A write rule needs a directory to hold it: make the missing ones under /run and /dev.

    /sys cannot be written to this way and needs none: its entries are the kernel's.
    """
    for path in paths:
        if path.startswith(("/run/", "/dev/")) and not os.path.lexists(path):
            os.makedirs(path, mode=0o755, exist_ok=True)


def _keep_capabilities(granted):
    """Root without root's powers: no supplementary groups, only the granted capabilities."""
    os.setgroups([])
    capabilities.keep_only(granted)
    # Not dumpable: the provider (same uid) must not read this process's memory or
    # environment through /proc/1, which ptrace rules would otherwise allow.
    _kernel.prctl(_kernel.PR_SET_DUMPABLE, 0)
    _kernel.prctl(_kernel.PR_SET_PDEATHSIG, signal.SIGKILL)
    return {
        "uid": os.getuid(),
        "unprivileged": False,
        "user_namespace": False,
        "capabilities": sorted(granted),
        "capability_sets": capabilities.in_force(),
    }


def _drop_privileges(uid, gid, groups):
    if os.getuid() == 0:
        os.setgroups(groups)
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    # Credential changes clear the parent-death signal and make the process non-dumpable,
    # which leaves /proc/self owned by root; both are restored after them.
    _kernel.prctl(_kernel.PR_SET_PDEATHSIG, signal.SIGKILL)
    _kernel.prctl(_kernel.PR_SET_DUMPABLE, 1)
    try:
        _kernel.unshare(_kernel.CLONE_NEWUSER)
    except OSError:
        return {"uid": os.getuid(), "unprivileged": os.geteuid() != 0, "user_namespace": False}
    # Mapping only our own ids needs no privilege in the parent namespace
    # (user_namespaces(7), "Defining user and group ID mappings").
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"{uid} {uid} 1")
    _write("/proc/self/gid_map", f"{gid} {gid} 1")
    return {"uid": os.getuid(), "unprivileged": os.geteuid() != 0, "user_namespace": True}


def _landlock(spec):
    abi = landlock.abi_version()
    if spec.get("landlock_abi_cap") is not None:
        abi = min(abi, spec["landlock_abi_cap"])
    if abi < 1:
        return {"landlock_abi": 0, "landlock_fs": False, "landlock_net": False}
    paths = dict.fromkeys(SYSTEM_READ_EXECUTE, landlock.READ_EXECUTE)
    paths.update(dict.fromkeys(SYSTEM_READ, landlock.READ))
    paths.update(dict.fromkeys(DEVICES_READ_WRITE, landlock.FS_READ_FILE | landlock.FS_WRITE_FILE))
    paths.update(dict.fromkeys(spec["read_execute"], landlock.READ_EXECUTE))
    # Extra kernel views and RAID entries the manifest asked for (providers/manifest.py
    # limits where they may point); write rules only come with a capability grant.
    extra = spec.get("paths", {})
    paths.update(dict.fromkeys(extra.get("read", []), landlock.READ))
    paths.update(dict.fromkeys(extra.get("write", []), landlock.READ | landlock.WRITE))
    if spec.get("private_tmp"):
        nodes = landlock.FS_MAKE_BLOCK | landlock.FS_REMOVE_FILE | landlock.DEVICE
        paths[PRIVATE_TMP] = landlock.READ | nodes
    for device in spec["devices"]:
        rights = landlock.FS_READ_FILE | landlock.FS_WRITE_FILE
        paths[device["path"]] = rights | (landlock.FS_IOCTL_DEV if device["ioctl"] else 0)
    # The work directory is writable but not executable: a provider cannot download code
    # into it and run it.
    paths[spec["workdir"]] = landlock.READ | landlock.WRITE
    ports = dict.fromkeys(spec["tcp_ports"], landlock.NET_CONNECT_TCP)
    try:
        return landlock.restrict(paths, ports, abi)
    except _kernel.KernelError as exc:
        # Reported, not raised: whether the run may go on is the required list's decision.
        return {"landlock_abi": abi, "landlock_fs": False, "landlock_net": False,
                "landlock_error": str(exc)}  # fmt: skip


def _seccomp(spec):
    if not _kernel.seccomp_available():
        return {"seccomp": False, "seccomp_notify": False, "_listener": None}
    try:
        numbers = spec.get("device_numbers", ())
        listener = seccomp.install(network=spec["network"], notify=True, device_numbers=numbers)
    except _kernel.KernelError as exc:
        return {"seccomp": False, "seccomp_notify": False, "_listener": None,
                "seccomp_error": str(exc)}  # fmt: skip
    return {"seccomp": True, "seccomp_notify": listener is not None, "_listener": listener}


def _init(spec, channel):
    """Fork the provider, then reap until it exits; report its status and leave."""
    devnull = os.open("/dev/null", os.O_RDWR)
    pid = os.fork()
    if pid == 0:
        channel.close()
        try:
            os.execve(spec["argv"][0], spec["argv"], spec["env"])
        except OSError as exc:
            os.write(2, f"cannot start provider: {exc}\n".encode())
        os._exit(127)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    while True:
        try:
            reaped, status = os.wait()
        except ChildProcessError:
            os._exit(0)
        if reaped == pid:
            break
    exit_code = os.waitstatus_to_exitcode(status)
    with contextlib.suppress(OSError):
        channel.sendall(json.dumps({"exit": exit_code}).encode())
    os._exit(0)


def _write(path, text):
    with open(path, "w") as handle:
        handle.write(text)


# --- the launcher's side: cgroups, notifications, exit -------------------------------------


def _supervise(spec, report, channel, pid):
    # The runner asks for a kill with SIGTERM; only this process knows whether the pid is
    # still the child's (not yet reaped), so only it sends the SIGKILL.
    reaped = []

    def kill_child(_signum, _frame):
        if not reaped:
            os.kill(pid, signal.SIGKILL)

    signal.signal(signal.SIGTERM, kill_child)
    try:
        return _run_child(spec, report, channel, pid)
    finally:
        reaped.append(os.waitpid(pid, 0))


def _run_child(spec, report, channel, pid):
    limits.join(spec["cgroup_paths"], pid)
    channel.sendall(b"g")

    message, fds, _flags, _addr = socket.recv_fds(channel, 65536, 1 + len(spec["destinations"]))
    reply = json.loads(message or b"{}")
    if "protections" not in reply:
        _emit(report, "setup_failed", message=reply.get("setup_failed", "sandbox child died"))
        return 126
    protections = reply["protections"]
    listener = fds.pop(0) if protections["seccomp_notify"] else None
    destinations = protections["destinations"]
    servers = [socket.socket(fileno=fd) for fd in fds]
    relays = relay.Relay(servers, destinations, lambda c: _emit(report, "connection", **c))
    _emit(report, "started", pid=pid, protections=protections)

    exit_code = _serve_until_exit(report, channel, listener, relays)
    relays.close()
    _emit(report, "exit", code=exit_code)
    return 0


def _serve_until_exit(report, channel, listener, relays):
    poller = select.poll()
    poller.register(channel, select.POLLIN)
    if listener is not None:
        poller.register(listener, select.POLLIN)
    for fd in relays.fds():
        poller.register(fd, select.POLLIN)
    refusals, exit_code, buffered = 0, None, b""
    while True:
        for fd, events in poller.poll(1000):
            if fd in relays.fds():
                relays.accept(fd)
                continue
            if fd == listener:
                if events & select.POLLIN:
                    refusals = _answer(report, listener, refusals)
                else:
                    poller.unregister(listener)
                continue
            chunk = channel.recv(4096)
            if not chunk:
                return exit_code
            buffered += chunk
            with contextlib.suppress(ValueError):
                exit_code = json.loads(buffered)["exit"]


def _answer(report, listener, refusals):
    notification = seccomp.receive(listener)
    if notification is None:
        return refusals
    seccomp.refuse(listener, notification)
    refusals += 1
    if refusals <= MAX_REFUSALS_REPORTED:
        name = seccomp.syscall_name(notification["nr"])
        _emit(report, "refusal", by="seccomp", syscall=name, args=notification["args"][:3])
    elif refusals == MAX_REFUSALS_REPORTED + 1:
        _emit(report, "refusal", by="seccomp", syscall="...", note="further refusals not listed")
    return refusals


if __name__ == "__main__":
    main()
