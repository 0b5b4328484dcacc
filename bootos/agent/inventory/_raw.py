"""Collect the raw inputs of the inventory from a root directory.

The readers return one dict, {relative path: bytes or Link}, and nothing
else: every decision about what the bytes mean is left to the pure parsers.
The same dict is what `capture` writes to disk, so an inventory taken from a
capture reads exactly the bytes the live one read.

Symbolic links (/sys/block/sda, .../device, .../driver, /dev/disk/by-path/*)
are recorded as Link(target) with the target text as readlink gives it. A
capture stores them in one file, cloudboot-capture/links.json, rather than as
symlinks: the targets point into parts of /sys that are not captured, and a
directory that is a symlink on the live system must be a real directory in the
capture to hold the files read through it.

Tool output (dmidecode, lsblk, ipmitool, ethtool) is taken by running the
tool only when the root is the live system "/"; under any other root it is
read from cloudboot-capture/tools/NAME.txt. A tool that ran and failed is
recorded as NAME.err, so the warning it causes survives a capture too.

Must never write anything. Paths are joined below the root as given; the
root is trusted to be a sysfs-like tree (the live system or a capture).
"""

import contextlib
import json
import logging
import os
import posixpath
import re
import subprocess
from dataclasses import dataclass

log = logging.getLogger(__name__)

CAPTURE_DIR = "cloudboot-capture"
LINKS_FILE = f"{CAPTURE_DIR}/links.json"
TOOLS_DIR = f"{CAPTURE_DIR}/tools"

# Files larger than this are cut: no attribute we read comes near it, and an
# SMBIOS table is at most 64 KiB (2.x) or a few hundred KiB in practice (3.x).
MAX_FILE_BYTES = 4 * 1024 * 1024
TOOL_TIMEOUT_SECONDS = 30

SMBIOS_FILES = ("sys/firmware/dmi/tables/smbios_entry_point", "sys/firmware/dmi/tables/DMI")
DMI_ID_DIR = "sys/class/dmi/id"
DMI_ID_NAMES = (
    "bios_vendor",
    "bios_version",
    "bios_date",
    "sys_vendor",
    "product_name",
    "product_version",
    "product_serial",
    "product_uuid",
    "product_sku",
    "product_family",
    "board_vendor",
    "board_name",
    "board_version",
    "board_serial",
    "board_asset_tag",
    "chassis_vendor",
    "chassis_type",
    "chassis_serial",
    "chassis_asset_tag",
)
BLOCK_FILES = (
    "size",
    "serial",
    "queue/rotational",
    "wwid",
    "device/model",
    "device/vendor",
    "device/serial",
    "device/wwid",
    "device/vpd_pg80",
)
NET_FILES = (
    "address",
    "addr_assign_type",
    "carrier",
    "operstate",
    "speed",
    "bonding_slave/perm_hwaddr",
)
PCI_FILES = ("vendor", "device", "class")

# Block devices that are never a physical disk: loop, RAM disks, zram,
# device-mapper, software RAID, optical drives, network block devices.
SKIPPED_BLOCK_PREFIXES = ("loop", "ram", "zram", "dm-", "md", "sr", "nbd", "fd")

LSBLK_ARGS = ["lsblk", "-J", "-b", "-o", "NAME,KNAME,SIZE,MODEL,SERIAL,REV,TRAN,ROTA,WWN,TYPE"]


_DECIMAL = re.compile(r"[0-9]{1,20}")


@dataclass(frozen=True)
class Link:
    """A symbolic link recorded by its target text (as os.readlink gives it)."""

    target: str


def resolve(rel, target):
    """Relative path a link at `rel` points to, normalised inside the root."""
    return posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))


def is_safe_relative(rel):
    parts = rel.split("/")
    return bool(rel) and not rel.startswith("/") and ".." not in parts and "" not in parts


class Reader:
    """Reads files, links and directory listings below a root, recording them."""

    def __init__(self, root):
        self.root = root
        self.raw = {}
        self._captured_links = self._load_captured_links()

    def _path(self, rel):
        return os.path.join(self.root, rel)

    def _load_captured_links(self):
        try:
            with open(self._path(LINKS_FILE), "rb") as handle:
                links = json.loads(handle.read(MAX_FILE_BYTES))
        except (OSError, ValueError):
            return {}
        if not isinstance(links, dict):
            return {}
        return {k: v for k, v in links.items() if isinstance(k, str) and isinstance(v, str)}

    def read(self, rel):
        """Bytes of a file, or None when absent or unreadable (sysfs gives EINVAL
        for carrier on a down link, EIO for some attributes)."""
        try:
            with open(self._path(rel), "rb") as handle:
                data = handle.read(MAX_FILE_BYTES)
        except OSError:
            return None
        self.raw[rel] = data
        return data

    def readlink(self, rel):
        target = self._captured_links.get(rel)
        if target is None:
            try:
                target = os.readlink(self._path(rel))
            except OSError:
                return None
        self.raw[rel] = Link(target)
        return target

    def listdir(self, rel):
        names = set()
        with contextlib.suppress(OSError):
            names.update(os.listdir(self._path(rel)))
        prefix = rel + "/"
        for path in self._captured_links:
            if path.startswith(prefix) and "/" not in path[len(prefix) :]:
                names.add(path[len(prefix) :])
        return sorted(names - {".", ".."})


