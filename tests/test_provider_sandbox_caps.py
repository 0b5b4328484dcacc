"""Capability grants: a provider granted CAP_SYS_ADMIN keeps every other restriction.

The manifest asks (capabilities.linux_capabilities), the operator grants (the runner's
grants["capabilities"]); only then does the run stay uid 0 in the host's user namespace,
with every other capability gone from all five sets. The hostile providers of
tests/hostile/ then try their escapes with the capability held: mount, module loading,
setns, keyrings, bpf, host files, the network. Runs on this machine (no md driver needed).
"""

import errno
import json
import os
import secrets
import shutil
import socket
import stat
import tempfile

import pytest

from providers import manifest, protocol
from providers.sandbox import runner
from tests.hostile.support import Lab, everything_said, require_sandbox

ADMIN = ["CAP_SYS_ADMIN"]
# An unattached loop device: opening it read-only touches no data.
LOOP = "/dev/loop7"

REPORT_PROVIDER = """import ctypes, json, os, sys
request = json.loads(sys.stdin.readline())
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
caps = {key: status[key].strip() for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}
try:
    os.mknod("node", 0o600 | 0o060000, os.makedev(8, 0))
    mknod = "made"
except OSError as exc:
    mknod = exc.errno
nodes = {}
for name, major, minor in request["params"].get("nodes", []):
    try:
        os.mknod(os.path.join("/tmp", name), 0o600 | 0o060000, os.makedev(major, minor))
        os.close(os.open(os.path.join("/tmp", name), os.O_RDONLY))
        nodes[name] = "opened"
    except OSError as exc:
        nodes[name] = exc.errno
written = None
target = request["params"].get("write_into")
if target:
    try:
        with open(os.path.join(target, "proof"), "w") as handle:
            handle.write("written")
        written = True
    except OSError as exc:
        written = exc.errno
data = {"uid": os.getuid(), "caps": caps, "mknod": mknod, "written": written, "nodes": nodes}
print(json.dumps({"type": "result", "status": "succeeded", "message": "ok", "data": data}))
"""


@pytest.fixture(scope="module")
def lab():
    require_sandbox()
    # Not under /tmp: a run with a capability grant gets a private /tmp of its own, which
    # the launcher leaves out when the package or work directory would be hidden by it.
    made = Lab(tempfile.mkdtemp(prefix="cloudboot-caps-", dir="/var/tmp"))
    yield made
    shutil.rmtree(made.root, ignore_errors=True)


def asking(lab, name, capabilities, paths=None):
    """A hostile provider's copy whose manifest asks for `capabilities` (and `paths`)."""
    directory = lab.provider(name)
    path = directory / "provider.json"
    document = json.loads(path.read_text())
    document["capabilities"]["linux_capabilities"] = capabilities
    if paths:
        document["capabilities"]["paths"] = paths
    path.write_text(json.dumps(document))
    return directory


def report_provider(lab, paths=None):
    # It reads its own /proc/self/status: a read rule the manifest asks for.
    paths = {"read": ["/proc"], **(paths or {})}
    directory = lab.packages / "capability-report"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(mode=0o755)
    os.chmod(directory, 0o755)
    document = {
        "schema": "cloudboot.provider/1", "name": "capability-report", "version": "1",
        "vendor": "test", "kind": "raid", "entry": "provider.py", "interpreter": "python3",
        "capabilities": {"linux_capabilities": ADMIN, "paths": paths},
    }  # fmt: skip
    (directory / "provider.json").write_text(json.dumps(document))
    (directory / "provider.py").write_text(REPORT_PROVIDER)
    for child in directory.iterdir():
        os.chmod(child, 0o644)
    return directory


def run(lab, directory, params=None, grants=None):
    found = manifest.load(directory)
    request = protocol.make_request("attack", params or {})
    return runner.run(
        directory, found, request, grants, runner.SandboxSettings(runtime_root=str(lab.runtime))
    )


