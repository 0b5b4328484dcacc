"""A seccomp BPF filter assembled by hand, and the supervisor side of its notifications.

The filter refuses the system calls a provider never needs and that would let it leave the
sandbox or harm the host (ptrace, mount, module loading, kexec, new namespaces, clock
changes, io_uring ...). A refused call is sent to the supervisor as a user notification
(SECCOMP_RET_USER_NOTIF, Linux 5.0): the supervisor records it for the job's audit trail
and answers EPERM, so the provider sees an ordinary error and the attempt is on record.
Where notifications are not available the filter answers EPERM itself (not recorded).

seccomp cannot read memory behind pointers: it sees socket() families and clone() flags
but not connect() addresses, so network destinations are enforced elsewhere (the network
namespace and Landlock's port rules). This module must never install a filter on import.
"""

import ctypes
import errno
import fcntl
import struct

from providers.sandbox import _kernel

# Refused outright. Grouped by what they would let a provider do.
REFUSED = (
    # inspect or control other processes
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    # change the filesystem tree or escape it
    "mount", "umount2", "pivot_root", "open_tree", "move_mount", "fsopen", "fsconfig",
    "fsmount", "fspick", "mount_setattr", "name_to_handle_at", "open_by_handle_at",
    # replace or extend the kernel
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "bpf", "perf_event_open", "uselib", "iopl", "ioperm",
    # kernel keyrings
    "keyctl", "add_key", "request_key",
    # what CAP_SYS_ADMIN would open to a RAID provider granted it: watching every file
    # system (fanotify), kernel cookies, quotas by file descriptor
    "fanotify_init", "lookup_dcookie", "quotactl_fd",
    # namespaces
    "setns", "unshare",
    # host-wide state
    "reboot", "swapon", "swapoff", "settimeofday", "clock_settime", "clock_adjtime",
    "adjtimex", "acct", "quotactl", "vhangup", "syslog", "personality", "userfaultfd",
    # io_uring runs syscalls the filter never sees
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    # an anonymous file is executable through /proc/self/fd or execveat: it would run code
    # the provider wrote, which the noexec work directory and Landlock otherwise prevent
    "memfd_create", "memfd_secret",
)  # fmt: skip

AF_UNIX, AF_INET, AF_INET6 = 1, 2, 10
TIOCSTI = 0x5412  # pushes bytes into a terminal's input queue: a classic escape
X32_SYSCALL_BIT = 0x40000000

RET_KILL_PROCESS = 0x80000000
RET_ERRNO = 0x00050000
RET_USER_NOTIF = 0x7FC00000
RET_ALLOW = 0x7FFF0000

SET_MODE_FILTER = 1
GET_NOTIF_SIZES = 3
FILTER_FLAG_NEW_LISTENER = 1 << 3

# ioctl numbers: _IOWR('!', 0, struct seccomp_notif) and _IOWR('!', 1, ..._resp).
IOCTL_NOTIF_RECV = 0xC0502100
IOCTL_NOTIF_SEND = 0xC0182101
NOTIF_FORMAT = "=QII iI Q 6Q"  # id, pid, flags, then struct seccomp_data
RESP_FORMAT = "=Qqii"

# Classic BPF opcodes.
LD_W_ABS = 0x20
JEQ_K = 0x15
JGE_K = 0x35
JSET_K = 0x45
RET_K = 0x06

OFFSET_NR = 0
OFFSET_ARCH = 4
OFFSET_ARG0 = 16  # args[0]; the low 32 bits on a little-endian machine


class SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    ]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]


