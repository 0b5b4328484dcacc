"""Golden tests for providers/mdadm/mdstat.py: /proc/mdstat and mdadm --export text.

The first samples were captured in the BootOS VM of tests/test_mdadm_vm.py (Debian 12's
kernel 6.1 and mdadm 4.2); the others are the other shapes md.c's md_seq_show prints:
degraded, faulty and spare members, an inactive array, read-only states, a bitmap line,
recovery and delayed resync, partitions and NVMe namespaces as members.
"""

import re

import pytest

from providers.mdadm import mdstat

# Written out line by line: md.c ends the Personalities line and the blank line after
# each array with spaces, and those bytes are part of the format.
RAID1_RESYNCING = (
    "Personalities : [raid1] [raid10] \n"
    "md127 : active raid1 vdb[1] vda[0]\n"
    "      64512 blocks super 1.2 [2/2] [UU]\n"
    "      [============>........]  resync = 62.9% (40960/64512) finish=0.0min "
    "speed=40960K/sec\n"
    "      \n"
    "unused devices: <none>\n"
)

RAID10 = (
    "Personalities : [raid1] [raid10] \n"
    "md126 : active raid10 vdd[3] vdc[2] vdb[1] vda[0]\n"
    "      126976 blocks super 1.2 512K chunks 2 near-copies [4/4] [UUUU]\n"
    "      \n"
    "unused devices: <none>\n"
)

EMPTY = "Personalities : [raid1] [raid10] \nunused devices: <none>\n"

MIXED = (
    "Personalities : [linear] [raid0] [raid1] [raid10] [raid6] [raid5] [raid4] \n"
    "md2 : active raid1 nvme1n1p2[1](F) nvme0n1p2[0]\n"
    "      488253440 blocks super 1.2 [2/1] [U_]\n"
    "      bitmap: 3/4 pages [12KB], 65536KB chunk\n"
    "\n"
    "md1 : active (auto-read-only) raid10 sdd1[3] sdc1[2](S) sdb1[1] sda1[0] sde1[4](W)\n"
    "      1953260544 blocks super 1.2 512K chunks 2 far-copies [4/3] [UU_U]\n"
    "      [>....................]  recovery =  2.1% (20537856/976630272) "
    "finish=80.2min speed=198588K/sec\n"
    "      resync=DELAYED\n"
    "\n"
    "md0 : inactive sdf[0](S) sdg[1](S)\n"
    "      2096128 blocks super 1.2\n"
    "\n"
    "md3 : active (read-only) raid1 sdh[0] sdi[1]\n"
    "      1048512 blocks [2/2] [UU]\n"
    "      resync=PENDING\n"
    "\n"
    "unused devices: sdj sdk\n"
)

DETAIL_EXPORT = """\
MD_LEVEL=raid1
MD_DEVICES=2
MD_METADATA=1.2
MD_UUID=5861a379:fb306452:e1ab6103:e9a43d10
MD_DEVNAME=mirror
MD_NAME=any:mirror
MD_DEVICE_dev_vda_ROLE=0
MD_DEVICE_dev_vda_DEV=/dev/vda
MD_DEVICE_dev_vdb_ROLE=1
MD_DEVICE_dev_vdb_DEV=/dev/vdb
"""

EXAMINE_EXPORT = """\
MD_LEVEL=raid1
MD_DEVICES=2
MD_NAME=any:mirror
MD_ARRAY_SIZE=66.06MB
MD_UUID=5861a379:fb306452:e1ab6103:e9a43d10
MD_UPDATE_TIME=1796406032
MD_DEV_UUID=8d845938:8e2ab14d:c36337e3:8502eaa2
MD_EVENTS=17
"""


def test_raid1_while_it_resyncs():
    found = mdstat.parse_mdstat(RAID1_RESYNCING)
    assert found["personalities"] == ["raid1", "raid10"]
    [array] = found["arrays"]
    assert array["device"] == "md127" and array["path"] == "/dev/md127"
    assert array["active"] is True and array["read_only"] is None
    assert array["level"] == "raid1"
    assert [(m["path"], m["slot"], m["state"]) for m in array["members"]] == [
        ("/dev/vdb", 1, ["in_sync"]),
        ("/dev/vda", 0, ["in_sync"]),
    ]
    assert (array["blocks"], array["size_bytes"], array["metadata"]) == (64512, 66060288, "1.2")
    assert (array["raid_disks"], array["working_disks"], array["slots"]) == (2, 2, "UU")
    assert array["degraded"] is False
    assert array["sync"] == {"action": "resync", "percent": 62.9, "state": "running"}
    assert found["unused"] == []


