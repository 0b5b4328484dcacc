"""Landlock rulesets through raw syscalls: which paths and TCP ports a provider may use.

Landlock is additive-deny: once a process restricts itself, every file access type the
ruleset "handles" is refused except beneath the paths given a rule, and the restriction is
inherited by every child and survives execve. The ABI version decides which access types
exist (Documentation/userspace-api/landlock.rst); asking for an access type the running
kernel does not know makes the syscall fail, so the masks below are cut to the ABI.

This module must never restrict the calling process on import, and must never be called in
the runner's own process: only in the sandboxed child right before execve.
"""

import ctypes
import os

from providers.sandbox import _kernel

# Filesystem access rights, include/uapi/linux/landlock.h, with the ABI that added them.
FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_REMOVE_DIR = 1 << 4
FS_REMOVE_FILE = 1 << 5
FS_MAKE_CHAR = 1 << 6
FS_MAKE_DIR = 1 << 7
FS_MAKE_REG = 1 << 8
FS_MAKE_SOCK = 1 << 9
FS_MAKE_FIFO = 1 << 10
FS_MAKE_BLOCK = 1 << 11
FS_MAKE_SYM = 1 << 12
FS_REFER = 1 << 13  # ABI 2: renames and links across directories
FS_TRUNCATE = 1 << 14  # ABI 3
FS_IOCTL_DEV = 1 << 15  # ABI 5: ioctl on character and block devices

NET_BIND_TCP = 1 << 0  # ABI 4
NET_CONNECT_TCP = 1 << 1

SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1

RULE_PATH_BENEATH = 1
RULE_NET_PORT = 2
CREATE_RULESET_VERSION = 1 << 0

READ = FS_READ_FILE | FS_READ_DIR
READ_EXECUTE = READ | FS_EXECUTE
WRITE = (
    FS_WRITE_FILE
    | FS_REMOVE_DIR
    | FS_REMOVE_FILE
    | FS_MAKE_DIR
    | FS_MAKE_REG
    | FS_MAKE_SYM
    | FS_MAKE_FIFO
    | FS_MAKE_SOCK
    | FS_REFER
    | FS_TRUNCATE
)
DEVICE = FS_READ_FILE | FS_WRITE_FILE | FS_IOCTL_DEV


class RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # the kernel struct is __attribute__((packed)): 12 bytes
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class NetPortAttr(ctypes.Structure):
    _fields_ = [("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64)]


def abi_version():
    """The kernel's Landlock ABI (0 when Landlock is absent or disabled at boot)."""
    try:
        return _kernel.syscall(
            "landlock_create_ruleset", None, ctypes.c_size_t(0), CREATE_RULESET_VERSION
        )
    except _kernel.KernelError:
        return 0


def handled_fs(abi):
    """Every filesystem right the given ABI knows: all of them are handled (denied by default)."""
    rights = (1 << 13) - 1
    if abi >= 2:
        rights |= FS_REFER
    if abi >= 3:
        rights |= FS_TRUNCATE
    if abi >= 5:
        rights |= FS_IOCTL_DEV
    return rights


def restrict(paths, ports, abi, restrict_network=True):
    """Restrict this process to `paths` ({path: rights}) and TCP `ports` ({port: rights}).

    Returns a dict of what is in force. Missing paths are skipped (a library directory that
    does not exist on this system needs no rule). Raises KernelError if the kernel refuses.
    """
    fs_mask = handled_fs(abi)
    net_mask = NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 and restrict_network else 0
    scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0
    attr = RulesetAttr(fs_mask, net_mask, scoped)
    size = 8 if abi < 4 else (16 if abi < 6 else 24)
    ruleset = _kernel.syscall(
        "landlock_create_ruleset", ctypes.byref(attr), ctypes.c_size_t(size), 0
    )
    try:
        added = _add_path_rules(ruleset, paths, fs_mask)
        if net_mask:
            _add_port_rules(ruleset, ports, net_mask)
        _kernel.syscall("landlock_restrict_self", ruleset, 0)
    finally:
        os.close(ruleset)
    return {
        "landlock_abi": abi,
        "landlock_fs": True,
        "landlock_net": bool(net_mask),
        "landlock_scope": bool(scoped),
        "landlock_paths": added,
    }


def _add_path_rules(ruleset, paths, fs_mask):
    added = []
    for path, rights in sorted(paths.items()):
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            allowed = rights & fs_mask
            if not os.path.isdir(path):
                # Directory-only rights on a file make the kernel answer EINVAL.
                allowed &= FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV
            rule = PathBeneathAttr(allowed, fd)
            _kernel.syscall("landlock_add_rule", ruleset, RULE_PATH_BENEATH, ctypes.byref(rule), 0)
            added.append(path)
        finally:
            os.close(fd)
    return added


def _add_port_rules(ruleset, ports, net_mask):
    for port, rights in sorted(ports.items()):
        rule = NetPortAttr(rights & net_mask, port)
        _kernel.syscall("landlock_add_rule", ruleset, RULE_NET_PORT, ctypes.byref(rule), 0)
