"""Validating request params, building mdadm command lines, finding mdadm and running it.

Every refusal that needs no machine state (a bad level, too few devices, a device listed
twice, a name mdadm would mangle) happens in pure functions here, before anything runs.
`run` is the only place a process starts: never through a shell, always with a timeout.
Nothing here may build a command line from text it has not validated: mdadm writes
superblocks over whatever disk it is given.
"""

import contextlib
import os
import re
import signal
import subprocess
from dataclasses import dataclass

# Where Debian (/sbin, merged into /usr/sbin) and BootOS (/sbin) put mdadm.
MDADM_PATHS = ("/usr/sbin/mdadm", "/sbin/mdadm")
LEVELS = {1: 2, 10: 4}  # level -> fewest devices
# Whole disks and partitions under /dev: sdb, vdc, nvme0n1, nvme0n1p2, xvdb, sdb1.
DEVICE = re.compile(
    r"^/dev/(?:[sv]d[a-z]{1,2}\d{0,3}|xvd[a-z]{1,2}\d{0,3}|nvme\d{1,3}n\d{1,3}(?:p\d{1,3})?)$"
)
# mdadm turns /dev/md/NAME into the array's name; keep it to what every tool passes
# through unquoted, and short enough for the 32-byte name field of v1.x superblocks
# together with a home-host prefix.
NAME = re.compile(r"^[A-Za-z0-9_-]{1,16}$")
ARRAY = re.compile(r"^/dev/md(?:\d{1,4}|/[A-Za-z0-9_-]{1,16})$")
DEFAULT_TIMEOUT = 60.0
CREATE_TIMEOUT = 120.0  # mdadm --create returns once the array runs; the resync goes on


class CommandError(ValueError):
    """Parameters that cannot become a safe command line; says which and why."""


@dataclass(frozen=True)
class Output:
    argv: list
    exit_code: int
    stdout: str
    stderr: str


def find_mdadm(is_executable=None):
    is_executable = is_executable or (lambda p: os.path.isfile(p) and os.access(p, os.X_OK))
    for path in MDADM_PATHS:
        if is_executable(path):
            return path
    return None


def level(value):
    if isinstance(value, bool) or value not in LEVELS:
        raise CommandError(f"level must be 1 or 10, got {value!r}")
    return value


def devices(value, raid_level):
    """The member list: block device paths, no duplicates, enough for the level."""
    if not isinstance(value, list) or not value:
        raise CommandError(
            f'devices must be a non-empty list like ["/dev/sdb", ...], got {value!r}'
        )
    for device in value:
        if not isinstance(device, str) or not DEVICE.match(device):
            raise CommandError(
                f"device must be a disk or partition path like /dev/sdb, /dev/vdc or "
                f"/dev/nvme0n1, got {device!r}"
            )
    if len(set(value)) != len(value):
        raise CommandError(f"a device is listed twice: {value!r}")
    fewest = LEVELS[raid_level]
    if len(value) < fewest:
        raise CommandError(f"RAID {raid_level} needs at least {fewest} devices, got {len(value)}")
    if raid_level == 10 and len(value) % 2:
        # md's raid10 takes odd counts too, but then the copies are not mirrored pairs,
        # which is not what "RAID 10" means to whoever asked for it.
        raise CommandError(f"RAID 10 needs an even number of devices, got {len(value)}")
    return list(value)


def name(value):
    if not isinstance(value, str) or not NAME.match(value):
        raise CommandError(f"name must be 1-16 of A-Z a-z 0-9 _ -, got {value!r}")
    return value


def array(value):
    """An array to act on: /dev/mdN, /dev/md/NAME, or a bare NAME meaning /dev/md/NAME."""
    if isinstance(value, str) and NAME.match(value):
        return f"/dev/md/{value}"
    if not isinstance(value, str) or not ARRAY.match(value):
        raise CommandError(f"array must be a name, /dev/md/NAME or /dev/mdN, got {value!r}")
    return value


def create(params):
    """`mdadm --create /dev/md/NAME --level=L --raid-devices=N --metadata=1.2 --run
    --force --homehost=any DEVICES`, from validated params.

    --run skips the "Continue creating array?" question mdadm asks about a disk that holds
    a partition table or a file system (the caller checked it is not in use); --force
    makes mdadm use every device as given (without it, a two-disk RAID 1 is built with
    one disk as a spare that is then "recovered"). --homehost=any keeps the name as given
    instead of prefixing BootOS's host name, which would differ after installation.
    """
    raid_level = level(params.get("level"))
    members = devices(params.get("devices"), raid_level)
    array_name = name(params.get("name"))
    words = [
        "--create", f"/dev/md/{array_name}", f"--level={raid_level}",
        f"--raid-devices={len(members)}", "--metadata=1.2", "--run", "--force",
        "--homehost=any",
    ]  # fmt: skip
    if raid_level == 10:
        words.append("--layout=n2")  # two near copies: mirrored pairs, md's default spelled out
    return [*words, *members]


def detail(path):
    return ["--detail", "--export", path]


def examine(device):
    return ["--examine", "--export", device]


def stop(path):
    return ["--stop", path]


def zero_superblock(device):
    return ["--zero-superblock", device]


def run(mdadm, words, timeout=DEFAULT_TIMEOUT):
    """Run mdadm with `words`; never through a shell. Raises CommandError on timeout.

    mdadm runs in a session of its own so that a timeout kills whatever it started too:
    a child left holding the output pipes would keep this call waiting past the timeout.
    """
    argv = [mdadm, *words]
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        raise CommandError(f"cannot run {mdadm}: {exc.strerror}") from None
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise CommandError(f"mdadm {' '.join(words)}: no answer in {timeout:g} s") from None
    return Output(
        argv,
        process.returncode,
        stdout.decode("utf-8", "replace"),
        stderr.decode("utf-8", "replace"),
    )
