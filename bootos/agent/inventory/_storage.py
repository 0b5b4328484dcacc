"""Disks of the inventory, from /sys/block (primary) and `lsblk -J` (supplement).

sysfs is always there in BootOS; lsblk output, when captured, fills values
that sysfs lacks (SATA serials live in VPD page 80h, which not every kernel
exposes) and gives the transport for SAS/SATA the way udev names it.

One entry per physical drive: an NVMe controller with several namespaces is
one disk whose `nvme_namespaces` lists them (they share the controller serial,
so one entry per namespace would make two "disks" with one serial).

The serial is the drive's own serial or null, never a stand-in: a WWID has
its own field (wwn) and a by-path id is the same on every machine of a model,
so using it as a serial would make different machines look alike. Pure
functions over the raw dict; must never raise.
"""

import json
import posixpath
import re

from appliance.proto.placeholders import clean
from bootos.agent.inventory._raw import (
    SKIPPED_BLOCK_PREFIXES,
    TOOLS_DIR,
    children,
    decimal,
    link_target,
    resolve,
    text,
)

_PCI_ADDRESS = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
_SCSI_ADDRESS = re.compile(r"^[0-9]+:[0-9]+:[0-9]+:[0-9]+$")
_ATA_PORT = re.compile(r"^ata([0-9]+)$")
_NVME_NAMESPACE = re.compile(r"^nvme([0-9]+)n([0-9]+)$")
# nvmeXcYnZ are the hidden per-path nodes of native NVMe multipath.
_NVME_PATH_NODE = re.compile(r"^nvme[0-9]+c[0-9]+n[0-9]+$")


def pci_address_in(path):
    """Last PCI address (domain:bus:device.function) along a sysfs path."""
    found = None
    for part in (path or "").split("/"):
        if _PCI_ADDRESS.match(part):
            found = part
    return found


def transport_from_path(name, path):
    """Bus a block device hangs on, read from its sysfs device path."""
    parts = (path or "").split("/")
    if name.startswith("nvme") or "nvme" in parts:
        return "nvme"
    if any(part.startswith("virtio") for part in parts):
        return "virtio"
    if any(part.startswith("usb") for part in parts):
        return "usb"
    if any(_ATA_PORT.match(part) for part in parts):
        return "sata"
    if any(part.startswith(("end_device-", "sas_", "port-")) for part in parts):
        return "sas"
    return None


def derived_by_path(name, path):
    """A by-path style id built from the sysfs path when udev left none.

    Follows udev's path_id shape for the common buses ("pci-<addr>-nvme-<ns>",
    "pci-<addr>-ata-<port>", "pci-<addr>-scsi-<h:c:t:l>"). It stays the same
    while the hardware and the order drivers load in stay the same (SCSI host
    numbers follow that order), which is what a fallback id needs.
    """
    parts = (path or "").split("/")
    pci = pci_address_in(path)
    if pci is None:
        return None

    namespace = _NVME_NAMESPACE.match(name)
    if namespace:
        return f"pci-{pci}-nvme-{namespace.group(2)}"

    ata = [m.group(1) for m in map(_ATA_PORT.match, parts) if m]
    if ata:
        return f"pci-{pci}-ata-{ata[-1]}"

    scsi = [part for part in parts if _SCSI_ADDRESS.match(part)]
    if scsi:
        return f"pci-{pci}-scsi-{scsi[-1]}"
    return f"pci-{pci}"


def by_path_index(raw):
    """{device name: by-path id} from /dev/disk/by-path links (no partitions)."""
    index = {}
    for link_name in children(raw, "dev/disk/by-path"):
        target = link_target(raw, f"dev/disk/by-path/{link_name}")
        if target is None or "-part" in link_name:
            continue
        device = posixpath.basename(target)
        # udev makes several names for one disk (pci-... and virtio-pci-...):
        # take the shortest so the choice is the same on every run.
        best = index.get(device)
        if best is None or (len(link_name), link_name) < (len(best), best):
            index[device] = link_name
    return index


def _lsblk_value(value):
    if isinstance(value, str):
        return value.strip() or None
    # lsblk prints ROTA as a boolean, SIZE as a number; nothing else is expected.
    return value if isinstance(value, bool | int) else None


def _lsblk_text(entry, key):
    value = entry.get(key)
    return value if isinstance(value, str) else None


def parse_lsblk(data, warnings):
    """{kernel name: {field: value}} from `lsblk -J` output, values trimmed.

    lsblk pads model and serial with the spaces the drive reports, and some
    versions print the kernel name as a /dev path: both are normalised. The
    kernel name, not NAME, is the key, because NAME can repeat.
    """
    try:
        document = json.loads(data)
        devices = document["blockdevices"]
    except (ValueError, TypeError, KeyError) as error:
        warnings.append(f"lsblk output is not the expected JSON: {error}")
        return {}

    table = {}
    for device in devices if isinstance(devices, list) else []:
        if not isinstance(device, dict) or device.get("type", "disk") != "disk":
            continue
        entry = {key: _lsblk_value(value) for key, value in device.items() if key != "children"}
        kname = entry.get("kname") or entry.get("name")
        if isinstance(kname, str):
            table[posixpath.basename(kname)] = entry
    return table


