"""The mdadm provider: Linux software RAID 1 and 10 on chosen disks, and tearing it down.

Runs inside BootOS with Debian's python3 and nothing else, so it uses the standard library
only. It reads one request on stdin and writes protocol events on stdout
(docs/providers.md). Actions: inventory, create, delete. It must never hand mdadm a disk
that is mounted, used as swap or already in an array, never run a command line built from
unvalidated input, and never end without exactly one result.
"""

import json
import os
import stat
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # python3 -I leaves it out

import mdadm_commands as commands  # noqa: E402
import mdstat as parser  # noqa: E402

# Where the kernel tells what is in use; attributes so tests can point them at samples.
MDSTAT = "/proc/mdstat"
MOUNTS = "/proc/self/mounts"
SWAPS = "/proc/swaps"
SYS_BLOCK = "/sys/class/block"


class ActionFailed(Exception):
    """Ends the action with a failed result; the message is what the operator reads."""


class Session:
    """One request: mdadm's path, the commands run and the warnings collected."""

    def __init__(self, params):
        self.params = params
        self.mdadm = None
        self.commands = []
        self.warnings = []

    def find_mdadm(self):
        self.mdadm = commands.find_mdadm()
        if self.mdadm is None:
            raise ActionFailed(f"mdadm not found at {' or '.join(commands.MDADM_PATHS)}")

    def call(self, words, timeout=commands.DEFAULT_TIMEOUT):
        self.commands.append(" ".join(["mdadm", *words]))
        return commands.run(self.mdadm, words, timeout)

    def must(self, words, timeout=commands.DEFAULT_TIMEOUT):
        """Run mdadm; a non-zero exit fails the action with mdadm's own words."""
        output = self.call(words, timeout)
        if output.exit_code != 0:
            said = (output.stderr.strip() or output.stdout.strip() or "no output")[-800:]
            raise ActionFailed(f"mdadm {' '.join(words)}: exit status {output.exit_code}: {said}")
        return output

    def warn(self, message):
        self.warnings.append(message)
        log("warning", message)

    def data(self, **fields):
        return {
            "mdadm": self.mdadm,
            "commands": self.commands,
            "warnings": self.warnings,
            **fields,
        }


