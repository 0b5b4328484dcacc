"""Pure parsers for what the md driver and mdadm print: text in, plain dicts out.

/proc/mdstat is written by the kernel's md driver (drivers/md/md.c, md_seq_show): a
"Personalities" line, one block per array, and "unused devices". `mdadm --detail --export`
and `mdadm --examine --export` print KEY=value lines. Nothing here reads a file or runs a
program, so every format is tested with whole samples; only `MdstatError` escapes.
"""

import re

# "md127 : active (auto-read-only) raid1 vdc[1] vdb[0](F)"
ARRAY_LINE = re.compile(r"^(?P<device>md[\w-]*)\s*:\s*(?P<rest>.*)$")
# A member: name, role slot in brackets, then any of the flags md.c prints after it:
# (W) write-mostly, (J) journal, (F) faulty, (S) spare, (R) replacement.
MEMBER = re.compile(r"^(?P<name>[^\s\[\]]+)\[(?P<slot>\d+)\](?P<flags>(?:\([WJFSR]\))*)$")
FLAG_NAMES = {"W": "write_mostly", "J": "journal", "F": "faulty", "S": "spare", "R": "replacement"}
BLOCKS = re.compile(r"^(?P<blocks>\d+) blocks\b")
SUPER = re.compile(r"\bsuper (?P<metadata>\S+)")
CHUNK = re.compile(r"\b(?P<chunk>\d+)[kK] chunks?\b")
LAYOUT = re.compile(r"\b(?P<copies>\d+) (?P<kind>near|far|offset)-copies\b")
# "[2/1] [U_]": disks the array should have / has working, and one letter per slot.
HEALTH = re.compile(r"\[(?P<raid>\d+)/(?P<working>\d+)\] \[(?P<slots>[U_]+)\]")
SYNC = re.compile(
    r"\b(?P<action>resync|recovery|reshape|check|repair)\s*=\s*"
    r"(?:(?P<percent>[\d.]+)%|(?P<state>DELAYED|PENDING))"
)
LEVELS = ("linear", "multipath", "raid0", "raid1", "raid4", "raid5", "raid6", "raid10", "faulty")
# Keys are upper case except the device part of MD_DEVICE_dev_vda_ROLE.
EXPORT_LINE = re.compile(r"^(?P<key>MD_[A-Za-z0-9_]+)=(?P<value>.*)$")


class MdstatError(ValueError):
    """Text that is not the expected format; the message quotes what arrived."""


def parse_mdstat(text):
    """/proc/mdstat text -> {"personalities": [...], "arrays": [...], "unused": [...]}."""
    if not isinstance(text, str) or not text.startswith("Personalities"):
        raise MdstatError(f"not /proc/mdstat text (no Personalities line): {text[:120]!r}")
    personalities, arrays, unused = [], [], []
    current = None
    for line in text.splitlines():
        if line.startswith("Personalities"):
            personalities = re.findall(r"\[(\w+)\]", line)
        elif line.startswith("unused devices:"):
            current = None
            unused = [n for n in line.split(":", 1)[1].split() if n != "<none>"]
        elif ARRAY_LINE.match(line):
            current = _array(line)
            arrays.append(current)
        elif line.strip() and current is not None:
            _detail(current, line.strip())
    return {"personalities": personalities, "arrays": arrays, "unused": unused}


def _array(line):
    match = ARRAY_LINE.match(line)
    words = match.group("rest").split()
    if not words or words[0] not in ("active", "inactive"):
        raise MdstatError(f"array line without active/inactive: {line!r}")
    array = {
        "device": match.group("device"),
        "path": f"/dev/{match.group('device')}",
        "active": words[0] == "active",
        "read_only": None,
        "level": None,
        "members": [],
        "blocks": None,
        "size_bytes": None,
        "metadata": None,
        "chunk_kb": None,
        "layout": None,
        "raid_disks": None,
        "working_disks": None,
        "slots": None,
        "degraded": None,
        "sync": None,
    }
    words = words[1:]
    if words and words[0] in ("(read-only)", "(auto-read-only)"):
        array["read_only"] = words.pop(0).strip("()")
    # An inactive array has no personality: its members follow "inactive" directly.
    if words and words[0] in LEVELS:
        array["level"] = words.pop(0)
    array["members"] = [_member(word, line) for word in words]
    return array


