"""The mdadm provider's protocol and its refusals, on this machine, without md.

The build machines' kernel has no md driver, so arrays themselves are shown in a VM
(tests/test_mdadm_vm.py). Here the provider reads /proc/mdstat, mounts and swaps from
sample files the test writes (the module's MDSTAT, MOUNTS and SWAPS paths), so every
refusal that guards a disk is exercised: a member of an array, a mounted partition, swap,
a path that is no block device. Also: the provider as its own program through python3 -I.
"""

import importlib.util
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from providers import protocol

PROVIDER = Path(__file__).resolve().parent.parent / "providers" / "mdadm"
EMPTY = "Personalities : [raid1] [raid10] \nunused devices: <none>\n"


@pytest.fixture
def provider(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location(
        "mdadm_provider_under_test", PROVIDER / "provider.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    files = {"MDSTAT": "mdstat", "MOUNTS": "mounts", "SWAPS": "swaps", "SYS_BLOCK": "sys"}
    for attribute, name in files.items():
        monkeypatch.setattr(module, attribute, str(tmp_path / name))
    (tmp_path / "mdstat").write_text(EMPTY)
    (tmp_path / "mounts").write_text("proc /proc proc rw 0 0\n")
    (tmp_path / "swaps").write_text("Filename\tType\tSize\tUsed\tPriority\n")
    module.samples = tmp_path
    return module


def call(provider, capsys, action, params=None, raw=None):
    line = raw if raw is not None else json.dumps(protocol.make_request(action, params))
    assert provider.main(io.StringIO(line + "\n")) == 0
    parser = protocol.OutputParser()
    parser.feed(capsys.readouterr().out.encode())
    return parser.finish(), parser.events


def test_inventory_with_no_arrays(provider, capsys):
    result, events = call(provider, capsys, "inventory")
    assert result["status"] == "succeeded", result
    assert result["message"] == "0 md arrays"
    assert result["data"]["personalities"] == ["raid1", "raid10"]
    assert result["data"]["arrays"] == []
    assert events[0]["type"] == "progress"


def test_inventory_without_the_md_driver_says_so(provider, capsys):
    (provider.samples / "mdstat").unlink()
    result, _events = call(provider, capsys, "inventory")
    assert result["status"] == "failed"
    assert "does not exist: the md driver is not loaded (modprobe md_mod)" in result["message"]


def test_inventory_of_an_inactive_array_needs_no_mdadm(provider, capsys):
    (provider.samples / "mdstat").write_text(
        "Personalities : \nmd0 : inactive sdf[0](S)\n      2096128 blocks super 1.2\n\n"
        "unused devices: <none>\n"
    )
    result, _events = call(provider, capsys, "inventory")
    [array] = result["data"]["arrays"]
    assert (array["path"], array["active"], array["members"][0]["state"]) == (
        "/dev/md0",
        False,
        ["spare"],
    )


def test_garbage_mdstat_fails_with_what_arrived(provider, capsys):
    (provider.samples / "mdstat").write_text("Personalities : \nmd0 : exploded\n")
    result, _events = call(provider, capsys, "inventory")
    assert result["status"] == "failed"
    assert "md0 : exploded" in result["message"]


RAID1_ON_SDB1 = (
    "Personalities : [raid1] \n"
    "md127 : active raid1 sdc1[1] sdb1[0]\n"
    "      1024 blocks super 1.2 [2/2] [UU]\n\nunused devices: <none>\n"
)


@pytest.mark.parametrize(
    ("devices", "says"),
    [
        (["/dev/sdb", "/dev/sdx"], "/dev/sdb is in use: /dev/sdb1 is a member of /dev/md127"),
        (["/dev/sdx", "/dev/sdc1"], "/dev/sdc1 is in use: /dev/sdc1 is a member of /dev/md127"),
    ],
)
def test_a_member_of_a_running_array_is_refused(provider, capsys, devices, says):
    (provider.samples / "mdstat").write_text(RAID1_ON_SDB1)
    result, _events = call(
        provider, capsys, "create", {"level": 1, "devices": devices, "name": "x"}
    )
    assert result["status"] == "failed"
    assert result["message"] == says
    assert result["data"]["commands"] == []  # refused before mdadm ran at all


def test_a_mounted_partition_refuses_its_disk(provider, capsys):
    (provider.samples / "mounts").write_text("/dev/nvme0n1p2 /boot ext4 rw 0 0\n")
    params = {"level": 1, "devices": ["/dev/nvme0n1", "/dev/nvme1n1"], "name": "boot"}
    result, _events = call(provider, capsys, "create", params)
    assert result["message"] == "/dev/nvme0n1 is in use: /dev/nvme0n1p2 is mounted"


def test_swap_refuses_its_disk(provider, capsys):
    (provider.samples / "swaps").write_text(
        "Filename\tType\tSize\tUsed\tPriority\n/dev/sdd2  partition\t1048572\t0\t-2\n"
    )
    params = {
        "level": 10,
        "devices": ["/dev/sda", "/dev/sdb", "/dev/sdc", "/dev/sdd"],
        "name": "x",
    }
    result, _events = call(provider, capsys, "create", params)
    assert result["message"] == "/dev/sdd is in use: /dev/sdd2 is used as swap"


def test_a_similar_name_is_not_the_same_disk(provider, capsys):
    """sda10 is a partition of sda, but sdaa is another disk: neither may refuse sdab."""
    (provider.samples / "mounts").write_text("/dev/sdaa1 / ext4 rw 0 0\n")
    params = {"level": 1, "devices": ["/dev/sdab", "/dev/sdac"], "name": "x"}
    result, _events = call(provider, capsys, "create", params)
    assert result["message"] == "/dev/sdab: No such file or directory"


def test_a_disk_something_is_stacked_on_is_refused(provider, capsys):
    """An LVM physical volume on sde2: /sys/class/block/sde/sde2/holders/dm-0."""
    (provider.samples / "sys" / "sde" / "sde2" / "holders" / "dm-0").mkdir(parents=True)
    (provider.samples / "sys" / "sde" / "holders").mkdir()
    params = {"level": 1, "devices": ["/dev/sdf", "/dev/sde"], "name": "x"}
    result, _events = call(provider, capsys, "create", params)
    assert result["message"] == "/dev/sde is in use: held by sde2: dm-0"


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("sda", "sda", True), ("sda", "sda1", True), ("sda", "sda12", True),
        ("sda", "sdaa", False), ("sda", "sdaa1", False), ("nvme0n1", "nvme0n1p2", True),
        ("nvme0n1", "nvme0n12", False), ("/dev/vdb", "vdb3", True), ("vdb", "vdc", False),
    ],
)  # fmt: skip
def test_which_names_are_the_same_disk(provider, a, b, same):
    assert provider._same_disk(a, b) is same
    assert provider._same_disk(b, a) is same


