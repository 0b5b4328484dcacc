"""Process hygiene for a process that holds keys.

harden_process() turns off core dumps and ptrace-style access so a crash or a
curious local user cannot read key bytes out of memory; scrub_env() removes
secrets from an environment before it is handed to a child (a provider's
process must not find a PIN or passphrase in /proc/<pid>/environ); zero()
overwrites a bytearray that held key material.

Nothing here may log the values it removes or overwrites.
"""

import ctypes
import ctypes.util
import logging
import re
import resource

log = logging.getLogger(__name__)

# prctl(2) option numbers from <linux/prctl.h>.
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4

# Names that carry secrets by convention, plus the variables that point a
# PKCS#11 library at its token store (a child has no business with the HSM).
SECRET_NAME = re.compile(
    r"(KEY|PIN|PASS|PASSWORD|PASSPHRASE|SECRET|TOKEN|CREDENTIAL|SOFTHSM|PKCS11)",
    re.IGNORECASE,
)


def harden_process() -> dict:
    """Disable core dumps (RLIMIT_CORE 0) and mark the process non-dumpable.

    Returns what was put in force so the caller can log it once. Linux only:
    PR_SET_DUMPABLE 0 also stops other users' processes from ptrace-attaching
    and makes /proc/<pid>/mem unreadable to them.
    """
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    result = _libc().prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    if result != 0:
        errno = ctypes.get_errno()
        log.warning("prctl(PR_SET_DUMPABLE, 0) failed with errno %d; core dumps are off", errno)
    return {"rlimit_core": 0, "dumpable": result != 0}


def process_state() -> dict:
    """What harden_process() changes, as the kernel reports it now (for tests and `status`)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    return {"rlimit_core": (soft, hard), "dumpable": _libc().prctl(PR_GET_DUMPABLE, 0, 0, 0, 0)}


def _libc():
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def scrub_env(env) -> dict:
    """A copy of env without variables whose names say they hold a secret."""
    return {name: value for name, value in env.items() if not SECRET_NAME.search(name)}


def zero(buffer: bytearray) -> None:
    """Overwrite key material in place.

    Python bytes cannot be wiped, so keys are kept in bytearrays where the code
    controls them; copies made inside libraries are beyond reach.
    """
    for index in range(len(buffer)):
        buffer[index] = 0
