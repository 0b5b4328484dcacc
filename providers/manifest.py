"""The provider manifest (provider.json): who a provider is and what it asks to be allowed.

Validation is strict: an unknown key, a wrong type or a value out of range is an error
naming the field, what was expected and what arrived, because a manifest is a security
request and a typo must not silently widen or drop a capability. This module must never
grant anything: it only records what the provider asks for; the operator's grants and the
runner decide.

    {
      "schema": "cloudboot.provider/1",
      "name": "megaraid", "version": "1.2.0", "vendor": "Example Corp", "kind": "raid",
      "entry": "bin/provider.py", "interpreter": "python3", "protocol": [1],
      "capabilities": {
        "network": [{"host": "bmc", "port": 443}],
        "devices": [{"path": "/dev/megaraid_sas_ioctl_node", "ioctl": true}],
        "limits": {"run_seconds": 600, "memory_mb": 256, "processes": 16}
      }
    }
"""

import json
import os
import re
from dataclasses import dataclass, field, fields

from providers import protocol
from providers.sandbox.limits import Limits

SCHEMA = "cloudboot.provider/1"
MANIFEST_NAME = "provider.json"
KINDS = ("raid", "bmc", "firmware", "os")
INTERPRETERS = ("python3", "sh")
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+~-]{0,31}$")
HOST = re.compile(r"^[A-Za-z0-9._:-]{1,253}$")
DEVICE = re.compile(r"^/dev/[A-Za-z0-9._/-]{1,120}$")
MAX_MANIFEST_BYTES = 64 * 1024
# Capabilities a provider may ask for: RAID controllers' ioctls (md's SET_ARRAY_INFO,
# MegaRAID's firmware pass-through) check CAP_SYS_ADMIN or CAP_SYS_RAWIO. Nothing else.
LINUX_CAPABILITIES = ("CAP_SYS_ADMIN", "CAP_SYS_RAWIO")
# Where extra Landlock rules may point: kernel views to read, and the sysfs and /dev
# entries a RAID tool writes (md's array attributes, /dev/md/NAME links, mdadm's map).
# Never /dev as a whole: a device node is reached only through the devices grant.
READ_PREFIXES = ("/proc/", "/sys/")
WRITE_PREFIXES = ("/sys/devices/virtual/block/", "/sys/module/", "/run/", "/dev/md/")
PATH = re.compile(r"^/[A-Za-z0-9._/-]{1,127}$")

# Upper bounds a manifest may ask for; the operator's ceiling is usually lower.
LIMIT_RANGES = {
    "run_seconds": (1, 24 * 3600),
    "cpu_seconds": (1, 24 * 3600),
    "memory_mb": (16, 64 * 1024),
    "processes": (1, 4096),
    "open_files": (8, 65536),
    "file_size_mb": (1, 1024 * 1024),
    "output_bytes": (1024, 64 << 20),
    "work_mb": (1, 64 * 1024),
}


class ManifestError(ValueError):
    """A manifest that is not valid; the message names the field."""


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    vendor: str
    kind: str
    entry: str
    interpreter: str | None
    protocols: tuple
    network: tuple = ()
    devices: tuple = ()
    limits: Limits = field(default_factory=Limits)
    linux_capabilities: tuple = ()  # asked for; granted only by the operator (runner)
    read_paths: tuple = ()
    write_paths: tuple = ()

    def to_json(self):
        """The canonical manifest text (sorted keys): what a package stores."""
        capabilities = {
            "network": [dict(d) for d in self.network],
            "devices": [dict(d) for d in self.devices],
            "limits": self.limits.__dict__,
        }
        # Only when asked for, so the canonical text of older packages stays the same.
        if self.linux_capabilities:
            capabilities["linux_capabilities"] = list(self.linux_capabilities)
        if self.read_paths or self.write_paths:
            capabilities["paths"] = {
                "read": list(self.read_paths),
                "write": list(self.write_paths),
            }
        document = {
            "schema": SCHEMA,
            "name": self.name,
            "version": self.version,
            "vendor": self.vendor,
            "kind": self.kind,
            "entry": self.entry,
            "interpreter": self.interpreter,
            "protocol": list(self.protocols),
            "capabilities": capabilities,
        }
        return json.dumps(document, indent=2, sort_keys=True) + "\n"


