"""Raw kernel interfaces the sandbox needs, through ctypes and the C library only.

The runner is shared with the BootOS agent, which has the Python standard library and
nothing else, so every system call the sandbox makes goes through `syscall(2)` here with
numbers from the kernel's own tables. This module must never import anything outside the
standard library, and must never call a system call that changes state on import.
"""

import ctypes
import ctypes.util
import os
import platform

LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
LIBC.syscall.restype = ctypes.c_long

# unshare(2) flags, include/uapi/linux/sched.h.
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
NAMESPACE_FLAGS = (
    CLONE_NEWNS
    | CLONE_NEWCGROUP
    | CLONE_NEWUTS
    | CLONE_NEWIPC
    | CLONE_NEWUSER
    | CLONE_NEWPID
    | CLONE_NEWNET
)

# prctl(2) options, include/uapi/linux/prctl.h.
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_GET_SECCOMP = 21
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

# mount(2) flags, include/uapi/linux/mount.h.
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REC = 16384
MS_PRIVATE = 1 << 18

# Syscall numbers: x86_64 from arch/x86/entry/syscalls/syscall_64.tbl, aarch64 from the
# generic table include/uapi/asm-generic/unistd.h. Only the ones the sandbox names.
_X86_64 = {
    "ioctl": 16, "socket": 41, "socketpair": 53, "clone": 56, "uselib": 134,
    "ptrace": 101, "syslog": 103, "personality": 135, "vhangup": 153, "pivot_root": 155,
    "adjtimex": 159, "acct": 163, "settimeofday": 164, "mount": 165, "umount2": 166,
    "swapon": 167, "swapoff": 168, "reboot": 169, "iopl": 172, "ioperm": 173,
    "init_module": 175, "delete_module": 176, "quotactl": 179, "clock_settime": 227,
    "kexec_load": 246, "add_key": 248, "request_key": 249, "keyctl": 250, "unshare": 272,
    "perf_event_open": 298, "name_to_handle_at": 303, "open_by_handle_at": 304,
    "clock_adjtime": 305, "setns": 308, "process_vm_readv": 310, "process_vm_writev": 311,
    "kcmp": 312, "finit_module": 313, "seccomp": 317, "kexec_file_load": 320, "bpf": 321,
    "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "open_tree": 428, "move_mount": 429, "fsopen": 430,
    "fsconfig": 431, "fsmount": 432, "fspick": 433, "clone3": 435, "pidfd_getfd": 438,
    "mount_setattr": 442, "landlock_create_ruleset": 444, "landlock_add_rule": 445,
    "landlock_restrict_self": 446, "memfd_create": 319, "memfd_secret": 447,
    "capget": 125, "capset": 126, "fanotify_init": 300, "lookup_dcookie": 212,
    "quotactl_fd": 443, "mknod": 133, "mknodat": 259,
}  # fmt: skip
_AARCH64 = {
    "ioctl": 29, "socket": 198, "socketpair": 199, "clone": 220,
    "ptrace": 117, "syslog": 116, "personality": 92, "vhangup": 58, "pivot_root": 41,
    "adjtimex": 171, "acct": 89, "settimeofday": 170, "mount": 40, "umount2": 39,
    "swapon": 224, "swapoff": 225, "reboot": 142,
    "init_module": 105, "delete_module": 106, "quotactl": 60, "clock_settime": 112,
    "kexec_load": 104, "add_key": 217, "request_key": 218, "keyctl": 219, "unshare": 97,
    "perf_event_open": 241, "name_to_handle_at": 264, "open_by_handle_at": 265,
    "clock_adjtime": 266, "setns": 268, "process_vm_readv": 270, "process_vm_writev": 271,
    "kcmp": 272, "finit_module": 273, "seccomp": 277, "kexec_file_load": 294, "bpf": 280,
    "userfaultfd": 282, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "open_tree": 428, "move_mount": 429, "fsopen": 430,
    "fsconfig": 431, "fsmount": 432, "fspick": 433, "clone3": 435, "pidfd_getfd": 438,
    "mount_setattr": 442, "landlock_create_ruleset": 444, "landlock_add_rule": 445,
    "landlock_restrict_self": 446, "memfd_create": 279, "memfd_secret": 447,
    "capget": 90, "capset": 91, "fanotify_init": 262, "lookup_dcookie": 18,
    "quotactl_fd": 443, "mknodat": 33,
}  # fmt: skip

# AUDIT_ARCH_* values from include/uapi/linux/audit.h: the seccomp filter checks them
# first, so a 32-bit entry (int 0x80) cannot reach different syscall numbers.
AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_AARCH64 = 0xC00000B7


class KernelError(OSError):
    """A system call the sandbox depends on failed; carries the call's name."""


def machine():
    """The architecture name the tables above are keyed by."""
    name = platform.machine()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(name, name)


def syscall_table():
    """Name -> number for this machine; empty when the architecture is not supported."""
    return {"x86_64": _X86_64, "aarch64": _AARCH64}.get(machine(), {})


def audit_arch():
    return {"x86_64": AUDIT_ARCH_X86_64, "aarch64": AUDIT_ARCH_AARCH64}.get(machine())


def syscall(name, *args):
    """Call a syscall by name; raise KernelError naming it when it fails."""
    number = syscall_table().get(name)
    if number is None:
        raise KernelError(38, f"{name}: no syscall number known on {machine()}")
    result = LIBC.syscall(ctypes.c_long(number), *args)
    if result < 0:
        err = ctypes.get_errno()
        raise KernelError(err, f"{name}: {os.strerror(err)}")
    return result


def prctl(option, arg2=0, arg3=0, arg4=0, arg5=0):
    result = LIBC.prctl(
        ctypes.c_int(option),
        ctypes.c_ulong(arg2),
        ctypes.c_ulong(arg3),
        ctypes.c_ulong(arg4),
        ctypes.c_ulong(arg5),
    )
    if result < 0:
        err = ctypes.get_errno()
        raise KernelError(err, f"prctl({option}): {os.strerror(err)}")
    return result


def unshare(flags):
    if LIBC.unshare(ctypes.c_int(flags)) != 0:
        err = ctypes.get_errno()
        raise KernelError(err, f"unshare({flags:#x}): {os.strerror(err)}")


def setns(fd, nstype):
    if LIBC.setns(ctypes.c_int(fd), ctypes.c_int(nstype)) != 0:
        err = ctypes.get_errno()
        raise KernelError(err, f"setns({nstype:#x}): {os.strerror(err)}")


def mount(source, target, fstype, flags, data=None):
    def enc(value):
        return None if value is None else value.encode()

    result = LIBC.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data))
    if result != 0:
        err = ctypes.get_errno()
        raise KernelError(err, f"mount {target}: {os.strerror(err)}")


def sethostname(name):
    raw = name.encode()
    if LIBC.sethostname(raw, ctypes.c_size_t(len(raw))) != 0:
        err = ctypes.get_errno()
        raise KernelError(err, f"sethostname: {os.strerror(err)}")


def seccomp_available():
    """True when the kernel has seccomp filters (PR_GET_SECCOMP answers, not EINVAL)."""
    try:
        prctl(PR_GET_SECCOMP)
    except KernelError:
        return False
    return bool(syscall_table()) and audit_arch() is not None
