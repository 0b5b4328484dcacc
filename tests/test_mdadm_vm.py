"""The mdadm provider inside a BootOS VM: RAID 1 and 10, in the sandbox and as root, torn down.

The build machines' kernel has no md driver, so only a VM can show an array. The test boots
the built BootOS kernel and initramfs under QEMU (TCG, no network device) with four sparse
virtio disks and an extra initramfs layer whose /init loads md_mod, raid1 and raid10 and
runs tests/mdadm_in_vm.py, which prints one result line on the serial console. What is
asserted is what an operator would check: /proc/mdstat as the kernel prints it, and the
provider's own inventory. It skips when no BootOS build is present.
"""

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from tests import bootos_vm
from tests.bootos_vm import BOOTOS, newc
from tests.mdadm_in_vm import MARKER

REPO = Path(__file__).resolve().parent.parent
DISK_BYTES = 64 << 20
BOOT_TIMEOUT = 170  # the whole VM run must stay under three minutes
INIT = """#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
modprobe virtio_pci; modprobe virtio_blk
modprobe md_mod; modprobe raid1; modprobe raid10
/usr/bin/python3 /mdadm/in_vm.py
echo CLOUDBOOT-MDADM-DONE
poweroff -f
"""


def layer():
    entries, seen = [("init", 0o100755, INIT.encode())], set()

    def add(name, data):
        for parent in list(Path(name).parents)[::-1][1:]:
            if str(parent) not in seen:
                seen.add(str(parent))
                entries.append((str(parent), 0o040755, None))
        entries.append((name, 0o100644, data))

    for path in sorted((REPO / "providers").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix in (".py", ".json"):
            add(f"mdadm/repo/{path.relative_to(REPO)}", path.read_bytes())
    add("mdadm/in_vm.py", (REPO / "tests" / "mdadm_in_vm.py").read_bytes())
    return newc(entries)


def boot(workdir):
    disks = []
    for index in range(4):
        disk = workdir / f"disk{index}.img"
        with open(disk, "wb") as handle:
            handle.truncate(DISK_BYTES)  # sparse: nothing is written until md writes
        disks.append(disk)
    return bootos_vm.boot(workdir, layer(), MARKER, disks=disks, timeout=BOOT_TIMEOUT)


@pytest.fixture(scope="module")
def vm(tmp_path_factory):
    if os.geteuid() != 0 or shutil.which("qemu-system-x86_64") is None:
        pytest.skip("needs root and qemu-system-x86_64")
    if not (BOOTOS / "vmlinuz").exists() or not (BOOTOS / "initrd.img").exists():
        pytest.skip(f"no BootOS build in {BOOTOS} (python3 build.py bootos)")
    workdir = tmp_path_factory.mktemp("mdadm-vm")
    report, seconds = boot(workdir)
    report["seconds"] = round(seconds)
    (workdir / "report.json").write_text(json.dumps(report, indent=2))
    assert "error" not in report, report
    return report["steps"]


def arrays_in(text):
    """(device, state, level, members) per array line of /proc/mdstat, read by regex here so
    the assertions do not lean on the parser under test."""
    found = []
    for line in text.splitlines():
        match = re.match(r"^(md\d+) : (active|inactive) (raid\d+) (.*)$", line)
        if match:
            members = sorted(re.sub(r"\[\d+\].*$", "", w) for w in match.group(4).split())
            found.append((match.group(1), match.group(2), match.group(3), members))
    return found


@pytest.mark.vm
def test_raid1_on_two_disks_shows_in_mdstat(vm):
    step = vm["create_raid1"]
    assert step["status"] == "succeeded", step
    [(device, state, level, members)] = arrays_in(step["mdstat"])
    assert (state, level, members) == ("active", "raid1", ["vda", "vdb"])
    assert re.search(r"\[2/2\] \[UU\]", step["mdstat"]), step["mdstat"]
    assert step["data"]["array"]["device"] == device
    assert "--level=1 --raid-devices=2 --metadata=1.2" in step["data"]["commands"][-2]


@pytest.mark.vm
def test_inventory_reports_the_raid1_array_and_its_members(vm):
    step = vm["inventory_raid1"]
    assert step["status"] == "succeeded", step
    [array] = step["data"]["arrays"]
    assert array["level"] == "raid1" and array["active"] and array["name"] == "mirror"
    assert sorted(m["path"] for m in array["members"]) == ["/dev/vda", "/dev/vdb"]
    assert array["raid_disks"] == 2 and not array["degraded"]
    assert re.fullmatch(r"[0-9a-f]{8}(:[0-9a-f]{8}){3}", array["uuid"]), array["uuid"]


@pytest.mark.vm
def test_a_disk_already_in_an_array_is_refused(vm):
    step = vm["create_on_member"]
    assert step["status"] == "failed"
    assert "/dev/vdb is in use" in step["message"] and "member of /dev/md" in step["message"]
    assert len(arrays_in(step["mdstat"])) == 1  # the mirror, nothing new
    assert not any("--create" in c for c in step["data"]["commands"])


@pytest.mark.vm
def test_delete_stops_the_array_and_zeroes_its_members(vm):
    step = vm["delete_raid1"]
    assert step["status"] == "succeeded", step
    assert arrays_in(step["mdstat"]) == []
    assert sorted(step["data"]["zeroed"]) == ["/dev/vda", "/dev/vdb"]
    examined = vm["raw_examine_zeroed"]
    assert examined["exit"] != 0 and "No md superblock" in examined["stderr"], examined


@pytest.mark.vm
def test_raid10_on_four_disks_shows_in_mdstat_and_inventory(vm):
    step = vm["create_raid10"]
    assert step["status"] == "succeeded", step
    [(_device, state, level, members)] = arrays_in(step["mdstat"])
    assert (state, level, members) == ("active", "raid10", ["vda", "vdb", "vdc", "vdd"])
    assert "2 near-copies [4/4] [UUUU]" in step["mdstat"]

    [array] = vm["inventory_raid10"]["data"]["arrays"]
    assert (array["level"], array["layout"], array["name"]) == ("raid10", "near2", "stripe")
    assert len(array["members"]) == 4 and array["active"]


@pytest.mark.vm
def test_raid10_delete_leaves_no_array(vm):
    assert vm["delete_raid10"]["status"] == "succeeded", vm["delete_raid10"]
    assert arrays_in(vm["delete_raid10"]["mdstat"]) == []
    after = vm["inventory_after"]
    assert after["status"] == "succeeded" and after["data"]["arrays"] == []


@pytest.mark.vm
def test_without_the_capability_grant_mdadm_refuses_in_the_sandbox(vm):
    """Disks granted but not CAP_SYS_ADMIN: the run is an unprivileged uid and mdadm says
    so itself. Nothing may be created."""
    step = vm["sandbox_create_ungranted"]
    assert step["reason"] == "provider_failed", step
    assert "must be super-user" in step["message"], step
    assert step["protections"]["uid"] != 0 and "capabilities" not in step["protections"]
    assert arrays_in(step["mdstat"]) == []


@pytest.mark.vm
def test_create_through_the_sandbox(vm):
    """With CAP_SYS_ADMIN granted: uid 0 with that capability (and CAP_MKNOD, held to the
    granted devices) only, seccomp and Landlock on, and the array shows in /proc/mdstat."""
    step = vm["sandbox_create"]
    assert step["status"] == "succeeded", step["message"]
    [(device, state, level, members)] = arrays_in(step["mdstat"])
    assert (state, level, members) == ("active", "raid1", ["vda", "vdb"])
    assert step["data"]["array"]["device"] == device

    found = step["protections"]
    assert found["capabilities"] == ["CAP_SYS_ADMIN"] and found["uid"] == 0
    assert found["capability_sets"]["effective"] == ["CAP_SYS_ADMIN", "CAP_MKNOD"]
    assert found["capability_sets"]["bounding"] == ["CAP_SYS_ADMIN", "CAP_MKNOD"]
    assert found["seccomp"] and found["landlock_fs"] and found["no_new_privs"], found
    assert all(found["namespace_list"].values()), found


@pytest.mark.vm
def test_inventory_and_delete_through_the_sandbox(vm):
    [array] = vm["sandbox_inventory"]["data"]["arrays"]
    assert (array["name"], array["level"], array["active"]) == ("sandboxed", "raid1", True)
    step = vm["sandbox_delete"]
    assert step["status"] == "succeeded", step["message"]
    assert arrays_in(step["mdstat"]) == []