def _member(word, line):
    match = MEMBER.match(word)
    if not match:
        raise MdstatError(f"member {word!r} is not NAME[SLOT](FLAGS) in {line!r}")
    flags = re.findall(r"\((\w)\)", match.group("flags"))
    return {
        "device": match.group("name"),
        "path": f"/dev/{match.group('name')}",
        "slot": int(match.group("slot")),
        "state": [FLAG_NAMES[f] for f in flags] or ["in_sync"],
    }


def _detail(array, line):
    """The status, bitmap and sync lines under an array line."""
    blocks = BLOCKS.match(line)
    if blocks:
        # md.c prints the size in 1 KiB blocks.
        array["blocks"] = int(blocks.group("blocks"))
        array["size_bytes"] = array["blocks"] * 1024
    for pattern, key in ((SUPER, "metadata"), (CHUNK, "chunk_kb")):
        found = pattern.search(line)
        if found:
            value = found.group(1)
            array[key] = int(value) if key == "chunk_kb" else value
    layout = LAYOUT.search(line)
    if layout:
        array["layout"] = f"{layout.group('kind')}{layout.group('copies')}"
    health = HEALTH.search(line)
    if health:
        array["raid_disks"] = int(health.group("raid"))
        array["working_disks"] = int(health.group("working"))
        array["slots"] = health.group("slots")
        array["degraded"] = "_" in health.group("slots")
    sync = SYNC.search(line)
    if sync:
        percent = sync.group("percent")
        array["sync"] = {
            "action": sync.group("action"),
            "percent": float(percent) if percent else None,
            "state": sync.group("state") or "running",
        }


def parse_export(text):
    """`mdadm --detail --export` / `--examine --export` -> {KEY: value}; members apart.

    --detail adds MD_DEVICE_<dev>_ROLE and MD_DEVICE_<dev>_DEV per member (mdadm 4.x);
    those become "members": [{"device": "/dev/vdb", "role": "0"}, ...].
    """
    fields, members = {}, {}
    for line in text.splitlines():
        if not line.strip():
            continue
        match = EXPORT_LINE.match(line.strip())
        if not match:
            raise MdstatError(f"not a KEY=value line in mdadm --export output: {line!r}")
        key, value = match.group("key"), match.group("value")
        member = re.match(r"^MD_DEVICE_(\w+?)_(ROLE|DEV)$", key)
        if member:
            members.setdefault(member.group(1), {})[member.group(2).lower()] = value
        else:
            fields[key] = value
    if not fields:
        raise MdstatError(f"no KEY=value lines in mdadm --export output: {text[:120]!r}")
    found = [
        {"device": entry.get("dev"), "role": entry.get("role")}
        for _key, entry in sorted(members.items())
    ]
    return {**fields, "members": found}


def array_name(export):
    """The array's own name: MD_NAME is "host:name" (mdadm prefixes the home host)."""
    name = export.get("MD_DEVNAME") or export.get("MD_NAME")
    if name is None:
        return None
    return name.rsplit(":", 1)[-1]


def mounted_sources(mounts_text):
    """Device paths mounted, from /proc/self/mounts text (octal escapes undone)."""
    sources = set()
    for line in mounts_text.splitlines():
        fields = line.split()
        if fields and fields[0].startswith("/dev/"):
            sources.add(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[0]))
    return sources


def swap_sources(swaps_text):
    """Device paths in use as swap, from /proc/swaps text (its first line is a header)."""
    return {line.split()[0] for line in swaps_text.splitlines()[1:] if line.strip()}