def build(network=False, notify=True, device_numbers=()):
    """The filter as a list of (code, jt, jf, k) with jumps resolved.

    `device_numbers` (dev_t values) is given only to a run that holds CAP_MKNOD with a
    capability grant: mknod then makes nodes for those devices and no other (md's tools
    open an array through a node they make themselves; see launcher.PRIVATE_TMP).

    Written with labels: a jump names where it goes when true and when false ("next" for
    the following instruction); `_resolve` turns names into the relative offsets BPF wants.
    """
    table = _kernel.syscall_table()
    refuse = RET_USER_NOTIF if notify else RET_ERRNO | errno.EPERM
    program = [
        ("ld", OFFSET_ARCH),
        ("jeq", _kernel.audit_arch(), "next", "kill"),
        ("ld", OFFSET_NR),
    ]
    if _kernel.machine() == "x86_64":
        program.append(("jge", X32_SYSCALL_BIT, "refuse", "next"))
    for name in REFUSED:
        program.append(("jeq", table[name], "refuse", "next"))
    program += [
        # clone3 passes its flags in memory the filter cannot read; glibc falls back to
        # clone() on ENOSYS, whose flags the filter can check.
        ("jeq", table["clone3"], "enosys", "next"),
        ("jeq", table["clone"], "clone", "next"),
        ("jeq", table["socket"], "socket", "next"),
        ("jeq", table["ioctl"], "ioctl", "next"),
    ]
    if device_numbers:
        program += _mknod_checks(table, device_numbers, refuse)
    program += [
        ("ret", RET_ALLOW),
        ("label", "clone"),
        ("ld", OFFSET_ARG0),
        ("jset", _kernel.NAMESPACE_FLAGS, "refuse", "allow"),
        ("label", "ioctl"),
        ("ld", OFFSET_ARG0 + 8),
        ("jeq", TIOCSTI, "refuse", "allow"),
        ("label", "socket"),
        ("ld", OFFSET_ARG0),
        ("jeq", AF_UNIX, "allow", "next"),
    ]
    if network:
        program += [("jeq", AF_INET, "allow", "next"), ("jeq", AF_INET6, "allow", "next")]
    program += [
        ("ret", refuse),
        ("label", "allow"),
        ("ret", RET_ALLOW),
        ("label", "refuse"),
        ("ret", refuse),
        ("label", "enosys"),
        ("ret", RET_ERRNO | errno.ENOSYS),
        ("label", "kill"),
        ("ret", RET_KILL_PROCESS),
    ]
    return _resolve(program)


def _mknod_checks(table, device_numbers, refuse):
    """Jumps to the dev_t test for mknodat (dev in args[3]) and mknod (args[2]).

    dev 0 stays allowed: it is what a FIFO or socket node carries. The kernel reads dev as
    a 32-bit value, so the low word of the argument is all that counts.
    """
    checks = [("jeq", table["mknodat"], "mknodat", "next")]
    if "mknod" in table:
        checks.append(("jeq", table["mknod"], "mknod", "next"))
    checks.append(("ret", RET_ALLOW))
    for label, argument in (("mknodat", 3), ("mknod", 2)):
        checks += [("label", label), ("ld", OFFSET_ARG0 + 8 * argument)]
        checks += [("jeq", number, "allow", "next") for number in (0, *device_numbers)]
        checks.append(("ret", refuse))
    return checks


def _resolve(program):
    labels, position = {}, 0
    for item in program:
        if item[0] == "label":
            labels[item[1]] = position
        else:
            position += 1

    def offset(target, here):
        if target == "next":
            return 0
        distance = labels[target] - here - 1
        if not 0 <= distance <= 255:
            raise ValueError(f"seccomp jump to {target!r} out of range: {distance}")
        return distance

    out = []
    for item in program:
        op = item[0]
        here = len(out)
        if op == "label":
            continue
        if op == "ld":
            out.append((LD_W_ABS, 0, 0, item[1]))
        elif op == "ret":
            out.append((RET_K, 0, 0, item[1]))
        else:
            code = {"jeq": JEQ_K, "jge": JGE_K, "jset": JSET_K}[op]
            out.append((code, offset(item[2], here), offset(item[3], here), item[1]))
    return out


def install(network=False, notify=True, device_numbers=()):
    """Install the filter on this process; returns the notification fd or None.

    no_new_privs must already be set. Falls back to plain EPERM answers when the kernel
    refuses a listener (before Linux 5.0).
    """
    if notify:
        try:
            program = build(network, notify=True, device_numbers=device_numbers)
            return _install(program, FILTER_FLAG_NEW_LISTENER)
        except _kernel.KernelError:
            pass
    _install(build(network, notify=False, device_numbers=device_numbers), 0)
    return None


def _install(instructions, flags):
    array = (SockFilter * len(instructions))(*[SockFilter(*i) for i in instructions])
    prog = SockFprog(len(instructions), array)
    return _kernel.syscall("seccomp", SET_MODE_FILTER, flags, ctypes.byref(prog))


def receive(listener):
    """One pending notification as a dict, or None when the target is gone."""
    buf = bytearray(struct.calcsize(NOTIF_FORMAT))
    try:
        fcntl.ioctl(listener, IOCTL_NOTIF_RECV, buf, True)
    except OSError:
        return None
    fields = struct.unpack(NOTIF_FORMAT, buf)
    return {"id": fields[0], "pid": fields[1], "nr": fields[3], "args": list(fields[6:12])}


def refuse(listener, notification):
    """Answer a notification with EPERM; a target that died meanwhile is not an error."""
    resp = bytearray(struct.pack(RESP_FORMAT, notification["id"], 0, -errno.EPERM, 0))
    try:
        fcntl.ioctl(listener, IOCTL_NOTIF_SEND, resp, True)
    except OSError:
        return False
    return True


def syscall_name(number):
    for name, value in _kernel.syscall_table().items():
        if value == number:
            return name
    return f"syscall {number}"
