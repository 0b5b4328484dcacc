"""Hostile providers against the real sandbox: every escape fails, and the failure shows.

Each provider in tests/hostile/providers tries one thing and reports "succeeded" only if
the escape worked. A test asserts three things a security reviewer would check: the run did
not succeed, the damage did not happen (the secret is not in anything the provider got out,
the file was not written, the process still lives), and the attempt is observable: the
refused system call is in the run's refusal record, or the provider's own report carries
the kernel's errno, or the runner's reason names the limit.
"""

import errno
import grp
import os
import shutil
import socket
import stat
import subprocess
import threading

import pytest

from tests.hostile.support import (
    DATABASE_SECRET,
    MASTER_KEY_SECRET,
    everything_said,
    make_lab,
    processes_of,
    require_sandbox,
)


@pytest.fixture(scope="module")
def lab():
    require_sandbox()
    made = make_lab()
    yield made
    shutil.rmtree(made.root, ignore_errors=True)


def blocked(result, err):
    """The provider tried, the kernel said no with `err`, and the run reports failure."""
    assert result.status == "failed", result.to_dict()
    assert result.reason == "provider_failed", result.to_dict()
    assert result.data.get("errno") == err, result.to_dict()


def refused(result, syscall):
    """The attempt is on the run's record as a seccomp refusal, answered with EPERM."""
    blocked(result, errno.EPERM)
    assert syscall in [r["syscall"] for r in result.refusals], result.refusals


# --- files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["read_shadow", "proc_root", "proc_parent_root"])
def test_host_files_are_out_of_reach(lab, name):
    result = lab.run(name, {"database": str(lab.database)})
    blocked(result, errno.EACCES)
    assert "root:" not in everything_said(result)
    assert result.protections["landlock_fs"] is True


def test_physical_memory_is_out_of_reach(lab):
    result = lab.run("read_dev_mem")
    assert result.status == "failed"
    # Some build machines have no /dev/mem at all; where it exists Landlock refuses it.
    expected = errno.EACCES if os.path.exists("/dev/mem") else errno.ENOENT
    assert result.data["errno"] == expected, result.to_dict()


@pytest.mark.parametrize(
    "name, secret",
    [
        ("read_database", DATABASE_SECRET),
        ("read_master_key", MASTER_KEY_SECRET),
        ("symlink_escape", DATABASE_SECRET),
    ],
)
def test_world_readable_appliance_secrets_stay_secret(lab, name, secret):
    # The files are mode 0644: file permissions would let any uid read them, so this
    # shows Landlock, not the uid, doing the refusing.
    params = {"database": str(lab.database), "master_key": str(lab.master_key)}
    result = lab.run(name, params)
    blocked(result, errno.EACCES)
    assert secret not in everything_said(result)


def test_hard_link_into_the_work_directory_is_refused(lab):
    result = lab.run("hardlink_escape", {"database": str(lab.database)})
    assert result.status == "failed"
    # Landlock answers EXDEV for a link across its rule boundary (the "refer" right).
    assert result.data["errno"] in (errno.EXDEV, errno.EACCES, errno.EPERM), result.to_dict()
    assert DATABASE_SECRET not in everything_said(result)


def test_writing_outside_the_work_directory_is_refused(lab):
    target = lab.drop_zone / "planted"  # mode 0777: only the sandbox stops the write
    result = lab.run("write_outside", {"target": str(target)})
    blocked(result, errno.EACCES)
    assert not target.exists()


def test_the_package_cannot_rewrite_itself(lab):
    result = lab.run("write_package")
    assert result.status == "failed"
    assert result.data["errno"] in (errno.EACCES, errno.EROFS), result.to_dict()
    code = (lab.packages / "write_package" / "provider.py").read_text()
    assert not code.endswith("# changed")


def test_programs_written_to_the_work_directory_do_not_run(lab):
    result = lab.run("exec_from_workdir")
    blocked(result, errno.EACCES)
    assert "pwned" not in everything_said(result)


