"""IPMI chassis control through ipmitool: power state, on, off, reset and one-time PXE boot.

The password never appears on ipmitool's command line or in its environment: it goes in a
file of mode 0600 in the run's own work directory (`-f`), removed after each call. A command
line is readable by every local user (/proc/PID/cmdline, `ps`) and lands in process
accounting and audit logs; an environment is copied into every child and shows in
/proc/PID/environ for as long as the process lives. Every change is read
back (`chassis power status`, `chassis bootparam get 5`), because a BMC that accepted a
command has not necessarily done it. This module must never put the password in argv, in an
environment or in an event, and must never run anything but ipmitool.
"""

import contextlib
import os
import re
import subprocess
import tempfile
import time

IPMITOOL = "/usr/bin/ipmitool"
POWER_POLL_SECONDS = 1.0
# Cipher suite 3 (RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128) is the one every IPMI 2.0 BMC
# supports; without `-C 3` ipmitool first tries 17, and BMCs that lack it (ipmi_sim among
# them) answer only after a ~10 s timeout per call.
CIPHER_SUITE = "3"
POWER_STATUS = re.compile(r"Chassis Power is (on|off)", re.IGNORECASE)
BOOT_DEVICE = re.compile(r"Boot Device Selector\s*:\s*(.+)")
BOOT_VALID = re.compile(r"Boot Flag (Valid|Invalid)")
BOOT_ONCE = re.compile(r"Options apply to (only next boot|all future boots)")


class IpmiError(Exception):
    """ipmitool failed or the BMC did not do what it answered; the message says which."""


class Bmc:
    """One BMC reached through ipmitool over RMCP+ (lanplus)."""

    def __init__(self, host, port, username, password, events, run=subprocess.run,
                 clock=time.monotonic, sleep=time.sleep, power_timeout=60.0,
                 command_timeout=30.0):  # fmt: skip
        self.host = host
        self.port = port
        self.username = username
        self._password = password
        self.events = events
        self._run = run
        self.clock = clock
        self.sleep = sleep
        self.power_timeout = power_timeout
        self.command_timeout = command_timeout

    def argv(self, *command, password_file):
        """ipmitool's arguments: no password among them (it is read from `password_file`)."""
        return [IPMITOOL, "-I", "lanplus", "-C", CIPHER_SUITE, "-H", self.host,
                "-p", str(self.port), "-U", self.username, "-f", password_file,
                *command]  # fmt: skip

    def ipmitool(self, *command):
        """Run one ipmitool command; returns its stdout, raises IpmiError on failure."""
        environment = {"PATH": "/usr/bin:/bin"}
        try:
            with _password_file(self._password) as path:
                argv = self.argv(*command, password_file=path)
                finished = self._run(argv, env=environment, capture_output=True, text=True,
                                     timeout=self.command_timeout)  # fmt: skip
        except subprocess.TimeoutExpired:
            raise IpmiError(f"ipmitool {' '.join(command)}: no answer within "
                            f"{self.command_timeout:g} s") from None  # fmt: skip
        except OSError as exc:
            raise IpmiError(f"cannot run {IPMITOOL}: {exc.strerror}") from None
        if finished.returncode != 0:
            said = (finished.stderr or finished.stdout).strip().splitlines()
            reason = said[-1] if said else f"exit status {finished.returncode}"
            raise IpmiError(f"ipmitool {' '.join(command)} on {self.host}:{self.port}: {reason}")
        return finished.stdout

    # --- power -------------------------------------------------------------------------

    def power_state(self):
        output = self.ipmitool("chassis", "power", "status")
        found = POWER_STATUS.search(output)
        if not found:
            raise IpmiError(f"expected 'Chassis Power is on|off', got {output.strip()!r:.120}")
        return found.group(1).lower()

    def power_on(self):
        return self._power("on", "on")

    def power_off(self):
        return self._power("off", "off")

    def reset(self):
        if self.power_state() == "off":
            # `chassis power reset` on a machine that is off does nothing on most BMCs;
            # the intent (boot it now) is served by powering it on.
            self.events.log("info", "the system is off: reset powers it on")
            return self._power("on", "on", known="off")
        self.ipmitool("chassis", "power", "reset")
        final = self._wait_power("on")
        return {"message": f"reset; power is {final}", "data": {"power_state": final}}

    def _power(self, command, wanted, known=None):
        if (known or self.power_state()) == wanted:
            return {"message": f"power was already {wanted}", "data": {"power_state": wanted}}
        self.ipmitool("chassis", "power", command)
        final = self._wait_power(wanted)
        return {"message": f"power is {final}", "data": {"power_state": final}}

    def _wait_power(self, wanted):
        deadline = self.clock() + self.power_timeout
        while True:
            state = self.power_state()
            if state == wanted:
                return state
            if self.clock() >= deadline:
                raise IpmiError(f"the BMC accepted the command but power is still {state} "
                                f"after {self.power_timeout:g} s (expected {wanted})")  # fmt: skip
            self.events.progress(None, f"waiting for power {wanted}, now {state}")
            self.sleep(POWER_POLL_SECONDS)

    # --- boot device -------------------------------------------------------------------

    def boot_pxe_once(self, uefi=False):
        command = ["chassis", "bootdev", "pxe"]
        if uefi:
            command.append("options=efiboot")
        self.ipmitool(*command)
        flags = parse_boot_flags(self.ipmitool("chassis", "bootparam", "get", "5"))
        if flags["device"] is None or "pxe" not in flags["device"].lower():
            raise IpmiError(f"the BMC accepted bootdev pxe but reads back {flags['device']!r}")
        if flags["valid"] is False:
            # IPMI 2.0 section 28.12: the BMC clears the valid bit 60 s after it was set
            # unless told otherwise; ipmi_sim never reports it set.
            warning = "the BMC reports the boot flags as not valid: the PXE override may be "
            self.events.log("warning", warning + "ignored at the next boot")
        return {"message": f"boot device read back: {flags['device']}", "data": flags}


@contextlib.contextmanager
def _password_file(password):
    """A 0600 file holding the password, in the sandbox's work directory when there is one."""
    fd, path = tempfile.mkstemp(prefix="ipmi-", dir=os.environ.get("CLOUDBOOT_WORK_DIR"))
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(password)
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def parse_boot_flags(output):
    """The boot flags (boot parameter 5) from `ipmitool chassis bootparam get 5`."""
    device = BOOT_DEVICE.search(output)
    valid = BOOT_VALID.search(output)
    once = BOOT_ONCE.search(output)
    return {
        "device": device.group(1).strip() if device else None,
        "valid": None if valid is None else valid.group(1) == "Valid",
        "once": None if once is None else once.group(1) == "only next boot",
    }
