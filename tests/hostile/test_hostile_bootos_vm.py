"""A subset of the hostile providers inside a BootOS VM: what holds on the BootOS kernel.

BootOS runs Debian 12's kernel, not the build machines' one, so Landlock's ABI, cgroups
and seccomp notifications may differ there. The test boots the built BootOS kernel and
initramfs under QEMU (TCG, no network device at all) with an extra initramfs layer whose
/init runs tests/hostile/in_vm.py, reads the one result line from the serial console, and
checks that every escape failed: either the run was refused for a missing protection, or
the provider ran and its attempt was stopped. It skips when no BootOS build is present.
"""

import json
import os
import shutil
from pathlib import Path

import pytest

from tests import bootos_vm
from tests.bootos_vm import BOOTOS, newc
from tests.hostile.in_vm import MARKER
from tests.hostile.support import PROVIDERS

REPO = Path(__file__).resolve().parent.parent.parent
SUBSET = [
    "read_shadow", "read_database", "symlink_escape", "write_outside", "proc_root",
    "ptrace_parent", "mount_tmpfs", "unshare_user", "keyctl", "io_uring", "load_module",
    "clock_settime", "connect_loopback", "raw_socket", "fork_bomb", "garbage",
    "well_behaved",
]  # fmt: skip
INIT = """#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
/usr/bin/python3 /hostile/in_vm.py
echo CLOUDBOOT-HOSTILE-DONE
poweroff -f
"""


def layer():
    entries, seen = [], set()

    def add_tree(source, target, pattern="*"):
        for path in sorted(source.rglob(pattern)):
            if "__pycache__" in path.parts or not path.is_file():
                continue
            name = f"{target}/{path.relative_to(source)}"
            for parent in list(Path(name).parents)[::-1][1:]:
                if str(parent) not in seen:
                    seen.add(str(parent))
                    entries.append((str(parent), 0o040755, None))
            mode = 0o100755 if path.stat().st_mode & 0o111 else 0o100644
            entries.append((name, mode, path.read_bytes()))

    entries.append(("init", 0o100755, INIT.encode()))
    add_tree(REPO / "providers", "hostile/repo/providers", "*.py")
    for name in SUBSET:
        add_tree(PROVIDERS / name, f"hostile/providers/{name}")
    entries.append(
        ("hostile/in_vm.py", 0o100644, (Path(__file__).parent / "in_vm.py").read_bytes())
    )
    return newc(entries)


@pytest.fixture(scope="module")
def vm_report(tmp_path_factory):
    if os.geteuid() != 0 or shutil.which("qemu-system-x86_64") is None:
        pytest.skip("needs root and qemu-system-x86_64")
    if not (BOOTOS / "vmlinuz").exists() or not (BOOTOS / "initrd.img").exists():
        pytest.skip(f"no BootOS build in {BOOTOS} (python3 build.py bootos)")
    workdir = tmp_path_factory.mktemp("bootos-hostile")
    report, seconds = bootos_vm.boot(workdir, layer(), MARKER)
    report["seconds"] = round(seconds)
    (workdir / "report.json").write_text(json.dumps(report, indent=2))
    return report


SECCOMP = {
    "ptrace_parent": "ptrace", "mount_tmpfs": "mount", "unshare_user": "unshare",
    "keyctl": "keyctl", "io_uring": "io_uring_setup", "load_module": "finit_module",
    "clock_settime": "clock_settime", "connect_loopback": "socket", "raw_socket": "socket",
}  # fmt: skip


@pytest.mark.vm
@pytest.mark.parametrize("name", [n for n in SUBSET if n != "well_behaved"])
def test_escapes_fail_on_the_bootos_kernel(vm_report, name):
    runs = vm_report["runs"][name]
    for label, run in runs.items():
        assert not run["leaked"] and not run["planted"], (label, run)
        refused = run["reason"] == "sandbox_setup_failed"
        stopped = run["status"] == "failed" and run["reason"] != "protocol_violation"
        if name == "garbage":
            stopped = run["reason"] == "protocol_violation"
        assert refused or stopped, (label, run)
        if name in SECCOMP and not refused and run["protections"]["seccomp_notify"]:
            assert SECCOMP[name] in run["refusals"], (label, run)


@pytest.mark.vm
def test_the_well_behaved_provider_runs_where_the_protections_are_there(vm_report):
    runs = vm_report["runs"]["well_behaved"]
    if runs["strict"]["reason"] == "sandbox_setup_failed":
        assert "required protection missing" in runs["strict"]["message"]
    else:
        assert runs["strict"]["status"] == "succeeded", runs["strict"]
    assert runs["allowed"]["status"] == "succeeded", runs["allowed"]