def parse(raw):
    """Parse manifest bytes or text; raises ManifestError."""
    if isinstance(raw, bytes):
        if len(raw) > MAX_MANIFEST_BYTES:
            raise ManifestError(f"manifest is {len(raw)} bytes, more than {MAX_MANIFEST_BYTES}")
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ManifestError(f"manifest is not UTF-8: {exc}") from None
    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise ManifestError(f"manifest is not JSON: {exc}") from None
    return from_dict(document)


def load(directory):
    """Read and validate DIR/provider.json."""
    path = os.path.join(os.fspath(directory), MANIFEST_NAME)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise ManifestError(f"cannot read {path}: {exc.strerror}") from None
    return parse(raw)


def from_dict(doc):
    _object(doc, "manifest")
    _keys(doc, "manifest", required={"schema", "name", "version", "vendor", "kind", "entry"},
          optional={"interpreter", "protocol", "capabilities"})  # fmt: skip
    if doc["schema"] != SCHEMA:
        raise ManifestError(f"schema: expected {SCHEMA!r}, got {doc['schema']!r}")
    capabilities = doc.get("capabilities", {})
    _object(capabilities, "capabilities")
    _keys(capabilities, "capabilities",
          optional={"network", "devices", "limits", "linux_capabilities", "paths"})  # fmt: skip
    read_paths, write_paths = _paths(capabilities.get("paths", {}))
    return Manifest(
        name=_match(doc["name"], "name", NAME),
        version=_match(doc["version"], "version", VERSION),
        vendor=_text(doc["vendor"], "vendor", 128),
        kind=_choice(doc["kind"], "kind", KINDS),
        entry=entry_path(doc["entry"]),
        interpreter=_interpreter(doc.get("interpreter")),
        protocols=_protocols(doc.get("protocol", [protocol.VERSION])),
        network=tuple(_network(capabilities.get("network", []))),
        devices=tuple(_devices(capabilities.get("devices", []))),
        limits=_limits(capabilities.get("limits", {})),
        linux_capabilities=_linux_capabilities(capabilities.get("linux_capabilities", [])),
        read_paths=read_paths,
        write_paths=write_paths,
    )


def entry_path(value, where="entry"):
    """A relative path inside the package: no absolute path, no '..', no empty parts."""
    text = _text(value, where, 255)
    parts = text.split("/")
    if text.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ManifestError(f"{where}: expected a relative path inside the package, got {text!r}")
    if not all(re.fullmatch(r"[A-Za-z0-9._+-]+", p) for p in parts):
        raise ManifestError(f"{where}: only letters, digits and ._+- in names, got {text!r}")
    return text


def _object(value, where):
    if not isinstance(value, dict):
        raise ManifestError(f"{where}: expected an object, got {type(value).__name__}")


def _keys(doc, where, required=frozenset(), optional=frozenset()):
    missing = sorted(set(required) - set(doc))
    if missing:
        raise ManifestError(f"{where}: missing {', '.join(missing)}")
    unknown = sorted(set(doc) - set(required) - set(optional))
    if unknown:
        raise ManifestError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}")


def _text(value, where, longest):
    if not isinstance(value, str) or not value or len(value) > longest:
        raise ManifestError(f"{where}: expected text of 1-{longest} characters, got {value!r:.80}")
    if not value.isprintable():
        raise ManifestError(f"{where}: control characters are not allowed, got {value!r:.80}")
    return value


def _match(value, where, pattern):
    text = _text(value, where, 64)
    if not pattern.match(text):
        raise ManifestError(f"{where}: {text!r} does not match {pattern.pattern}")
    return text


def _choice(value, where, choices):
    if value not in choices:
        raise ManifestError(f"{where}: expected one of {', '.join(choices)}, got {value!r:.80}")
    return value


def _integer(value, where, low, high):
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ManifestError(f"{where}: expected an integer {low}-{high}, got {value!r:.80}")
    return value


def _interpreter(value):
    return None if value is None else _choice(value, "interpreter", INTERPRETERS)


