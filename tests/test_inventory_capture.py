"""`capture DIR` then `inventory --root DIR` gives the document of the original."""

import json
import os
import subprocess
import sys

import pytest

from bootos.agent.capture import CaptureError, capture
from bootos.agent.inventory import cmd_capture, cmd_inventory, collect
from tests.conftest import REPO
from tests.inventory_builders import write_tree

LSBLK = "lsblk-J__name-kname-model-serial-rev-tran__sata-and-nvme.json"


def _symlinks_below(root):
    found = []
    for directory, names, files in os.walk(root):
        found += [n for n in names + files if os.path.islink(os.path.join(directory, n))]
    return found


def test_live_system_round_trip(tmp_path):
    dest = tmp_path / "capture"
    capture(str(dest))

    live = collect("/")
    captured = collect(str(dest))
    assert captured == live
    assert _symlinks_below(dest) == []
    assert (dest / "cloudboot-capture" / "links.json").is_file()
    # This build machine has /proc/cpuinfo and a block device at least.
    assert live["cpus"] and live["disks"]


@pytest.fixture
def corpus_tree(tmp_path, corpus):
    """A machine made from corpus values: a Dell R740's dmidecode output, the
    lsblk capture's first SATA disk in sysfs, and lsblk's own output."""
    lsblk = (corpus / "lsblk-lshw" / LSBLK).read_bytes()
    dmidecode = (corpus / "dmi" / "dell-poweredge-r740.dmidecode.txt").read_bytes()
    sda = "../devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sda"
    nic = "../../devices/pci0000:00/0000:00:1c.0/0000:01:00.0/net/eno1"
    links = {
        "sys/block/sda": sda,
        "sys/block/sda/device": "../../../0:0:0:0",
        "sys/class/net/eno1": nic,
        "sys/class/net/eno1/device": "../../../0000:01:00.0",
        "sys/class/net/eno1/device/driver": "../../../../bus/pci/drivers/bnxt_en",
        "sys/class/net/lo": "../../devices/virtual/net/lo",
    }
    files = {
        "sys/block/sda/size": b"468862128\n",
        "sys/block/sda/queue/rotational": b"0\n",
        "sys/block/sda/device/model": b"MTFDDAV240TDU   \n",
        "sys/class/net/eno1/address": b"b0:26:28:00:00:01\n",
        "sys/class/net/eno1/addr_assign_type": b"0\n",
        "proc/cpuinfo": b"processor\t: 0\nvendor_id\t: GenuineIntel\n\n",
        "cloudboot-capture/tools/lsblk.txt": lsblk,
        "cloudboot-capture/tools/dmidecode.txt": dmidecode,
    }
    root = tmp_path / "machine"
    write_tree(root, files, links)
    return root


def test_synthetic_tree_round_trip(corpus_tree, tmp_path):
    dest = tmp_path / "capture"
    capture(str(dest), root=str(corpus_tree))

    original = collect(str(corpus_tree))
    assert collect(str(dest)) == original
    assert _symlinks_below(dest) == []

    assert original["system"]["product"] == "PowerEdge R740"
    assert len(original["cpus"]) == 2  # from SMBIOS, not the one-CPU cpuinfo
    assert original["disks"][0]["serial"] == "PLCH00000001"  # from lsblk
    assert original["disks"][0]["by_path"] == "pci-0000:00:17.0-ata-1"
    assert original["nics"][0]["driver"] == "bnxt_en"


def test_capture_refuses_a_directory_that_holds_files(tmp_path, capsys):
    (tmp_path / "old").write_text("stale")
    assert cmd_capture(str(tmp_path)) == 1
    assert "must be an empty directory" in capsys.readouterr().err
    with pytest.raises(CaptureError):
        capture(str(tmp_path))


def test_cmd_capture_then_cmd_inventory(tmp_path, capsys):
    dest = tmp_path / "capture"
    assert cmd_capture(str(dest)) == 0
    capsys.readouterr()

    assert cmd_inventory(str(dest)) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == collect(str(dest))
    assert printed["schema"] == "cloudboot.inventory/1"


def test_missing_root_gives_an_empty_document_with_warnings(tmp_path):
    document = collect(str(tmp_path / "nothing-here"))
    assert document["disks"] == [] and document["nics"] == []
    assert document["warnings"]


def test_inventory_of_a_missing_root_is_a_clear_error(tmp_path, capsys):
    assert cmd_inventory(str(tmp_path / "typo")) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_the_agent_command_round_trip(tmp_path):
    """What a technician runs: capture on the machine, inventory on the copy."""
    cli = pytest.importorskip("bootos.agent.cli")
    assert hasattr(cli, "main")
    dest = tmp_path / "capture"

    def agent(*args):
        command = [sys.executable, "-m", "bootos.agent.cli", *args]
        return subprocess.run(command, capture_output=True, timeout=120, cwd=REPO, check=False)

    captured = agent("capture", str(dest))
    assert captured.returncode == 0, captured.stderr
    live = agent("inventory")
    from_capture = agent("inventory", "--root", str(dest))
    assert live.returncode == 0 and from_capture.returncode == 0
    assert json.loads(from_capture.stdout) == json.loads(live.stdout)
    assert b"Traceback" not in live.stderr + from_capture.stderr