def test_raid10_chunk_and_layout():
    [array] = mdstat.parse_mdstat(RAID10)["arrays"]
    assert array["level"] == "raid10"
    assert [m["device"] for m in array["members"]] == ["vdd", "vdc", "vdb", "vda"]
    assert (array["chunk_kb"], array["layout"]) == (512, "near2")
    assert (array["raid_disks"], array["slots"], array["sync"]) == (4, "UUUU", None)


def test_no_arrays():
    assert mdstat.parse_mdstat(EMPTY) == {
        "personalities": ["raid1", "raid10"],
        "arrays": [],
        "unused": [],
    }


def test_degraded_faulty_spare_inactive_and_read_only():
    arrays = {a["device"]: a for a in mdstat.parse_mdstat(MIXED)["arrays"]}
    assert list(arrays) == ["md2", "md1", "md0", "md3"]

    md2 = arrays["md2"]
    assert md2["degraded"] is True and md2["slots"] == "U_" and md2["working_disks"] == 1
    assert md2["members"][0] == {
        "device": "nvme1n1p2",
        "path": "/dev/nvme1n1p2",
        "slot": 1,
        "state": ["faulty"],
    }

    md1 = arrays["md1"]
    assert md1["read_only"] == "auto-read-only" and md1["layout"] == "far2"
    states = {m["device"]: m["state"] for m in md1["members"]}
    assert states["sdc1"] == ["spare"] and states["sde1"] == ["write_mostly"]
    # The recovery line comes first; the later "resync=DELAYED" line is about another
    # pass, and the last line read wins.
    assert md1["sync"] == {"action": "resync", "percent": None, "state": "DELAYED"}

    md0 = arrays["md0"]
    assert md0["active"] is False and md0["level"] is None
    assert [m["state"] for m in md0["members"]] == [["spare"], ["spare"]]
    assert md0["raid_disks"] is None and md0["blocks"] == 2096128

    md3 = arrays["md3"]
    assert md3["read_only"] == "read-only" and md3["metadata"] is None
    assert md3["sync"]["state"] == "PENDING"


def test_recovery_percent():
    text = MIXED.replace("      resync=DELAYED\n", "")
    md1 = mdstat.parse_mdstat(text)["arrays"][1]
    assert md1["sync"] == {"action": "recovery", "percent": 2.1, "state": "running"}


def test_unused_devices():
    assert mdstat.parse_mdstat(MIXED)["unused"] == ["sdj", "sdk"]


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("", "no Personalities line"),
        ("garbage\n", "garbage"),
        ("Personalities : []\nmd0 : broken raid1 sda[0]\n", "md0 : broken raid1"),
        ("Personalities : [raid1]\nmd0 : active raid1 sda{0}\n", "sda{0}"),
        ("Personalities : [raid1]\nmd0 :\n", "md0 :"),
    ],
)
def test_not_mdstat_is_a_clear_error(text, quoted):
    with pytest.raises(mdstat.MdstatError, match=re.escape(quoted)):
        mdstat.parse_mdstat(text)


def test_trailing_junk_lines_are_ignored_outside_an_array():
    found = mdstat.parse_mdstat(RAID10 + "\nsomething the kernel may add later\n")
    assert len(found["arrays"]) == 1


def test_detail_export_with_members():
    export = mdstat.parse_export(DETAIL_EXPORT)
    assert export["MD_LEVEL"] == "raid1" and export["MD_METADATA"] == "1.2"
    assert export["members"] == [
        {"device": "/dev/vda", "role": "0"},
        {"device": "/dev/vdb", "role": "1"},
    ]
    assert mdstat.array_name(export) == "mirror"


def test_examine_export_name_without_the_home_host():
    export = mdstat.parse_export(EXAMINE_EXPORT)
    assert export["MD_UUID"] == "5861a379:fb306452:e1ab6103:e9a43d10"
    assert export["members"] == []
    assert mdstat.array_name(export) == "mirror"
    assert mdstat.array_name({"MD_NAME": "bootos:data"}) == "data"
    assert mdstat.array_name({}) is None


@pytest.mark.parametrize("text", ["", "\n\n", "mdadm: No md superblock detected on /dev/vda.\n"])
def test_export_that_is_not_key_value(text):
    with pytest.raises(mdstat.MdstatError):
        mdstat.parse_export(text)


def test_mounted_and_swap_sources():
    mounts = (
        "proc /proc proc rw 0 0\n"
        "/dev/vda1 / ext4 rw,relatime 0 0\n"
        "/dev/disk/by-label/my\\040data /data xfs rw 0 0\n"
    )
    assert mdstat.mounted_sources(mounts) == {"/dev/vda1", "/dev/disk/by-label/my data"}
    swaps = (
        "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
        "/dev/sdb2                               partition\t1048572\t\t0\t\t-2\n"
    )
    assert mdstat.swap_sources(swaps) == {"/dev/sdb2"}
    assert mdstat.swap_sources(swaps.splitlines()[0]) == set()