def _read_firmware(reader):
    for rel in SMBIOS_FILES:
        reader.read(rel)
    for name in DMI_ID_NAMES:
        reader.read(f"{DMI_ID_DIR}/{name}")
    reader.read("proc/cpuinfo")


def _read_block(reader):
    for name in reader.listdir("sys/block"):
        if name.startswith(SKIPPED_BLOCK_PREFIXES):
            continue
        base = f"sys/block/{name}"
        reader.readlink(base)
        reader.readlink(f"{base}/device")
        for file_name in BLOCK_FILES:
            reader.read(f"{base}/{file_name}")

    for name in reader.listdir("dev/disk/by-path"):
        reader.readlink(f"dev/disk/by-path/{name}")


def _read_net(reader):
    interfaces = []
    for name in reader.listdir("sys/class/net"):
        if name == "lo":
            continue
        base = f"sys/class/net/{name}"
        reader.readlink(base)
        if reader.readlink(f"{base}/device") is None:
            continue
        interfaces.append(name)
        reader.readlink(f"{base}/device/driver")
        for file_name in NET_FILES:
            reader.read(f"{base}/{file_name}")
    return interfaces


def _read_pci(reader):
    for address in reader.listdir("sys/bus/pci/devices"):
        base = f"sys/bus/pci/devices/{address}"
        reader.readlink(base)
        reader.readlink(f"{base}/driver")
        for file_name in PCI_FILES:
            reader.read(f"{base}/{file_name}")


def _run_tool(raw, name, argv):
    try:
        result = subprocess.run(
            argv,
            capture_output=True,
            timeout=TOOL_TIMEOUT_SECONDS,
            env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LC_ALL": "C"},
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except FileNotFoundError:
        log.debug("tool %s not installed; its part of the inventory comes from sysfs", argv[0])
        return
    except (OSError, subprocess.SubprocessError) as error:
        raw[f"{TOOLS_DIR}/{name}.err"] = f"{argv[0]} did not run: {error}".encode()
        return

    if result.returncode == 0:
        raw[f"{TOOLS_DIR}/{name}.txt"] = result.stdout
        return
    reason = result.stderr.decode("utf-8", "replace").strip().splitlines()[:1]
    message = f"{' '.join(argv)} exited {result.returncode}: {' '.join(reason)}"
    raw[f"{TOOLS_DIR}/{name}.err"] = message.encode()


def _run_tools(raw, interfaces):
    _run_tool(raw, "dmidecode", ["dmidecode"])
    _run_tool(raw, "lsblk", LSBLK_ARGS)
    _run_tool(raw, "ipmitool-lan", ["ipmitool", "lan", "print"])
    for name in interfaces:
        _run_tool(raw, f"ethtool-P-{name}", ["ethtool", "-P", name])


def _read_captured_tools(reader):
    for name in reader.listdir(TOOLS_DIR):
        if name.endswith((".txt", ".err")):
            reader.read(f"{TOOLS_DIR}/{name}")


def is_live_root(root):
    return os.path.realpath(root) == "/"


def gather(root="/"):
    """All raw inputs below `root` as {relative path: bytes | Link}."""
    reader = Reader(root)
    _read_firmware(reader)
    _read_block(reader)
    interfaces = _read_net(reader)
    _read_pci(reader)

    if is_live_root(root):
        _run_tools(reader.raw, interfaces)
    else:
        _read_captured_tools(reader)
    return reader.raw


# Pure helpers the parsers use to look into a raw dict.


def text(raw, rel):
    """The file at `rel` as stripped text, or None when absent or empty.

    sysfs attributes are ASCII; a stray byte is kept as its Latin-1 character
    so two different values never read the same.
    """
    data = raw.get(rel)
    if not isinstance(data, bytes):
        return None
    try:
        value = data.decode("utf-8")
    except UnicodeDecodeError:
        value = data.decode("latin-1")
    return value.strip() or None


def decimal(value):
    """Non-negative int from ASCII decimal text, else None.

    str.isdigit() accepts "²" and other digits int() rejects, and sysfs or tool
    output with a stray byte must not raise here.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value >= 0 else None
    if isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
        return int(value.strip())
    return None


def link_target(raw, rel):
    entry = raw.get(rel)
    return entry.target if isinstance(entry, Link) else None


def children(raw, rel):
    """Sorted names directly below `rel` that the raw dict holds anything for."""
    prefix = rel + "/"
    return sorted({key[len(prefix) :].split("/")[0] for key in raw if key.startswith(prefix)})
