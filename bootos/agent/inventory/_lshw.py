"""Read `lshw -json` output into the system, disk and NIC parts of the inventory.

A secondary source: BootOS does not ship lshw, but captures from other
tooling often carry its JSON, and the document builder uses it for a part the
primary sources left empty. Disks without a size (BMC virtual media with no
image inserted) are left out: an installer must never pick them.

Pure functions over the decoded JSON; must never raise.
"""

import json
import posixpath

from appliance.proto.placeholders import clean, normalize_uuid


def _nodes(node, parent=None):
    """(node, parent) pairs of the lshw tree, depth first."""
    if isinstance(node, list):
        for item in node:
            yield from _nodes(item, parent)
        return
    if not isinstance(node, dict):
        return
    yield node, parent
    for child in node.get("children") or []:
        yield from _nodes(child, node)


def _system(root):
    configuration = root.get("configuration") or {}
    product = root.get("product") or ""
    sku = configuration.get("sku")
    # lshw appends the SMBIOS SKU to the product name: "PowerEdge R6515 (SKU=...)".
    if sku and product.endswith(f" ({sku})"):
        product = product[: -len(sku) - 3]
    return {
        "manufacturer": clean(root.get("vendor")),
        "product": clean(product),
        "version": clean(root.get("version")),
        "serial": clean(root.get("serial")),
        "uuid": normalize_uuid(clean(configuration.get("uuid"))),
        "sku": clean(sku),
        "family": clean(configuration.get("family")),
    }


def _transport(node, parent):
    businfo = node.get("businfo") or ""
    if businfo.startswith("nvme@"):
        return "nvme"
    if businfo.startswith("usb@"):
        return "usb"
    if (node.get("description") or "").startswith("ATA "):
        return "sata"
    return None


def _disk(node, parent):
    name = node.get("logicalname")
    if isinstance(name, list):
        name = name[0] if name else None
    if not isinstance(name, str) or not isinstance(node.get("size"), int):
        return None

    # NVMe namespaces carry no model or serial: those belong to the controller.
    owner = parent if node.get("id") == "namespace" and parent else node
    configuration = node.get("configuration") or {}
    return {
        "name": posixpath.basename(name),
        "size_bytes": node["size"],
        "model": clean(owner.get("product")),
        "serial": clean(owner.get("serial")),
        "wwn": clean(configuration.get("wwid")),
        "rotational": None,
        "transport": _transport(node, parent),
        "by_path": None,
        "nvme_namespaces": [],
    }


def _nic(node):
    businfo = node.get("businfo") or ""
    name = node.get("logicalname")
    if not businfo or not isinstance(name, str):
        return None
    configuration = node.get("configuration") or {}
    speed = node.get("size")
    link = configuration.get("link")
    return {
        "name": name,
        "mac": clean(node.get("serial")),
        "permanent_mac": None,
        "driver": clean(configuration.get("driver")),
        "link": None if link is None else link == "yes",
        "speed_mbps": speed // 1_000_000 if isinstance(speed, int) and speed > 0 else None,
        "pci_address": businfo[4:] if businfo.startswith("pci@") else None,
    }


def parse_lshw(data, warnings):
    """{"system", "disks", "nics"} from `lshw -json` bytes or text."""
    try:
        tree = json.loads(data)
    except ValueError as error:
        warnings.append(f"lshw output is not JSON: {error}")
        return {"system": None, "disks": [], "nics": []}

    root = tree[0] if isinstance(tree, list) and tree else tree
    if not isinstance(root, dict):
        warnings.append("lshw output has no system node")
        return {"system": None, "disks": [], "nics": []}

    disks, nics = [], []
    for node, parent in _nodes(root):
        if node.get("class") == "disk" and str(node.get("id", "")).startswith(
            ("disk", "namespace")
        ):
            disk = _disk(node, parent)
            if disk is not None:
                disks.append(disk)
        elif node.get("class") == "network":
            nic = _nic(node)
            if nic is not None:
                nics.append(nic)
    return {"system": _system(root), "disks": disks, "nics": nics}