def _protocols(value):
    if not isinstance(value, list) or not value:
        raise ManifestError(f"protocol: expected a list of versions, got {value!r:.80}")
    versions = tuple(_integer(v, "protocol", 1, 1000) for v in value)
    if not set(versions) & set(protocol.SUPPORTED_VERSIONS):
        raise ManifestError(
            f"protocol: this runner speaks {list(protocol.SUPPORTED_VERSIONS)}, "
            f"the provider only {list(versions)}"
        )
    return versions


def _network(value):
    if not isinstance(value, list):
        raise ManifestError(f"capabilities.network: expected a list, got {value!r:.80}")
    for index, item in enumerate(value):
        where = f"capabilities.network[{index}]"
        _object(item, where)
        if "from_job" in item:
            yield _network_from_job(item, where)
            continue
        _keys(item, where, required={"host", "port"}, optional={"protocol"})
        _match(item["host"], f"{where}.host", HOST)
        _integer(item["port"], f"{where}.port", 1, 65535)
        protocol_name = _choice(item.get("protocol", "tcp"), f"{where}.protocol", ("tcp", "udp"))
        if protocol_name == "tcp":
            yield {"host": item["host"], "port": item["port"]}
        else:
            yield {"host": item["host"], "port": item["port"], "protocol": protocol_name}


def _network_from_job(item, where):
    """{"from_job": true}: the provider talks to the one destination each job is granted.

    It asks for nothing by itself: the runner takes the address, port and protocol from the
    caller's grant (the appliance grants a BMC job exactly the machine's BMC), never from
    the manifest or the provider's request.
    """
    _keys(item, where, required={"from_job"})
    if item["from_job"] is not True:
        raise ManifestError(f"{where}.from_job: expected true, got {item['from_job']!r:.40}")
    return {"from_job": True}


def _devices(value):
    if not isinstance(value, list):
        raise ManifestError(f"capabilities.devices: expected a list, got {value!r:.80}")
    for index, item in enumerate(value):
        where = f"capabilities.devices[{index}]"
        _object(item, where)
        _keys(item, where, required={"path"}, optional={"ioctl"})
        path = _text(item["path"], f"{where}.path", 128)
        if not DEVICE.match(path) or "/../" in path or path.endswith("/.."):
            raise ManifestError(f"{where}.path: expected a path under /dev/, got {path!r}")
        ioctl = item.get("ioctl", False)
        if not isinstance(ioctl, bool):
            raise ManifestError(f"{where}.ioctl: expected true or false, got {ioctl!r:.80}")
        yield {"path": path, "ioctl": ioctl}


def _limits(value):
    _object(value, "capabilities.limits")
    names = {f.name for f in fields(Limits)}
    _keys(value, "capabilities.limits", optional=names)
    chosen = {}
    for name, raw in value.items():
        low, high = LIMIT_RANGES[name]
        chosen[name] = _integer(raw, f"capabilities.limits.{name}", low, high)
    return Limits(**chosen)


def _linux_capabilities(value):
    """Capabilities from a short allow-list: raw controller ioctls need these and no others."""
    if not isinstance(value, list):
        raise ManifestError(f"capabilities.linux_capabilities: expected a list, got {value!r:.80}")
    where = "capabilities.linux_capabilities"
    names = [_choice(name, where, LINUX_CAPABILITIES) for name in value]
    if len(set(names)) != len(names):
        raise ManifestError(f"{where}: a capability is listed twice: {names!r}")
    return tuple(names)


def _paths(value):
    """Landlock rules a provider asks for beyond its package: kernel views and RAID nodes."""
    _object(value, "capabilities.paths")
    _keys(value, "capabilities.paths", optional={"read", "write"})
    found = {}
    for mode, prefixes in (("read", READ_PREFIXES), ("write", WRITE_PREFIXES)):
        where = f"capabilities.paths.{mode}"
        items = value.get(mode, [])
        if not isinstance(items, list):
            raise ManifestError(f"{where}: expected a list, got {items!r:.80}")
        found[mode] = tuple(
            _kernel_path(item, f"{where}[{i}]", prefixes) for i, item in enumerate(items)
        )
    return found["read"], found["write"]


def _kernel_path(value, where, prefixes):
    path = _text(value, where, 128)
    if (
        not PATH.match(path)
        or "/." in path
        or not any(path == p.rstrip("/") or path.startswith(p) for p in prefixes)
    ):
        raise ManifestError(f"{where}: expected a path under {', '.join(prefixes)}, got {path!r}")
    return path