def _vpd_serial(raw, base):
    # VPD page 80h (SPC-4 7.8.15): 4-byte header, then the unit serial number.
    page = raw.get(f"{base}/device/vpd_pg80")
    if not isinstance(page, bytes) or len(page) < 5 or page[1] != 0x80:
        return None
    return page[4 : 4 + page[3]].decode("latin-1").strip() or None


def _rotational(raw, base, lsblk):
    flag = text(raw, f"{base}/queue/rotational")
    if flag in ("0", "1"):
        return flag == "1"
    rota = lsblk.get("rota")
    if isinstance(rota, bool):
        return rota
    return {"0": False, "1": True}.get(str(rota)) if rota is not None else None


def _size_bytes(raw, base, lsblk):
    sectors = text(raw, f"{base}/size")
    # /sys/block/X/size counts 512-byte sectors whatever the logical block size.
    if decimal(sectors) is not None:
        return decimal(sectors) * 512
    return decimal(lsblk.get("size"))


def _serial(raw, base, lsblk):
    for candidate in (
        _lsblk_text(lsblk, "serial"),
        text(raw, f"{base}/device/serial"),
        text(raw, f"{base}/serial"),
        _vpd_serial(raw, base),
    ):
        value = clean(candidate)
        if value is not None:
            return value
    return None


def _block_disk(raw, name, lsblk, by_path):
    base = f"sys/block/{name}"
    target = link_target(raw, base)
    path = resolve(base, target) if target else None
    wwn = (
        text(raw, f"{base}/wwid") or text(raw, f"{base}/device/wwid") or _lsblk_text(lsblk, "wwn")
    )
    return {
        "name": name,
        "size_bytes": _size_bytes(raw, base, lsblk),
        "model": clean(_lsblk_text(lsblk, "model") or text(raw, f"{base}/device/model")),
        "serial": _serial(raw, base, lsblk),
        "wwn": clean(wwn),
        "rotational": _rotational(raw, base, lsblk),
        "transport": _lsblk_text(lsblk, "tran") or transport_from_path(name, path),
        "by_path": by_path.get(name) or derived_by_path(name, path),
        "nvme_namespaces": [],
    }


def _nvme_controller(raw, name):
    target = link_target(raw, f"sys/block/{name}/device")
    if target:
        return posixpath.basename(target)
    return f"nvme{_NVME_NAMESPACE.match(name).group(1)}"


def _merge_nvme(disks, raw):
    """Fold namespaces of one NVMe controller into one disk entry."""
    merged = []
    controllers = {}
    for disk in disks:
        match = _NVME_NAMESPACE.match(disk["name"])
        if match is None:
            merged.append(disk)
            continue

        namespace = {
            "name": disk["name"],
            "nsid": int(match.group(2)),
            "size_bytes": disk["size_bytes"],
            "wwn": disk["wwn"],
        }
        controller = _nvme_controller(raw, disk["name"])
        if controller in controllers:
            controllers[controller]["nvme_namespaces"].append(namespace)
            continue
        disk["nvme_namespaces"] = [namespace]
        controllers[controller] = disk
        merged.append(disk)
    return merged


def _lsblk_for(table, name, raw):
    if name in table:
        return table[name]
    # Some lsblk runs list the NVMe controller (nvme0) rather than the namespace.
    if _NVME_NAMESPACE.match(name):
        return table.get(_nvme_controller(raw, name), {})
    return {}


def _natural_key(name):
    # re.split with a group alternates text and digit runs, so positions line up.
    return [
        int(part) if index % 2 else part for index, part in enumerate(re.split(r"([0-9]+)", name))
    ]


def parse_disks(raw, warnings):
    lsblk_data = raw.get(f"{TOOLS_DIR}/lsblk.txt")
    table = parse_lsblk(lsblk_data, warnings) if isinstance(lsblk_data, bytes) else {}
    by_path = by_path_index(raw)

    names = [
        name
        for name in children(raw, "sys/block")
        if link_target(raw, f"sys/block/{name}") and not _NVME_PATH_NODE.match(name)
    ]
    # Sort nvme namespaces by number so nvme0n2 never leads nvme0n1's entry.
    names.sort(key=_natural_key)
    if not names:
        # A capture with lsblk output but no sysfs (e.g. from another tool).
        names = sorted(n for n in table if not n.startswith(SKIPPED_BLOCK_PREFIXES))

    disks = [_block_disk(raw, name, _lsblk_for(table, name, raw), by_path) for name in names]
    return _merge_nvme(disks, raw)
