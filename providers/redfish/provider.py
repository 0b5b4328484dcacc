"""Entry point of the Redfish BMC provider: one request on stdin, protocol events on stdout.

Request params (credentials travel in the request for now; see docs/limitations.md):

    host, port (443), username, password, scheme ("https" or "http"),
    tls_fingerprint_sha256 (the BMC certificate's SHA-256) or insecure: true,
    system_id (optional: which member of Systems), power_timeout_seconds (90),
    graceful (power_off only), boot_mode ("UEFI" or "Legacy", boot_pxe_once only)

Actions: power_state, power_on, power_off, reset, boot_pxe_once, clear_boot_override,
inventory. This program must never print the password, and never write anything but
protocol events to stdout.
"""

import json
import os
import sys

try:  # imported as providers.redfish.provider (tests, appliance code)
    from .client import BmcError, Client
    from .system import System
except ImportError:
    # Run as the provider: the sandbox starts `python3 -I`, which leaves the script's own
    # directory off sys.path.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from client import BmcError, Client
    from system import System

ACTIONS = {
    "power_state": lambda s, p: s.power_state(),
    "power_on": lambda s, p: s.power_on(),
    "power_off": lambda s, p: s.power_off(graceful=p.get("graceful") is True),
    "reset": lambda s, p: s.reset(),
    "boot_pxe_once": lambda s, p: s.boot_pxe_once(mode=p.get("boot_mode")),
    "clear_boot_override": lambda s, p: s.clear_boot_override(),
    "inventory": lambda s, p: s.inventory(),
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


def client_from(params):
    """A Client from the request params; raises ValueError naming the bad param."""
    for key in ("host", "username", "password"):
        if not isinstance(params.get(key), str) or not params[key]:
            raise ValueError(f"params.{key}: expected non-empty text")
    port = params.get("port", 443)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ValueError(f"params.port: expected 1-65535, got {port!r:.40}")
    return Client(
        params["host"],
        port,
        params["username"],
        params["password"],
        scheme=params.get("scheme", "https"),
        fingerprint=params.get("tls_fingerprint_sha256"),
        insecure=params.get("insecure") is True,
    )


def handle(request, events, sleep=None):
    """Run one request; always ends with exactly one result event."""
    params = request.get("params") or {}
    action = request.get("action")
    if action not in ACTIONS:
        events.result("failed", f"unknown action {action!r:.60}; known: {sorted(ACTIONS)}")
        return
    try:
        client = client_from(params)
        timeout = params.get("power_timeout_seconds", 90)
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
            raise ValueError(f"params.power_timeout_seconds: expected > 0, got {timeout!r:.40}")
        if params.get("boot_mode") not in (None, "UEFI", "Legacy"):
            raise ValueError(
                f"params.boot_mode: expected UEFI or Legacy, got {params['boot_mode']!r:.40}"
            )
    except ValueError as exc:
        events.result("failed", f"bad request: {exc}")
        return
    options = {"system_id": params.get("system_id"), "power_timeout": float(timeout)}
    if sleep is not None:
        options["sleep"] = sleep
    system = System(client, events, **options)
    try:
        events.progress(5, f"{action} on {params['host']}:{client.port}")
        outcome = ACTIONS[action](system, params)
    except BmcError as exc:
        events.result("failed", str(exc), {"http_status": exc.status})
        return
    except (AttributeError, TypeError, KeyError, IndexError, ValueError) as exc:
        # A document of the wrong shape (a list where the schema has an object, ...): the
        # job gets one clear failure instead of a traceback and no result.
        message = f"unexpected document from the BMC: {type(exc).__name__}: {exc}"
        events.result("failed", message[:400])
        return
    data = {"system_path": system.path, **outcome["data"]}
    events.result("succeeded", outcome["message"], data)


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