def test_bad_params_fail_before_anything_is_read(provider, capsys):
    (provider.samples / "mdstat").unlink()
    result, _events = call(provider, capsys, "create", {"level": 1, "devices": ["/dev/sda"]})
    assert result["status"] == "failed"
    assert result["message"] == "RAID 1 needs at least 2 devices, got 1"


def test_delete_of_an_array_that_is_not_there(provider, capsys):
    result, _events = call(provider, capsys, "delete", {"array": "nothere"})
    assert (result["status"], result["message"]) == ("failed", "no array /dev/md/nothere")
    result, _events = call(provider, capsys, "delete", {"array": "/etc/passwd"})
    assert "array must be a name, /dev/md/NAME or /dev/mdN" in result["message"]


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("not json", "the request is not JSON"),
        ("[1, 2]", "must be an object with object params"),
        ('{"action": "inventory", "params": []}', "must be an object with object params"),
        ('{"action": "format_everything"}', "unknown action 'format_everything'"),
    ],
)
def test_bad_requests_get_one_failed_result(provider, capsys, raw, says):
    result, events = call(provider, capsys, None, raw=raw)
    assert result["status"] == "failed" and says in result["message"]
    assert [e["type"] for e in events] == ["result"]


def test_the_entry_point_runs_on_its_own_under_python3_isolated():
    """How the sandbox starts it: `python3 -I -B provider.py`, request on stdin."""
    request = json.dumps(protocol.make_request("delete", {"array": "/dev/md/gone"})) + "\n"
    done = subprocess.run(
        [sys.executable, "-I", "-B", str(PROVIDER / "provider.py")],
        input=request.encode(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    parser = protocol.OutputParser()
    parser.feed(done.stdout)
    result = parser.finish()
    assert done.returncode == 0 and done.stderr == b""
    assert (result["status"], result["message"]) == ("failed", "no array /dev/md/gone")
