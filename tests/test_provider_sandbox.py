"""The sandbox runner: what it reports, what it refuses, and what it cleans up."""

import logging
import os
import shutil
import threading

import pytest

from providers import manifest, protocol
from providers.sandbox import _kernel, limits, runner, seccomp
from tests.hostile.support import make_lab, processes_of, require_sandbox


@pytest.fixture(scope="module")
def lab():
    require_sandbox()
    made = make_lab()
    yield made
    shutil.rmtree(made.root, ignore_errors=True)


def test_every_protection_is_reported_in_force(lab):
    result = lab.run("well_behaved")
    assert result.status == "succeeded", result.to_dict()
    found = result.protections
    assert found["namespace_list"] == dict.fromkeys(["mount", "pid", "ipc", "uts", "net"], True)
    assert found["user_namespace"] is True
    assert found["no_new_privs"] is True
    assert found["landlock_abi"] == runner.probe()["landlock_abi"]
    assert found["landlock_fs"] and found["landlock_net"] and found["landlock_scope"]
    assert found["seccomp"] and found["seccomp_notify"]
    assert found["rlimits"] is True
    assert found["unprivileged"] is True and found["uid"] >= runner.UID_BASE
    assert result.limits["mechanism"] in ("cgroup v1", "cgroup v2")


def test_each_run_gets_its_own_uid(lab):
    first, second = lab.run("well_behaved"), lab.run("well_behaved")
    assert first.protections["uid"] != second.protections["uid"]


def test_the_run_leaves_no_work_directory_cgroup_or_process(lab):
    result = lab.run("well_behaved")
    assert os.listdir(lab.runtime) == []
    run_groups = [
        os.path.join(limits.CGROUP_ROOT, controller, limits.GROUP_PREFIX)
        for controller in ("memory", "pids", "cpu")
    ]
    for parent in run_groups:
        if os.path.isdir(parent):
            assert not any(name.startswith("well-behaved") for name in os.listdir(parent))
    assert processes_of(result.protections["uid"]) == []


def test_the_limit_mechanism_is_logged_once(lab, caplog):
    with caplog.at_level(logging.INFO, logger="providers.sandbox.limits"):
        lab.run("well_behaved")
    lines = [r.getMessage() for r in caplog.records if "resource limits by" in r.getMessage()]
    assert len(lines) == 1
    assert "cgroup v" in lines[0]


def test_without_cgroups_rlimits_still_hold(lab, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="providers.sandbox.limits"):
        result = lab.run("fork_bomb", cgroup_root=str(tmp_path / "no-cgroups"))
    assert result.limits["mechanism"] == "rlimits only"
    assert "resource limits by rlimits only" in caplog.text
    assert result.data["children"] < 16


def test_progress_events_reach_the_caller_as_they_come(lab):
    seen = []
    directory = lab.provider("well_behaved")
    found = manifest.load(directory)
    settings = runner.SandboxSettings(runtime_root=str(lab.runtime))
    result = runner.run(directory, found, protocol.make_request("x"), None, settings, seen.append)
    assert result.status == "succeeded"
    assert seen == [{"type": "progress", "percent": 50, "message": "halfway"}]


STRICTER = (*runner.DEFAULT_REQUIRED, "landlock_net", "landlock_scope")


def test_a_missing_required_protection_refuses_the_run(lab):
    # Debian 12's own kernel has Landlock ABI 2: no network rules and no scoping. An
    # operator who requires them gets a refusal there, not a quietly weaker sandbox.
    result = lab.run("well_behaved", required=STRICTER, landlock_abi_cap=2)
    assert (result.status, result.reason) == ("failed", "sandbox_setup_failed")
    assert "required protection missing: landlock_net, landlock_scope" in result.message
    assert result.events == []


def test_the_operator_can_allow_a_missing_protection(lab):
    result = lab.run("well_behaved", required=STRICTER, landlock_abi_cap=2, allow_missing=True)
    assert result.status == "succeeded"
    assert result.protections["landlock_net"] is False
    assert result.protections["landlock_abi"] == 2


def test_probe_reads_this_kernel():
    found = runner.probe()
    assert found["landlock_abi"] >= 0
    assert found["landlock_net"] == (found["landlock_abi"] >= 4)


# --- the seccomp program itself (no root needed) -------------------------------------------


@pytest.mark.skipif(not _kernel.syscall_table(), reason="architecture without a syscall table")
def test_the_filter_checks_the_architecture_first_and_names_every_refused_call():
    program = seccomp.build(network=False)
    assert program[0] == (seccomp.LD_W_ABS, 0, 0, seccomp.OFFSET_ARCH)
    assert program[1][3] == _kernel.audit_arch()
    compared = {k for code, _jt, _jf, k in program if code == seccomp.JEQ_K}
    table = _kernel.syscall_table()
    assert {table[name] for name in seccomp.REFUSED} <= compared
    assert len(program) < 4096  # BPF_MAXINSNS


@pytest.mark.skipif(not _kernel.syscall_table(), reason="architecture without a syscall table")
def test_network_grants_open_only_inet_families():
    closed = seccomp.build(network=False)
    opened = seccomp.build(network=True)
    families = {seccomp.AF_INET, seccomp.AF_INET6}
    assert len(opened) == len(closed) + 2
    assert families <= {k for code, _, _, k in opened if code == seccomp.JEQ_K}


def test_cancelling_kills_the_run(lab):
    directory = lab.provider("hang")
    found = manifest.load(directory)
    settings = runner.SandboxSettings(runtime_root=str(lab.runtime))
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    result = runner.run(directory, found, protocol.make_request("x"), None, settings, None, cancel)
    assert (result.status, result.reason) == ("failed", "cancelled")
    assert result.duration < found.limits.run_seconds
    assert processes_of(result.protections["uid"]) == []


def test_an_unusable_runtime_root_is_a_clear_failure(lab, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = lab.run("well_behaved", runtime_root=str(blocker / "runtime"))
    assert (result.status, result.reason) == ("failed", "sandbox_error")
    assert "cannot make a work directory under" in result.message


def test_a_missing_entry_point_is_a_clear_failure(lab):
    directory = lab.provider("well_behaved")
    os.remove(directory / "provider.py")
    result = lab.run_directory(directory)
    assert (result.status, result.reason) == ("failed", "protocol_violation")
    assert "exited with status 2" in result.message  # python3: can't open file
    assert "provider.py" in result.stderr


def test_a_granted_device_that_does_not_exist_stops_the_setup(lab):
    result = lab.run(
        "device_access",
        {"device": "/dev/cloudboot-absent"},
        grants={"devices": ["/dev/cloudboot-absent"]},
        devices=["/dev/cloudboot-absent"],
    )
    assert (result.status, result.reason) == ("failed", "sandbox_setup_failed")
    assert "/dev/cloudboot-absent" in result.message