def test_a_granted_capability_is_the_only_one_in_any_set(lab):
    result = run(lab, report_provider(lab), grants={"capabilities": ADMIN})
    assert result.status == "succeeded", result.to_dict()

    found = result.protections
    assert found["capabilities"] == ADMIN
    assert found["uid"] == 0 and found["user_namespace"] is False
    # CAP_MKNOD comes with the grant, held to the granted devices (the test below).
    sets = found["capability_sets"]
    held = ["CAP_SYS_ADMIN", "CAP_MKNOD"]
    assert sets["effective"] == sets["permitted"] == sets["bounding"] == held, sets
    assert sets["inheritable"] == [] and sets["ambient"] == []
    assert found["no_new_privs"] and found["seccomp"] and found["landlock_fs"], found
    assert found["namespace_list"] == dict.fromkeys(["mount", "pid", "ipc", "uts", "net"], True)

    # What the provider itself sees after execve, read from its own /proc/self/status.
    caps = result.data["caps"]
    held_bits = f"{1 << 21 | 1 << 27:016x}"
    assert (caps["CapEff"], caps["CapPrm"], caps["CapBnd"]) == (held_bits,) * 3, caps
    assert caps["CapInh"] == caps["CapAmb"] == "0" * 16
    assert result.data["uid"] == 0
    # No device node of its own making: Landlock refuses it, and CAP_MKNOD is gone anyway.
    assert result.data["mknod"] in (errno.EACCES, errno.EPERM)


@pytest.mark.skipif(not os.path.exists(LOOP), reason=f"{LOOP} is missing")
def test_device_nodes_can_be_made_only_for_granted_devices(lab):
    granted = os.stat(LOOP).st_rdev
    other = os.makedev(os.major(granted), (os.minor(granted) + 1) % 8)  # another loop device
    assert stat.S_ISBLK(os.stat(LOOP).st_mode)
    nodes = [
        ["granted", os.major(granted), os.minor(granted)],
        ["other", os.major(other), os.minor(other)],
        ["first-disk", 8, 0],
    ]
    directory = report_provider(lab)
    path = directory / "provider.json"
    document = json.loads(path.read_text())
    document["capabilities"]["devices"] = [{"path": LOOP, "ioctl": False}]
    path.write_text(json.dumps(document))

    grants = {"capabilities": ADMIN, "devices": [LOOP]}
    result = run(lab, directory, {"nodes": nodes}, grants)
    assert result.status == "succeeded", result.to_dict()
    assert result.protections["private_tmp"] is True
    assert result.data["nodes"] == {
        "granted": "opened",
        "other": errno.EPERM,
        "first-disk": errno.EPERM,
    }
    # Three refused: the two above and the work-directory node every run of it tries.
    assert [r["syscall"] for r in result.refusals].count("mknodat") == 3, result.refusals


def test_without_the_operators_grant_the_run_stays_unprivileged(lab):
    result = run(lab, report_provider(lab), grants={})
    assert result.status == "succeeded", result.to_dict()
    assert "capabilities" not in result.protections
    assert result.protections["uid"] >= runner.UID_BASE
    assert result.data["caps"]["CapEff"] == "0" * 16


def test_write_rules_come_with_the_grant_and_only_with_it(lab):
    target = f"/run/cloudboot-caps-test-{secrets.token_hex(4)}"
    paths = {"write": [target]}
    try:
        granted = run(
            lab, report_provider(lab, paths), {"write_into": target}, {"capabilities": ADMIN}
        )
        assert granted.data["written"] is True, granted.to_dict()
        with open(os.path.join(target, "proof")) as handle:
            assert handle.read() == "written"
        os.unlink(os.path.join(target, "proof"))

        refused = run(lab, report_provider(lab, paths), {"write_into": target}, {})
        assert refused.data["written"] in (errno.EACCES, errno.EPERM), refused.to_dict()
        assert not os.path.exists(os.path.join(target, "proof"))
    finally:
        shutil.rmtree(target, ignore_errors=True)