def test_a_setuid_program_gives_no_root(lab):
    # A setuid-root copy of id(1) inside the package: `id -u` prints the effective uid.
    directory = lab.provider("setuid_exec")
    shutil.copy("/usr/bin/id", directory / "id-setuid")
    os.chmod(directory / "id-setuid", 0o4755)
    result = lab.run_directory(directory)
    assert result.status == "failed", result.to_dict()
    assert result.data["euid"] == str(result.protections["uid"])
    assert result.protections["no_new_privs"] is True


def test_filling_the_work_directory_stops_at_its_own_tmpfs(lab):
    result = lab.run("fill_disk")
    blocked(result, errno.ENOSPC)
    assert result.data["mib"] <= result.limits["work_mb"]
    assert result.protections["work_tmpfs_mb"] == result.limits["work_mb"]


def test_one_file_cannot_grow_past_the_file_size_limit(lab):
    result = lab.run("big_file")
    blocked(result, errno.EFBIG)
    assert result.data["mib"] <= 2


# --- processes -----------------------------------------------------------------------------


def test_ptrace_of_the_parent_is_refused_and_recorded(lab):
    refused(lab.run("ptrace_parent"), "ptrace")


def test_processes_outside_the_sandbox_cannot_be_signalled(lab):
    victim = subprocess.Popen(["sleep", "60"])
    try:
        result = lab.run("kill_host_process", {"pid": victim.pid})
        blocked(result, errno.ESRCH)  # the host's PIDs do not exist in its namespace
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait()


def test_killing_the_sandbox_init_does_nothing(lab):
    result = lab.run("kill_init")
    assert result.status == "failed"
    assert result.reason == "provider_failed"
    assert "still there" in result.message


def test_a_fork_bomb_hits_the_process_limit_and_leaves_nothing(lab):
    result = lab.run("fork_bomb")
    assert result.status == "failed", result.to_dict()
    assert result.data["children"] < 16
    assert processes_of(result.protections["uid"]) == []


def test_a_daemon_left_behind_dies_with_the_run(lab):
    result = lab.run("leave_daemon")
    assert result.reason == "provider_failed"
    assert result.duration < 60  # did not wait for the daemon's two minutes
    assert processes_of(result.protections["uid"]) == []


# --- limits --------------------------------------------------------------------------------


def test_a_memory_balloon_is_stopped(lab):
    result = lab.run("memory_balloon")
    assert result.status == "failed"
    stopped = result.reason == "memory_limit" or "MemoryError" in result.message
    assert stopped, result.to_dict()
    assert result.data.get("mib", 0) <= 64


def test_memory_spread_over_processes_hits_the_cgroup(lab):
    result = lab.run("memory_balloon_forked")
    assert result.status == "failed", result.to_dict()
    if result.limits["mechanism"] == "rlimits only":
        pytest.skip("no memory cgroup here: each process stays under RLIMIT_AS alone")
    assert result.reason == "memory_limit", result.to_dict()
    assert "96 MiB" in result.message


def test_a_busy_loop_is_killed_at_its_cpu_limit(lab):
    result = lab.run("busy_loop")
    assert (result.status, result.reason) == ("failed", "cpu_limit"), result.to_dict()
    assert "CPU" in result.message


def test_endless_output_is_cut_off(lab):
    result = lab.run("endless_output")
    assert (result.status, result.reason) == ("failed", "output_limit"), result.to_dict()


@pytest.mark.parametrize("name", ["hang", "hang_with_children"])
def test_a_hanging_provider_times_out_and_its_tree_is_killed(lab, name):
    result = lab.run(name)
    assert (result.status, result.reason) == ("failed", "timeout"), result.to_dict()
    assert "2 s" in result.message
    assert processes_of(result.protections["uid"]) == []


# --- kernel interfaces refused by seccomp --------------------------------------------------


