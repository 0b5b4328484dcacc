"""storcli command lines built from request parameters, and the refusals before any tool runs."""

import os

import pytest

from providers.megaraid import storcli_commands as commands


def add_vd(**params):
    return " ".join(commands.add_vd({"controller": 0, **params}))


def test_raid10_gets_drives_per_span():
    line = add_vd(raid_level=10, drives=["252:0", "252:1", "252:2", "252:3"])
    assert line == "/c0 add vd type=raid10 drives=252:0-3 pdperarray=2 J"


def test_raid10_large_sets_stay_within_eight_spans():
    drives = [f"8:{slot}" for slot in range(24)]
    assert add_vd(raid_level=10, drives=drives).endswith("drives=8:0-23 pdperarray=4 J")
    assert "pdperarray=2" in add_vd(raid_level=10, drives=drives[:16])


@pytest.mark.parametrize("count", [1, 2, 3, 5, 7])
def test_raid10_refuses_odd_or_too_few_drives(count):
    with pytest.raises(commands.CommandError, match="RAID 10"):
        add_vd(raid_level=10, drives=[f"252:{slot}" for slot in range(count)])


def test_raid10_refuses_odd_drives_per_span():
    drives = [f"252:{slot}" for slot in range(6)]
    with pytest.raises(commands.CommandError, match="must be even"):
        add_vd(raid_level=10, drives=drives, drives_per_span=3)


def test_raid60_with_given_span():
    drives = [f"252:{slot}" for slot in range(8)]
    line = add_vd(raid_level=60, drives=drives, drives_per_span=4, strip_kb=256, name="data")
    assert line == "/c0 add vd type=raid60 name=data drives=252:0-7 pdperarray=4 strip=256 J"


def test_raid50_default_two_spans_and_refusal():
    drives = [f"252:{slot}" for slot in range(6)]
    assert "pdperarray=3" in add_vd(raid_level=50, drives=drives)
    with pytest.raises(commands.CommandError, match="drives_per_span"):
        add_vd(raid_level=50, drives=drives[:4])


def test_plain_levels_have_no_span_argument():
    assert add_vd(raid_level="1", drives=["35:12", "35:13"]) == (
        "/c0 add vd type=raid1 drives=35:12-13 J"
    )
    assert add_vd(raid_level=0, drives=["35:12"]) == "/c0 add vd type=raid0 drives=35:12 J"
    with pytest.raises(commands.CommandError, match="applies to RAID 10, 50 and 60"):
        add_vd(raid_level=1, drives=["35:12", "35:13"], drives_per_span=2)
    with pytest.raises(commands.CommandError, match="at least 3"):
        add_vd(raid_level=5, drives=["35:12", "35:13"])


def test_drive_list_keeps_order_and_enclosures():
    drives = ["252:0", "252:1", "252:5", "253:0", "253:1", "252:7"]
    assert commands.drives_argument(commands.parse_drives(drives)) == ("252:0-1,5,253:0-1,252:7")
    # Mirrors pair drives in the order given: a reordered list is not compressed.
    assert commands.drives_argument(commands.parse_drives(["1:3", "1:2"])) == "1:3,2"


@pytest.mark.parametrize(
    "params, field",
    [
        ({"raid_level": 7, "drives": ["1:1"]}, "raid_level"),
        ({"raid_level": 1, "drives": "1:1,1:2"}, "drives"),
        ({"raid_level": 1, "drives": ["1:1", "1:1"]}, "twice"),
        ({"raid_level": 1, "drives": ["1:1", "1;reboot"]}, "enclosure:slot"),
        ({"raid_level": 1, "drives": ["1:1", "e252:s1"]}, "enclosure:slot"),
        ({"raid_level": 1, "drives": ["1:1", "1:2"], "name": "a b"}, "name"),
        ({"raid_level": 1, "drives": ["1:1", "1:2"], "name": "x" * 16}, "name"),
        ({"raid_level": 1, "drives": ["1:1", "1:2"], "strip_kb": 48}, "strip_kb"),
        ({"raid_level": 1, "drives": ["1:1", "1:2"], "strip_kb": True}, "strip_kb"),
        ({"raid_level": 1, "drives": ["1:1", "1:2"], "controller": "0"}, "controller"),
        ({"raid_level": 1, "drives": ["1:1", "1:2"], "controller": True}, "controller"),
    ],
)
def test_bad_parameters_are_refused_with_the_field(params, field):
    with pytest.raises(commands.CommandError, match=field):
        commands.add_vd({"controller": 0, **params})


def test_delete_and_drive_commands():
    assert commands.delete_vd({"controller": 1, "vd": 239}) == ["/c1/v239", "del", "J"]
    assert commands.delete_vd({"controller": 0, "vd": 2, "force": True}) == [
        "/c0/v2",
        "del",
        "force",
        "J",
    ]
    with pytest.raises(commands.CommandError, match="vd"):
        commands.delete_vd({"controller": 0, "vd": "all"})
    lines = commands.drive_commands({"controller": 0, "drives": ["252:0", "252:1"]}, "jbod")
    assert lines == [["/c0/e252/s0", "set", "jbod", "J"], ["/c0/e252/s1", "set", "jbod", "J"]]


def test_find_tool_order_and_names(tmp_path):
    present = {"/opt/MegaRAID/perccli/perccli64", "/usr/sbin/storcli"}
    found = commands.find_tool(None, "/usr/bin:/usr/sbin", present.__contains__)
    assert found == commands.Tool("/usr/sbin/storcli", "storcli")

    found = commands.find_tool(None, "/usr/bin", present.__contains__)
    assert found == commands.Tool("/opt/MegaRAID/perccli/perccli64", "perccli64")

    package_tool = str(tmp_path / "bin" / "perccli")
    present.add(package_tool)
    found = commands.find_tool(str(tmp_path), "/usr/sbin", present.__contains__)
    assert found == commands.Tool(package_tool, "perccli")

    assert commands.find_tool(None, "", set().__contains__) is None


def test_find_tool_on_disk_needs_the_execute_bit(tmp_path):
    tool = tmp_path / "storcli64"
    tool.write_text("#!/bin/sh\n")
    os.chmod(tool, 0o644)
    assert commands.find_tool(None, str(tmp_path)) is None
    os.chmod(tool, 0o755)
    assert commands.find_tool(None, str(tmp_path)).path == str(tool)


def test_run_times_out_with_a_clear_error(tmp_path):
    slow = tmp_path / "storcli64"
    slow.write_text("#!/bin/sh\nsleep 30\n")
    os.chmod(slow, 0o755)
    tool = commands.Tool(str(slow), "storcli64")
    with pytest.raises(commands.CommandError, match="no answer in 0.5 s"):
        commands.run(tool, ["/c0", "show", "J"], timeout=0.5)
