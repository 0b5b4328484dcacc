"""Keep exactly the granted Linux capabilities (CAP_SYS_ADMIN, CAP_SYS_RAWIO) and no other.

A RAID tool's ioctls on its controller (md's SET_ARRAY_INFO and RUN_ARRAY, MegaRAID's
firmware pass-through) check a capability against the initial user namespace, so a
provider granted one cannot live in a user namespace of its own: it stays uid 0 in the
host's user namespace, inside its own mount, PID, IPC, UTS and network namespaces. Every
capability it was not granted is removed from all five sets (capabilities(7)):

1. bounding: dropped first, while CAP_SETPCAP is still held; an execve as root then
   computes permitted = bounding, so the granted set is all a child can ever hold;
2. ambient: cleared;
3. effective, permitted, inheritable: set by capset(2) to the granted set (inheritable
   empty), which also gives up CAP_SETPCAP, CAP_DAC_OVERRIDE and the rest for good.

Called only in the sandbox's init, after every step that needs the full root set and
before no_new_privs, Landlock and seccomp. This module must never change the calling
process on import, and never grant a capability outside ALLOWED.
"""

import ctypes

from providers.sandbox import _kernel

# include/uapi/linux/capability.h. A manifest may ask only for CAP_SYS_RAWIO and
# CAP_SYS_ADMIN (providers/manifest.py); CAP_MKNOD comes with them, held in check by
# seccomp (granted devices' numbers only) and Landlock (the run's private /tmp only).
ALLOWED = {"CAP_SYS_RAWIO": 17, "CAP_SYS_ADMIN": 21, "CAP_MKNOD": 27}
VERSION_3 = 0x20080522  # _LINUX_CAPABILITY_VERSION_3: two 32-bit words per set
STATUS_FIELDS = {
    "CapInh": "inheritable",
    "CapPrm": "permitted",
    "CapEff": "effective",
    "CapBnd": "bounding",
    "CapAmb": "ambient",
}


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def mask(names):
    """The bit mask of the named capabilities; ValueError for a name outside ALLOWED."""
    bits = 0
    for name in names:
        if name not in ALLOWED:
            raise ValueError(f"capability {name!r} cannot be granted; only {sorted(ALLOWED)}")
        bits |= 1 << ALLOWED[name]
    return bits


def last_capability():
    """The highest capability number this kernel knows (CAP_LAST_CAP)."""
    with open("/proc/sys/kernel/cap_last_cap") as handle:
        return int(handle.read())


def keep_only(names):
    """Drop every capability but `names` from all five sets of this process."""
    keep = mask(names)
    for number in range(last_capability() + 1):
        if not keep & (1 << number):
            _kernel.prctl(_kernel.PR_CAPBSET_DROP, number)
    _kernel.prctl(_kernel.PR_CAP_AMBIENT, _kernel.PR_CAP_AMBIENT_CLEAR_ALL)
    header = _Header(VERSION_3, 0)
    data = (_Data * 2)()
    data[0] = _Data(keep & 0xFFFFFFFF, keep & 0xFFFFFFFF, 0)
    data[1] = _Data(keep >> 32, keep >> 32, 0)
    _kernel.syscall("capset", ctypes.byref(header), ctypes.byref(data))


def in_force(status_path="/proc/self/status"):
    """{set name: [capability names]} as the kernel reports them for this process."""
    names = {number: name for name, number in ALLOWED.items()}
    found = {}
    with open(status_path) as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in STATUS_FIELDS:
                bits = int(value.strip(), 16)
                found[STATUS_FIELDS[key]] = [
                    names.get(n, f"cap {n}") for n in range(64) if bits & (1 << n)
                ]
    return found