@pytest.mark.parametrize(
    "name, syscall",
    [
        ("mount_tmpfs", "mount"),
        ("unshare_user", "unshare"),
        ("setns", "setns"),
        ("keyctl", "keyctl"),
        ("io_uring", "io_uring_setup"),
        ("load_module", "finit_module"),
        ("bpf", "bpf"),
        ("perf_event", "perf_event_open"),
        ("clock_settime", "clock_settime"),
        ("reboot", "reboot"),
        ("personality", "personality"),
        ("userfaultfd", "userfaultfd"),
        ("terminal_inject", "ioctl"),
    ],
)
def test_dangerous_syscalls_are_refused_and_recorded(lab, name, syscall):
    refused(lab.run(name), syscall)


# --- network -------------------------------------------------------------------------------


class Listener:
    """A TCP server on loopback that counts connections (the stand-in appliance API)."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            conn.settimeout(1)
            try:
                self.accepted.append(conn.recv(100))
            except OSError:
                self.accepted.append(b"")
            conn.close()

    def close(self):
        self.stop.set()
        self.thread.join()
        self.sock.close()


@pytest.fixture
def listener():
    server = Listener()
    yield server
    server.close()


def test_no_network_grant_means_no_tcp_socket(lab, listener):
    result = lab.run("connect_loopback", {"port": listener.port})
    refused(result, "socket")
    assert result.protections["namespace_list"]["net"] is True
    assert listener.accepted == []


def test_a_granted_port_does_not_open_other_ports(lab, listener):
    # The provider asks for port 9 and is granted it; the API listens elsewhere.
    result = lab.run("connect_ungranted_port", {"port": listener.port}, grants={"network": [9]})
    blocked(result, errno.EACCES)
    assert result.protections["landlock_net"] is True
    assert listener.accepted == []


def test_a_granted_port_is_reachable(lab, listener):
    # Positive control for the test above: the same sandbox lets the granted port through.
    result = lab.run(
        "connect_granted_port",
        {"port": listener.port},
        grants={"network": [listener.port]},
        ports=[listener.port],
    )
    assert result.status == "succeeded", result.to_dict()
    listener.stop.set()
    listener.thread.join()
    assert listener.accepted == [b"hello"]
    # It went through the launcher's relay, out of the provider's own network namespace.
    assert result.protections["namespace_list"]["net"] is True
    assert result.connections == [
        {
            "host": "127.0.0.1",
            "port": listener.port,
            "protocol": "tcp",
            "bytes_out": 5,
            "bytes_in": 0,
        }
    ]


@pytest.mark.parametrize("host", ["127.0.0.3"])
def test_a_granted_port_on_another_address_goes_nowhere(lab, listener, host):
    # Granted 127.0.0.1:P; it tries P on another loopback address, where the test also
    # listens. (An address off the machine is not tried: tests aim at nothing outside.)
    other = socket.create_server(("127.0.0.3", listener.port))
    other.settimeout(0.2)
    try:
        result = lab.run(
            "connect_other_address",
            {"host": host, "port": listener.port},
            grants={"network": [listener.port]},
            ports=[listener.port],
        )
        assert result.status == "failed", result.to_dict()
        assert result.data["errno"] in (errno.ECONNREFUSED, errno.ENETUNREACH)
        assert result.connections == []
        with pytest.raises(TimeoutError):
            other.accept()
    finally:
        other.close()
    assert listener.accepted == []


@pytest.mark.parametrize("name", ["raw_socket", "packet_socket"])
def test_raw_and_packet_sockets_are_refused(lab, name):
    refused(lab.run(name), "socket")


def test_dns_queries_go_nowhere(lab):
    resolver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    resolver.bind(("127.0.0.1", 0))
    resolver.settimeout(0.5)
    try:
        result = lab.run("dns_query", {"port": resolver.getsockname()[1]})
        refused(result, "socket")
        with pytest.raises(TimeoutError):
            resolver.recvfrom(512)
    finally:
        resolver.close()


def test_abstract_unix_sockets_outside_are_unreachable(lab):
    name = f"cloudboot-hostile-{os.getpid()}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind("\0" + name)
    server.listen()
    try:
        result = lab.run("abstract_unix", {"name": name})
        assert result.status == "failed", result.to_dict()
        # Its own network namespace has its own abstract names (ECONNREFUSED); Landlock's
        # scope (ABI 6) would answer EPERM in a shared one.
        assert result.data["errno"] in (errno.ECONNREFUSED, errno.EPERM)
    finally:
        server.close()


# --- broken providers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, words",
    [
        ("crash", "ended without a result (the provider exited with status 1)"),
        ("segfault", "killed by SIGSEGV"),
        ("no_result", "ended without a result"),
        ("garbage", "not a JSON line: b'Hello, I am not JSON'"),
        ("two_results", "output after the result"),
        ("huge_line", "a line longer than"),
    ],
)
def test_broken_providers_fail_with_a_clear_reason(lab, name, words):
    result = lab.run(name)
    assert (result.status, result.reason) == ("failed", "protocol_violation"), result.to_dict()
    assert words in result.message


def test_a_crash_keeps_its_traceback_for_the_vendor(lab):
    result = lab.run("crash")
    assert "RuntimeError: provider bug" in result.stderr


# --- positive controls ---------------------------------------------------------------------


def test_a_well_behaved_provider_works_inside_the_same_sandbox(lab):
    result = lab.run("well_behaved")
    assert result.status == "succeeded", result.to_dict()
    assert result.data["scratch"] == "work directory is writable"
    assert result.data["pid"] == 2  # PID 1 is the sandbox's init
    assert result.data["uid"] == result.protections["uid"] != 0
    assert [e["type"] for e in result.events] == ["progress", "result"]
    assert result.refusals == []


def test_an_executable_entry_runs_by_its_own_interpreter_line(lab):
    result = lab.run("shebang_well_behaved")
    assert result.status == "succeeded", result.to_dict()
    assert result.message == "ran by its own #! line"


def test_shell_providers_are_sandboxed_too(lab):
    good = lab.run("shell_well_behaved")
    assert good.status == "succeeded", good.to_dict()
    assert good.message == "hello from provider"
    bad = lab.run("shell_read_shadow")
    assert bad.status == "failed"
    assert "Permission denied" in bad.message
    assert "root:" not in everything_said(bad)


def test_a_provider_that_lingers_after_its_result_is_killed_and_its_result_stands(lab):
    result = lab.run("linger_after_result", result_grace_seconds=1)
    assert result.status == "succeeded", result.to_dict()
    assert result.message == "done (killed 1 s after its result: it did not exit)"
    assert result.duration < 60
    assert processes_of(result.protections["uid"]) == []


# --- devices -------------------------------------------------------------------------------


@pytest.fixture
def device_node():
    """A character device like /dev/null, group disk, mode 0660, made for this test only."""
    path = f"/dev/cloudboot-test-{os.getpid()}-{threading.get_ident() % 10000}"
    os.mknod(path, 0o660 | stat.S_IFCHR, os.makedev(1, 3))
    os.chown(path, 0, grp.getgrnam("disk").gr_gid)
    os.chmod(path, 0o660)
    yield path
    os.unlink(path)


def test_a_device_the_operator_did_not_grant_stays_closed(lab, device_node):
    result = lab.run("device_access", {"device": device_node}, devices=[device_node])
    blocked(result, errno.EACCES)
    assert result.protections["devices"] == []


def test_a_granted_device_opens_but_ioctl_needs_its_own_grant(lab, device_node):
    result = lab.run(
        "device_access",
        {"device": device_node},
        grants={"devices": {device_node: False}},
        devices=[device_node],
    )
    assert result.data.get("opened") is True, result.to_dict()
    assert result.data["errno"] == errno.EACCES  # Landlock's ioctl right (ABI 5)
    assert result.protections["devices"] == [device_node]


def test_a_granted_ioctl_reaches_the_driver(lab, device_node):
    result = lab.run(
        "device_access",
        {"device": device_node},
        grants={"devices": [device_node]},
        devices=[device_node],
    )
    assert result.data.get("opened") is True, result.to_dict()
    assert result.data["errno"] == errno.ENOTTY  # the null driver's own answer
