"""NICs, PCI devices, RAID/HBA controllers and the BMC, from sysfs and tool output.

A NIC is an entry of /sys/class/net with a `device` link: loopback, bridges,
bonds, VLANs and tunnels have none and are left out. The permanent MAC comes,
in this order, from captured `ethtool -P` output, from the bonding driver's
perm_hwaddr (a bond rewrites its slaves' current MAC), or from the current
MAC when addr_assign_type is 0 (NET_ADDR_PERM: the kernel took it from the
hardware); otherwise it is null rather than a guess.

Pure functions over the raw dict; must never raise.
"""

import ipaddress
import posixpath
import re

from appliance.proto.placeholders import clean
from bootos.agent.inventory._raw import (
    TOOLS_DIR,
    children,
    decimal,
    link_target,
    resolve,
    text,
)
from bootos.agent.inventory._storage import pci_address_in

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")

# PCI base class 01h (mass storage) subclasses that are a RAID controller or
# an HBA in front of the disks: 04h RAID, 07h SAS (PCI Code and ID Assignment
# Specification, appendix D). 06h SATA (AHCI) is left out: every server's
# chipset has one, and it is not a controller an operator configures.
RAID_CLASS_PREFIXES = ("0104", "0107")

# Models named only where the vendor:device pair is certain (pci.ids).
KNOWN_CONTROLLERS = {
    ("1000", "0072"): "Broadcom / LSI SAS2008 PCI-Express Fusion-MPT SAS-2",
    ("1000", "0087"): "Broadcom / LSI SAS2308 PCI-Express Fusion-MPT SAS-2",
    ("1000", "0097"): "Broadcom / LSI SAS3008 PCI-Express Fusion-MPT SAS-3",
    ("1000", "005d"): "Broadcom / LSI MegaRAID SAS-3 3108",
    ("1000", "005f"): "Broadcom / LSI MegaRAID SAS-3 3008",
    ("1000", "0014"): "Broadcom / LSI MegaRAID Tri-Mode SAS3516",
    ("1000", "0016"): "Broadcom / LSI MegaRAID Tri-Mode SAS3508",
    ("9005", "028f"): "Microchip Smart Storage PQI 12G SAS/PCIe 3",
}


def _mac(value):
    text_value = (value or "").strip().lower()
    if not _MAC.match(text_value):
        return None
    return clean(text_value)


def _ethtool_permanent(raw, name):
    output = text(raw, f"{TOOLS_DIR}/ethtool-P-{name}.txt") or ""
    _, sep, value = output.partition("Permanent address:")
    return _mac(value) if sep else None


def _permanent_mac(raw, base, name, mac):
    from_ethtool = _ethtool_permanent(raw, name)
    if from_ethtool is not None:
        return from_ethtool

    from_bond = _mac(text(raw, f"{base}/bonding_slave/perm_hwaddr"))
    if from_bond is not None:
        return from_bond

    if text(raw, f"{base}/addr_assign_type") == "0":
        return mac
    return None


def _link_up(raw, base):
    carrier = text(raw, f"{base}/carrier")
    if carrier in ("0", "1"):
        return carrier == "1"
    operstate = text(raw, f"{base}/operstate")
    if operstate == "up":
        return True
    if operstate in ("down", "lowerlayerdown", "notpresent"):
        return False
    return None


def _speed(raw, base):
    # The kernel reports -1 (or fails the read) when the link is down.
    speed = text(raw, f"{base}/speed")
    value = decimal(speed)
    return value if value else None


def _nic(raw, name):
    base = f"sys/class/net/{name}"
    mac = _mac(text(raw, f"{base}/address"))
    target = link_target(raw, base)
    device = link_target(raw, f"{base}/device")
    pci = pci_address_in(resolve(base, target) if target else None)
    if pci is None and device is not None:
        pci = pci_address_in(posixpath.basename(device))
    driver = link_target(raw, f"{base}/device/driver")
    return {
        "name": name,
        "mac": mac,
        "permanent_mac": _permanent_mac(raw, base, name, mac),
        "driver": posixpath.basename(driver) if driver else None,
        "link": _link_up(raw, base),
        "speed_mbps": _speed(raw, base),
        "pci_address": pci,
    }


def parse_nics(raw):
    names = children(raw, "sys/class/net")
    return [
        _nic(raw, name)
        for name in names
        if name != "lo" and link_target(raw, f"sys/class/net/{name}/device") is not None
    ]


def _hex_id(value, digits):
    value = (value or "").lower().removeprefix("0x")
    if len(value) != digits or any(c not in "0123456789abcdef" for c in value):
        return None
    return value


def parse_pci(raw):
    devices = []
    for address in children(raw, "sys/bus/pci/devices"):
        base = f"sys/bus/pci/devices/{address}"
        devices.append(
            {
                "address": address,
                "vendor_id": _hex_id(text(raw, f"{base}/vendor"), 4),
                "device_id": _hex_id(text(raw, f"{base}/device"), 4),
                "class": _hex_id(text(raw, f"{base}/class"), 6),
            }
        )
    return devices


def raid_controllers(raw, pci_devices):
    controllers = []
    for device in pci_devices:
        if not (device["class"] or "").startswith(RAID_CLASS_PREFIXES):
            continue
        driver = link_target(raw, f"sys/bus/pci/devices/{device['address']}/driver")
        controllers.append(
            {
                "pci_address": device["address"],
                "vendor_id": device["vendor_id"],
                "device_id": device["device_id"],
                "driver": posixpath.basename(driver) if driver else None,
                "model": KNOWN_CONTROLLERS.get((device["vendor_id"], device["device_id"])),
            }
        )
    return controllers


def _ipv4(value):
    try:
        address = ipaddress.IPv4Address(value.strip())
    except ValueError:
        return None
    return None if address.is_unspecified else str(address)


def parse_ipmitool_lan(output):
    """{"ipv4", "mac"} from `ipmitool lan print`, or None when it names neither."""
    fields = {}
    for line in output.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())

    bmc = {"ipv4": _ipv4(fields.get("IP Address", "")), "mac": _mac(fields.get("MAC Address"))}
    return bmc if any(bmc.values()) else None


def parse_bmc(raw):
    output = text(raw, f"{TOOLS_DIR}/ipmitool-lan.txt")
    return parse_ipmitool_lan(output) if output else None
