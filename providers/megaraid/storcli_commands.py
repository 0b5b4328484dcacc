"""Building storcli / perccli command lines, finding the tool and running it.

Command lines are built by pure functions from validated parameters, so every refusal
(an odd RAID 10 drive count, a bad strip size, a malformed "E:S") happens before any tool
runs and is tested without one. `run` is the only place a process starts; it always has a
timeout. Nothing here may build a command line from text it has not validated: the tool
runs as root on a machine that holds a bank's data.
"""

import os
import re
import subprocess
from dataclasses import dataclass

TOOL_NAMES = ("storcli64", "storcli", "perccli64", "perccli")
# Broadcom's and Dell's installers put the tool here, outside PATH.
INSTALL_DIRS = ("/opt/MegaRAID/storcli", "/opt/MegaRAID/perccli")
RAID_LEVELS = ("0", "1", "5", "6", "10", "50", "60")
# Strip sizes in KB that MegaRAID firmware accepts (`strip=` in the storcli guide).
STRIP_SIZES = (8, 16, 32, 64, 128, 256, 512, 1024)
# Smallest member count of one array (span) per level, and the MegaRAID span limit.
MIN_PER_SPAN = {"0": 1, "1": 2, "5": 3, "6": 3, "10": 2, "50": 3, "60": 3}
MAX_SPANS = 8
DRIVE = re.compile(r"^(\d{1,3}):(\d{1,3})$")
NAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")  # MegaRAID VD names: 15 characters at most
DEFAULT_TIMEOUT = 120.0


class CommandError(ValueError):
    """Parameters that cannot become a safe command line; says which and why."""


@dataclass(frozen=True)
class Tool:
    path: str
    name: str


@dataclass(frozen=True)
class Output:
    argv: list
    exit_code: int
    stdout: str
    stderr: str


def find_tool(package_dir=None, path_env=None, is_executable=None):
    """The first storcli/perccli found: the package's bin/, then PATH, then /opt/MegaRAID.

    A package may carry the vendor's tool in bin/ (the sandbox lets a provider execute
    only its own directory and /usr); /opt/MegaRAID is where the vendors' packages install.
    """
    is_executable = is_executable or (lambda p: os.path.isfile(p) and os.access(p, os.X_OK))
    directories = [os.path.join(package_dir, "bin")] if package_dir else []
    directories += [d for d in (path_env or "").split(os.pathsep) if d]
    directories += INSTALL_DIRS
    for directory in directories:
        for name in TOOL_NAMES:
            candidate = os.path.join(directory, name)
            if is_executable(candidate):
                return Tool(candidate, name)
    return None


def controller(value):
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
        raise CommandError(f"controller must be an integer 0-255, got {value!r}")
    return value


def parse_drives(drives):
    """["252:0", "252:1"] -> [(252, 0), (252, 1)]; refuses duplicates and bad text."""
    if not isinstance(drives, list) or not drives:
        raise CommandError(f'drives must be a non-empty list of "E:S" strings, got {drives!r}')
    parsed = []
    for drive in drives:
        match = DRIVE.match(drive) if isinstance(drive, str) else None
        if not match:
            raise CommandError(f'drive must be "enclosure:slot" like "252:0", got {drive!r}')
        parsed.append((int(match.group(1)), int(match.group(2))))
    if len(set(parsed)) != len(parsed):
        raise CommandError(f"a drive is listed twice: {drives!r}")
    return parsed


def drives_argument(parsed):
    """storcli's `drives=` value: e:s-x,y per enclosure, in the order given.

    Order matters for RAID 1/10: storcli pairs drives into arrays as listed, so runs are
    compressed only where the slots are consecutive in the caller's order.
    """
    groups = []
    for enclosure, slot in parsed:
        if groups and groups[-1][0] == enclosure:
            groups[-1][1].append(slot)
        else:
            groups.append((enclosure, [slot]))
    return ",".join(f"{enclosure}:{_slot_runs(slots)}" for enclosure, slots in groups)