def read_mdstat():
    try:
        with open(MDSTAT, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise ActionFailed(
            f"{MDSTAT} does not exist: the md driver is not loaded (modprobe md_mod)"
        ) from None
    except OSError as exc:
        raise ActionFailed(f"cannot read {MDSTAT}: {exc.strerror}") from None
    return parser.parse_mdstat(text)


def _read_optional(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise ActionFailed(f"cannot read {path}: {exc.strerror}") from None


def inventory(session):
    progress(20, f"reading {MDSTAT}")
    found = read_mdstat()
    for index, array in enumerate(found["arrays"]):
        progress(30 + 60 * index // max(len(found["arrays"]), 1), f"reading {array['path']}")
        _add_detail(session, array)
    count = len(found["arrays"])
    summary = f"{count} md arra{'y' if count == 1 else 'ys'}"
    return summary, session.data(personalities=found["personalities"], arrays=found["arrays"])


def _add_detail(session, array):
    """Name, UUID and metadata from mdadm --detail; an array it cannot read is a warning."""
    array.update(name=None, uuid=None)
    if not array["active"]:
        return  # --detail on an inactive array says little and may fail; mdstat has it all
    if session.mdadm is None:
        session.mdadm = commands.find_mdadm()
    if session.mdadm is None:
        session.warn(f"mdadm not found: no name or uuid for {array['path']}")
        return
    output = session.call(commands.detail(array["path"]))
    try:
        if output.exit_code != 0:
            raise parser.MdstatError(output.stderr.strip()[-300:] or f"exit {output.exit_code}")
        export = parser.parse_export(output.stdout)
    except parser.MdstatError as exc:
        session.warn(f"mdadm --detail {array['path']}: {exc}")
        return
    array.update(name=parser.array_name(export), uuid=export.get("MD_UUID"))


def create(session):
    words = commands.create(session.params)
    members = commands.devices(session.params["devices"], session.params["level"])
    wanted = f"/dev/md/{session.params['name']}"

    progress(10, f"checking {', '.join(members)}")
    _check_not_in_use(members, read_mdstat())
    for device in members:
        _check_block_device(device)
    session.find_mdadm()
    _check_no_superblock(session, members)
    if os.path.lexists(wanted):
        raise ActionFailed(f"{wanted} already exists: pick another name or delete that array")

    progress(40, f"creating RAID {session.params['level']} {wanted}")
    session.must(words, commands.CREATE_TIMEOUT)

    progress(80, f"reading {wanted} back")
    array = _array_at(wanted, read_mdstat())
    _add_detail(session, array)
    _check_created(array, session.params["level"], members)
    return f"RAID {session.params['level']} {wanted} ({array['device']}) created", session.data(
        array=array
    )


def _check_block_device(device):
    try:
        mode = os.stat(device).st_mode
    except OSError as exc:
        raise ActionFailed(f"{device}: {exc.strerror}") from None
    if not stat.S_ISBLK(mode):
        raise ActionFailed(f"{device} is not a block device")


def _same_disk(a, b):
    """True when one names the other or a partition of it (sdb and sdb1, nvme0n1 and p2)."""
    a, b = os.path.basename(a), os.path.basename(b)
    short, long = sorted((a, b), key=len)
    rest = long[len(short) :]
    if not long.startswith(short):
        return False
    if short[-1].isdigit():
        # nvme0n1's partitions are nvme0n1p1...; nvme0n12 is another namespace.
        return rest == "" or (rest[:1] == "p" and rest[1:].isdigit())
    return rest == "" or rest.isdigit()


def _check_not_in_use(members, found):
    for device in members:
        for array in found["arrays"]:
            for member in array["members"]:
                if _same_disk(device, member["device"]):
                    raise ActionFailed(
                        f"{device} is in use: {member['path']} is a member of {array['path']}"
                    )
    mounted = parser.mounted_sources(_read_optional(MOUNTS))
    swaps = parser.swap_sources(_read_optional(SWAPS))
    in_use = [(s, "mounted") for s in mounted] + [(s, "used as swap") for s in swaps]
    for device in members:
        for source, how in in_use:
            if _same_disk(device, os.path.realpath(source)) or _same_disk(device, source):
                raise ActionFailed(f"{device} is in use: {source} is {how}")
        holders = _holders(device)
        if holders:
            raise ActionFailed(f"{device} is in use: held by {', '.join(holders)}")


def _holders(device):
    """Whatever the kernel has stacked on a disk or its partitions (md, LVM, dm-crypt).

    /sys/class/block/NAME/holders lists them; it catches an LVM volume or an encrypted
    disk whose file system is mounted under a /dev/mapper name.
    """
    name = os.path.basename(device)
    found = []
    for directory in [os.path.join(SYS_BLOCK, name), *_partitions(name)]:
        try:
            found += [
                f"{os.path.basename(directory)}: {h}" for h in os.listdir(f"{directory}/holders")
            ]
        except OSError:
            continue
    return sorted(found)


def _partitions(name):
    try:
        entries = os.listdir(os.path.join(SYS_BLOCK, name))
    except OSError:
        return []
    return [os.path.join(SYS_BLOCK, name, e) for e in entries if e != name and _same_disk(name, e)]


def _check_no_superblock(session, members):
    """An old array's superblock on a disk means data someone may still want: refuse.

    mdadm --examine exits 0 and prints MD_UUID when it finds one; "No md superblock
    detected" (exit 1) is the answer wanted here.
    """
    for device in members:
        output = session.call(commands.examine(device))
        if output.exit_code == 0 and "MD_UUID=" in output.stdout:
            export = parser.parse_export(output.stdout)
            raise ActionFailed(
                f"{device} holds the md superblock of array {parser.array_name(export)!r} "
                f"(uuid {export.get('MD_UUID')}): delete that array, or zero the superblock, "
                "first"
            )


def _array_at(path, found):
    real = os.path.basename(os.path.realpath(path))
    for array in found["arrays"]:
        if array["device"] == real:
            return array
    raise ActionFailed(f"{path} ({real}) is not in {MDSTAT}")


def _check_created(array, level, members):
    shown = sorted(m["path"] for m in array["members"])
    if array["level"] != f"raid{level}" or shown != sorted(members) or not array["active"]:
        raise ActionFailed(
            f"{array['path']} reads back as {'active' if array['active'] else 'inactive'} "
            f"{array['level']} on {shown}, not active raid{level} on {sorted(members)}"
        )


def delete(session):
    path = commands.array(session.params.get("array"))
    progress(10, f"reading {path}")
    if not os.path.lexists(path):
        raise ActionFailed(f"no array {path}")
    array = _array_at(path, read_mdstat())
    session.find_mdadm()
    _add_detail(session, array)
    for source in parser.mounted_sources(_read_optional(MOUNTS)):
        if _same_disk(array["device"], os.path.realpath(source)):
            raise ActionFailed(f"{path} is in use: {source} is mounted")

    progress(30, f"stopping {array['path']}")
    session.must(commands.stop(array["path"]))
    zeroed = []
    for index, member in enumerate(array["members"]):
        progress(50 + 40 * index // len(array["members"]), f"clearing {member['path']}")
        session.must(commands.zero_superblock(member["path"]))
        zeroed.append(member["path"])

    progress(95, "checking nothing is left")
    if any(a["device"] == array["device"] for a in read_mdstat()["arrays"]):
        raise ActionFailed(f"{array['path']} is still in {MDSTAT} after mdadm --stop")
    return f"{path} ({array['device']}) stopped; {len(zeroed)} superblock(s) zeroed", session.data(
        deleted=array, zeroed=zeroed
    )


ACTIONS = {"inventory": inventory, "create": create, "delete": delete}


def emit(event):
    sys.stdout.write(json.dumps(event, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def progress(percent, message):
    emit({"type": "progress", "percent": percent, "message": message})


def log(level, message):
    emit({"type": "log", "level": level, "message": message})


def read_request(stream):
    try:
        request = json.loads(stream.readline())
    except ValueError as exc:
        raise ActionFailed(f"the request is not JSON: {exc}") from None
    if not isinstance(request, dict) or not isinstance(request.get("params", {}), dict):
        raise ActionFailed(f"the request must be an object with object params: {request!r:.200}")
    if request.get("action") not in ACTIONS:
        known = ", ".join(ACTIONS)
        raise ActionFailed(f"unknown action {request.get('action')!r:.80}; known: {known}")
    return request


def main(stdin=None):
    session = Session({})
    try:
        request = read_request(stdin or sys.stdin)
        session.params = request.get("params") or {}
        message, data = ACTIONS[request["action"]](session)
        warned = f" ({len(session.warnings)} warning(s))" if session.warnings else ""
        emit({"type": "result", "status": "succeeded", "message": message + warned, "data": data})
    except (ActionFailed, commands.CommandError, parser.MdstatError) as exc:
        emit({"type": "result", "status": "failed", "message": str(exc), "data": session.data()})
    except Exception as exc:  # the result must still come; the traceback goes to stderr
        traceback.print_exc()
        message = f"internal error: {type(exc).__name__}: {exc}"
        emit({"type": "result", "status": "failed", "message": message, "data": session.data()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