@pytest.mark.parametrize(
    "name, syscall",
    [
        ("mount_tmpfs", "mount"),
        ("load_module", "finit_module"),
        ("setns", "setns"),
        ("unshare_user", "unshare"),
        ("keyctl", "keyctl"),
        ("bpf", "bpf"),
        ("perf_event", "perf_event_open"),
        ("reboot", "reboot"),
    ],
)
def test_cap_sys_admin_does_not_reopen_refused_calls(lab, name, syscall):
    result = run(lab, asking(lab, name, ADMIN), {"nr": _syscalls()}, {"capabilities": ADMIN})
    assert result.protections["capabilities"] == ADMIN, result.to_dict()
    assert (result.status, result.reason) == ("failed", "provider_failed"), result.to_dict()
    assert result.data.get("errno") == errno.EPERM, result.to_dict()
    assert syscall in [r["syscall"] for r in result.refusals], result.refusals


@pytest.mark.parametrize("name", ["read_shadow", "read_master_key", "read_database"])
def test_host_files_stay_out_of_reach_with_the_capability(lab, name):
    params = {"nr": _syscalls(), "database": str(lab.database), "master_key": str(lab.master_key)}
    result = run(lab, asking(lab, name, ADMIN), params, {"capabilities": ADMIN})
    assert result.protections["capabilities"] == ADMIN
    assert result.status == "failed", result.to_dict()
    assert result.data.get("errno") == errno.EACCES, result.to_dict()
    said = everything_said(result)
    assert "root:" not in said and "SECRET" not in said


def test_the_network_stays_closed_with_the_capability(lab):
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.5)
    try:
        params = {"nr": _syscalls(), "port": server.getsockname()[1]}
        directory = asking(lab, "connect_loopback", ADMIN)
        result = run(lab, directory, params, {"capabilities": ADMIN})
        assert result.status == "failed" and result.data.get("errno") == errno.EPERM
        assert "socket" in [r["syscall"] for r in result.refusals]
        with pytest.raises(TimeoutError):
            server.accept()
    finally:
        server.close()


@pytest.mark.parametrize(
    "capabilities, paths, complaint",
    [
        (["CAP_NET_ADMIN"], {}, "linux_capabilities: expected one of"),
        (["CAP_SYS_ADMIN", "CAP_SYS_ADMIN"], {}, "listed twice"),
        ([], {"read": ["/etc/shadow"]}, "paths.read[0]: expected a path under"),
        ([], {"read": ["/dev/sda"]}, "paths.read[0]: expected a path under"),
        ([], {"write": ["/sys/power/state"]}, "paths.write[0]: expected a path under"),
        ([], {"write": ["/run/../etc"]}, "paths.write[0]"),
        ([], {"exec": ["/run/x"]}, "unknown key"),
    ],
)
def test_the_manifest_asks_only_from_the_allow_lists(capabilities, paths, complaint):
    document = {
        "schema": "cloudboot.provider/1", "name": "asks", "version": "1", "vendor": "t",
        "kind": "raid", "entry": "p.py",
        "capabilities": {"linux_capabilities": capabilities, "paths": paths},
    }  # fmt: skip
    with pytest.raises(manifest.ManifestError, match=complaint.replace("[", r"\[")):
        manifest.from_dict(document)


def test_the_canonical_manifest_keeps_what_was_asked():
    document = {
        "schema": "cloudboot.provider/1", "name": "asks", "version": "1", "vendor": "t",
        "kind": "raid", "entry": "p.py",
        "capabilities": {
            "linux_capabilities": ADMIN,
            "paths": {"read": ["/proc/mdstat"], "write": ["/dev/md"]},
        },
    }  # fmt: skip
    again = manifest.parse(manifest.from_dict(document).to_json())
    assert again.linux_capabilities == ("CAP_SYS_ADMIN",)
    assert (again.read_paths, again.write_paths) == (("/proc/mdstat",), ("/dev/md",))


def _syscalls():
    from providers.sandbox import _kernel

    return _kernel.syscall_table()