def _slot_runs(slots):
    runs = [[slots[0], slots[0]]]
    for slot in slots[1:]:
        if slot == runs[-1][1] + 1:
            runs[-1][1] = slot
        else:
            runs.append([slot, slot])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def drives_per_span(level, count, asked=None):
    """`pdperarray` for a spanned level (10, 50, 60); None for the others.

    RAID 10 is built from RAID 1 arrays of two (or an even number of) drives each, at most
    eight of them; RAID 50/60 from at least two RAID 5/6 arrays. Invalid counts are refused
    here with the rule, rather than by storcli with "Invalid input".
    """
    minimum = MIN_PER_SPAN[level]
    if level not in ("10", "50", "60"):
        if asked is not None:
            raise CommandError(f"drives_per_span applies to RAID 10, 50 and 60, not {level}")
        if count < minimum:
            raise CommandError(f"RAID {level} needs at least {minimum} drives, got {count}")
        return None
    if level == "10" and count % 2:
        raise CommandError(f"RAID 10 needs an even number of drives, got {count}")
    per_span = asked if asked is not None else _default_per_span(level, count)
    if isinstance(per_span, bool) or not isinstance(per_span, int) or per_span < minimum:
        raise CommandError(
            f"drives_per_span for RAID {level} must be >= {minimum}, got {per_span!r}"
        )
    if level == "10" and per_span % 2:
        raise CommandError(
            f"RAID 10 arrays are mirrors: drives_per_span must be even, got {per_span}"
        )
    spans, left = divmod(count, per_span)
    if left or not 2 <= spans <= MAX_SPANS:
        raise CommandError(
            f"RAID {level} with {count} drives and {per_span} per span gives "
            f"{count / per_span:g} spans; it needs a whole number from 2 to {MAX_SPANS}"
        )
    return per_span


def _default_per_span(level, count):
    """RAID 10: mirrored pairs while they fit in 8 spans; RAID 50/60: two spans."""
    if level == "10":
        for per_span in range(2, count + 1, 2):
            if count % per_span == 0 and count // per_span <= MAX_SPANS:
                return per_span
        raise CommandError(f"RAID 10 with {count} drives cannot be split into 2-8 spans")
    if count % 2 or count // 2 < MIN_PER_SPAN[level]:
        raise CommandError(
            f"RAID {level} with {count} drives: give drives_per_span (each span needs "
            f"at least {MIN_PER_SPAN[level]} drives, 2 to {MAX_SPANS} spans)"
        )
    return count // 2


def add_vd(params):
    """`/cN add vd type=raidL [name=] drives= [pdperarray=] [strip=] J` from request params."""
    number = controller(params.get("controller"))
    level = str(params.get("raid_level", ""))
    if level not in RAID_LEVELS:
        raise CommandError(f"raid_level must be one of {', '.join(RAID_LEVELS)}, got {level!r}")
    drives = parse_drives(params.get("drives"))
    per_span = drives_per_span(level, len(drives), params.get("drives_per_span"))

    words = [f"/c{number}", "add", "vd", f"type=raid{level}"]
    name = params.get("name")
    if name is not None:
        if not isinstance(name, str) or not NAME.match(name):
            raise CommandError(f"name must be 1-15 of A-Z a-z 0-9 _ . -, got {name!r}")
        words.append(f"name={name}")
    words.append(f"drives={drives_argument(drives)}")
    if per_span is not None:
        words.append(f"pdperarray={per_span}")
    strip = params.get("strip_kb")
    if strip is not None:
        if strip not in STRIP_SIZES or isinstance(strip, bool):
            raise CommandError(f"strip_kb must be one of {STRIP_SIZES}, got {strip!r}")
        words.append(f"strip={strip}")
    return [*words, "J"]


def delete_vd(params):
    number = controller(params.get("controller"))
    vd = params.get("vd")
    if isinstance(vd, bool) or not isinstance(vd, int) or not 0 <= vd <= 255:
        raise CommandError(f"vd must be an integer 0-255, got {vd!r}")
    # storcli refuses to delete a VD that holds a partition or the boot drive without
    # `force`; deleting is what the job asked for, so the caller decides.
    force = ["force"] if params.get("force") is True else []
    return [f"/c{number}/v{vd}", "del", *force, "J"]


def drive_commands(params, verb):
    """One `/cN/eE/sS set <verb> J` per drive (storcli takes one drive per set command)."""
    number = controller(params.get("controller"))
    return [
        [f"/c{number}/e{enclosure}/s{slot}", "set", verb, "J"]
        for enclosure, slot in parse_drives(params.get("drives"))
    ]


def controller_show(number):
    return [f"/c{controller(number)}", "show", "J"]


def vd_show(number, vd):
    return [f"/c{controller(number)}/v{vd}", "show", "J"]


def foreign_show(number):
    return [f"/c{controller(number)}/fall", "show", "J"]


def foreign_delete(number):
    return [f"/c{controller(number)}/fall", "delete", "J"]


def inventory():
    return ["/call", "show", "all", "J"]


def run(tool, words, timeout=DEFAULT_TIMEOUT):
    """Run the tool with `words`; never through a shell. Raises CommandError on timeout."""
    argv = [tool.path, *words]
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise CommandError(f"{tool.name} {' '.join(words)}: no answer in {timeout:g} s") from None
    except OSError as exc:
        raise CommandError(f"cannot run {tool.path}: {exc.strerror}") from None
    return Output(
        argv,
        done.returncode,
        done.stdout.decode("utf-8", "replace"),
        done.stderr.decode("utf-8", "replace"),
    )
