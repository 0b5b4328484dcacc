"""Entry point of the IPMI BMC provider: one request on stdin, protocol events on stdout.

Request params (credentials travel in the request for now; see docs/limitations.md):

    host, port (623), username, password, power_timeout_seconds (60),
    boot_mode ("UEFI" adds options=efiboot; boot_pxe_once only)

Actions: power_state, power_on, power_off, reset, boot_pxe_once. This program must never
print the password or pass it to ipmitool on the command line.
"""

import json
import os
import sys

try:  # imported as providers.ipmi.provider (tests, appliance code)
    from .ipmitool import Bmc, IpmiError
except ImportError:
    # Run as the provider: the sandbox starts `python3 -I`, which leaves the script's own
    # directory off sys.path.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from ipmitool import Bmc, IpmiError


def _power_state(bmc, params):
    state = bmc.power_state()
    return {"message": f"power is {state}", "data": {"power_state": state}}


ACTIONS = {
    "power_state": _power_state,
    "power_on": lambda bmc, p: bmc.power_on(),
    "power_off": lambda bmc, p: bmc.power_off(),
    "reset": lambda bmc, p: bmc.reset(),
    "boot_pxe_once": lambda bmc, p: bmc.boot_pxe_once(uefi=p.get("boot_mode") == "UEFI"),
}


class Events:
    """Writes protocol events to a stream, one JSON line each, flushed."""

    def __init__(self, stream):
        self.stream = stream

    def emit(self, event):
        self.stream.write(json.dumps(event, separators=(",", ":")) + "\n")
        self.stream.flush()

    def progress(self, percent, message):
        self.emit({"type": "progress", "percent": percent, "message": message})

    def log(self, level, message):
        self.emit({"type": "log", "level": level, "message": message})

    def result(self, status, message, data=None):
        self.emit({"type": "result", "status": status, "message": message, "data": data or {}})


def bmc_from(params, events, **options):
    """A Bmc from the request params; raises ValueError naming the bad param."""
    for key in ("host", "username", "password"):
        value = params.get(key)
        # ipmitool takes host and user as arguments: no option-like or control text.
        if not isinstance(value, str) or not value or (key != "password" and value[0] == "-"):
            raise ValueError(f"params.{key}: expected non-empty text not starting with '-'")
        if not value.isprintable():
            raise ValueError(f"params.{key}: control characters are not allowed")
    port = params.get("port", 623)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ValueError(f"params.port: expected 1-65535, got {port!r:.40}")
    timeout = params.get("power_timeout_seconds", 60)
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
        raise ValueError(f"params.power_timeout_seconds: expected > 0, got {timeout!r:.40}")
    return Bmc(params["host"], port, params["username"], params["password"], events,
               power_timeout=float(timeout), **options)  # fmt: skip


def handle(request, events, **options):
    """Run one request; always ends with exactly one result event."""
    params = request.get("params") or {}
    action = request.get("action")
    if action not in ACTIONS:
        events.result("failed", f"unknown action {action!r:.60}; known: {sorted(ACTIONS)}")
        return
    try:
        bmc = bmc_from(params, events, **options)
    except ValueError as exc:
        events.result("failed", f"bad request: {exc}")
        return
    try:
        events.progress(5, f"{action} on {bmc.host}:{bmc.port}")
        outcome = ACTIONS[action](bmc, params)
    except IpmiError as exc:
        events.result("failed", str(exc))
        return
    events.result("succeeded", outcome["message"], outcome["data"])


def main():
    events = Events(sys.stdout)
    try:
        request = json.loads(sys.stdin.readline())
        if not isinstance(request, dict):
            raise ValueError("the request is not a JSON object")
    except ValueError as exc:
        events.result("failed", f"bad request: {exc}")
        return
    handle(request, events)


if __name__ == "__main__":
    main()
