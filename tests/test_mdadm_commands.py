"""providers/mdadm/mdadm_commands.py: every refusal before mdadm runs, and the exact lines."""

import time

import pytest

from providers.mdadm import mdadm_commands as commands


def test_raid1_command_line():
    params = {"level": 1, "devices": ["/dev/vdb", "/dev/vdc"], "name": "mirror"}
    assert commands.create(params) == [
        "--create", "/dev/md/mirror", "--level=1", "--raid-devices=2", "--metadata=1.2",
        "--run", "--force", "--homehost=any", "/dev/vdb", "/dev/vdc",
    ]  # fmt: skip


def test_raid10_keeps_the_order_given_and_spells_out_the_layout():
    devices = ["/dev/sdd", "/dev/sda", "/dev/nvme0n1", "/dev/nvme1n1p2"]
    words = commands.create({"level": 10, "devices": devices, "name": "data_0"})
    assert words[:4] == ["--create", "/dev/md/data_0", "--level=10", "--raid-devices=4"]
    assert "--layout=n2" in words
    assert words[-4:] == devices  # md pairs neighbours into mirrors, so order is kept


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"level": 5, "devices": ["/dev/sda", "/dev/sdb", "/dev/sdc"]}, "level must be 1 or 10"),
        ({"level": "1", "devices": ["/dev/sda", "/dev/sdb"]}, "level must be 1 or 10"),
        ({"level": True, "devices": ["/dev/sda", "/dev/sdb"]}, "level must be 1 or 10"),
        ({"level": 1, "devices": ["/dev/sda"]}, "RAID 1 needs at least 2 devices, got 1"),
        ({"level": 10, "devices": ["/dev/sda", "/dev/sdb"]}, "at least 4 devices, got 2"),
        (
            {"level": 10, "devices": [f"/dev/sd{c}" for c in "abcde"]},
            "even number of devices, got 5",
        ),
        ({"level": 1, "devices": ["/dev/sda", "/dev/sda"]}, "listed twice"),
        ({"level": 1, "devices": "/dev/sda /dev/sdb"}, "non-empty list"),
        ({"level": 1, "devices": []}, "non-empty list"),
        ({"level": 1, "devices": ["/dev/sda", "/dev/../etc/shadow"]}, "disk or partition"),
        ({"level": 1, "devices": ["/dev/sda", "sdb"]}, "disk or partition"),
        ({"level": 1, "devices": ["/dev/sda", "/dev/md127"]}, "disk or partition"),
        ({"level": 1, "devices": ["/dev/sda", "/dev/sdb;reboot"]}, "disk or partition"),
        ({"level": 1, "devices": ["/dev/sda", 7]}, "disk or partition"),
    ],
)
def test_bad_create_params_are_refused_with_the_rule(params, says):
    with pytest.raises(commands.CommandError, match=says.replace("(", r"\(")):
        commands.create({"name": "ok", **params})


@pytest.mark.parametrize("name", [None, "", "a b", "../x", "-x" * 9, "x" * 17, "naïve", 3])
def test_bad_names_are_refused(name):
    with pytest.raises(commands.CommandError, match="name must be"):
        commands.create({"level": 1, "devices": ["/dev/sda", "/dev/sdb"], "name": name})


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ("mirror", "/dev/md/mirror"),
        ("/dev/md/mirror", "/dev/md/mirror"),
        ("/dev/md127", "/dev/md127"),
    ],
)
def test_array_names_and_paths(value, path):
    assert commands.array(value) == path


@pytest.mark.parametrize("value", [None, "", "/dev/sda", "/dev/md/../sda", "/dev/md", 127])
def test_bad_arrays_are_refused(value):
    with pytest.raises(commands.CommandError, match="array must be"):
        commands.array(value)


def test_teardown_lines():
    assert commands.stop("/dev/md127") == ["--stop", "/dev/md127"]
    assert commands.zero_superblock("/dev/vdb") == ["--zero-superblock", "/dev/vdb"]
    assert commands.detail("/dev/md127") == ["--detail", "--export", "/dev/md127"]
    assert commands.examine("/dev/vdb") == ["--examine", "--export", "/dev/vdb"]


def test_find_mdadm_prefers_usr_sbin():
    assert commands.find_mdadm(lambda p: True) == "/usr/sbin/mdadm"
    assert commands.find_mdadm(lambda p: p == "/sbin/mdadm") == "/sbin/mdadm"
    assert commands.find_mdadm(lambda p: False) is None


def test_run_has_a_timeout_and_never_a_shell(tmp_path):
    slow = tmp_path / "mdadm"
    # A child of mdadm's own (here: sleep) must not keep the call waiting past its timeout.
    slow.write_text("#!/bin/sh\nsleep 30\n")
    slow.chmod(0o755)
    started = time.monotonic()
    with pytest.raises(commands.CommandError, match="no answer in 0.2 s"):
        commands.run(str(slow), ["--detail", "/dev/md0"], timeout=0.2)
    assert time.monotonic() - started < 10
    with pytest.raises(commands.CommandError, match="cannot run"):
        commands.run(str(tmp_path / "missing"), ["--detail"])
    echo = tmp_path / "echo"
    echo.write_text('#!/bin/sh\nprintf "%s|" "$@"; echo oops >&2; exit 3\n')
    echo.chmod(0o755)
    out = commands.run(str(echo), ["--stop", "/dev/md0; reboot"])
    assert (out.exit_code, out.stdout, out.stderr) == (3, "--stop|/dev/md0; reboot|", "oops\n")
