"""Redfish ComputerSystem work: discovery, power, one-time PXE boot and inventory.

BMCs do not always do what they answer. Every write is therefore read back: a PATCH that
returns 200 but leaves the old boot override is a failure, a power change is polled until
the system reports it (emulators and real BMCs apply it seconds later), and a BMC that
turns a one-time override into a continuous one is reported with a warning and a note that
the override must be cleared once the machine has booted (`clear_boot_override`).

The system is found from the service root (/redfish/v1 -> Systems -> member), never from a
hard-coded vendor path. This module must never write anything but the documented Boot
properties and the Reset action, and must never retry a write that the BMC accepted.
"""

import time

try:  # imported as providers.redfish.system (tests, appliance code)
    from .client import BmcError
except ImportError:  # run as the provider: the package directory is the import root
    from client import BmcError

SERVICE_ROOT = "/redfish/v1"
MAX_MEMBERS = 64
POWER_POLL_SECONDS = 1.0
READBACK_TRIES = 3
# Preference order per intent, from the ResetType values of the Redfish Resource schema.
RESET_TYPES = {
    "on": ("On", "ForceOn", "PushPowerButton"),
    "off": ("ForceOff", "GracefulShutdown", "PushPowerButton"),
    "graceful_off": ("GracefulShutdown", "ForceOff"),
    "restart": ("ForceRestart", "GracefulRestart", "PowerCycle"),
}
KNOWN_RESET_TYPES = frozenset((
    "On", "ForceOff", "GracefulShutdown", "GracefulRestart", "ForceRestart", "Nmi", "ForceOn",
    "PushPowerButton", "PowerCycle", "Suspend", "Pause", "Resume", "FullPowerCycle",
))  # fmt: skip


class System:
    """One BMC's first (or chosen) ComputerSystem, with an event sink and a clock."""

    def __init__(self, client, events, clock=time.monotonic, sleep=time.sleep,
                 system_id=None, power_timeout=90.0):  # fmt: skip
        self.client = client
        self.events = events
        self.clock = clock
        self.sleep = sleep
        self.system_id = system_id
        self.power_timeout = power_timeout
        self.path = None

    # --- discovery ---------------------------------------------------------------------

    def discover(self):
        """Walk the service root to the ComputerSystem; returns its path."""
        root = self._get(SERVICE_ROOT)
        systems = _link(root, "Systems")
        if systems is None:
            raise BmcError(f"the service root {SERVICE_ROOT} has no Systems link")
        members = [_odata_id(m) for m in self._get(systems).get("Members") or []]
        members = [m for m in members if m]
        if not members:
            raise BmcError(f"{systems} lists no systems")
        self.path = self._choose(members)
        return self.path

    def _choose(self, members):
        if self.system_id is None:
            if len(members) > 1:
                self.events.log("info", f"{len(members)} systems; using the first, {members[0]}")
            return members[0]
        for member in members:
            if member.rstrip("/").rsplit("/", 1)[-1] == self.system_id:
                return member
        raise BmcError(f"system_id {self.system_id!r} is not among {members[:8]}")

    def document(self):
        if self.path is None:
            self.discover()
        return self._get(self.path)

    def _get(self, path):
        response = self.client.get(path)
        if response.status != 200:
            raise BmcError(f"GET {path}: HTTP {response.status}", response.status, response.body)
        document = response.json()
        if not isinstance(document, dict):
            raise BmcError(f"GET {path}: expected a JSON object")
        return document

    # --- power -------------------------------------------------------------------------

    def power_state(self):
        state = self.document().get("PowerState")
        return {"message": f"power is {state}", "data": {"power_state": state}}

    def power_on(self):
        return self._power("on", "On")

    def power_off(self, graceful=False):
        return self._power("graceful_off" if graceful else "off", "Off")

    def reset(self):
        document = self.document()
        if document.get("PowerState") == "Off":
            # A restart of a machine that is off does nothing on several BMCs; the intent
            # (boot it now, e.g. into PXE) is served by powering it on.
            self.events.log("info", "the system is off: reset powers it on")
            return self._power("on", "On", document)
        reset_type = self._send_reset("restart", document)
        final = self._wait_power("On")
        return {
            "message": f"reset with {reset_type}; power is {final}",
            "data": {"reset_type": reset_type, "power_state": final},
        }

    def _power(self, intent, wanted, document=None):
        document = document or self.document()
        if document.get("PowerState") == wanted:
            return {"message": f"power was already {wanted}", "data": {"power_state": wanted}}
        reset_type = self._send_reset(intent, document)
        final = self._wait_power(wanted)
        return {
            "message": f"power is {final} ({reset_type})",
            "data": {"reset_type": reset_type, "power_state": final},
        }

    def _send_reset(self, intent, document):
        action = (document.get("Actions") or {}).get("#ComputerSystem.Reset") or {}
        target = action.get("target")
        if not target:
            raise BmcError(f"{self.path} offers no #ComputerSystem.Reset action")
        reset_type = choose_reset_type(intent, action)
        response = self.client.post(target, {"ResetType": reset_type})
        if response.status not in (200, 202, 204):
            raise BmcError(
                f"POST {target} ResetType={reset_type}: HTTP {response.status}",
                response.status,
                response.body,
            )
        self.events.log("info", f"{reset_type} accepted (HTTP {response.status})")
        return reset_type

    def _wait_power(self, wanted):
        deadline = self.clock() + self.power_timeout
        state = None
        while True:
            state = self._get(self.path).get("PowerState")
            if state == wanted:
                return state
            if self.clock() >= deadline:
                raise BmcError(
                    f"the BMC accepted the request but power is still {state} "
                    f"after {self.power_timeout:g} s (expected {wanted})"
                )
            self.events.progress(None, f"waiting for power {wanted}, now {state}")
            self.sleep(POWER_POLL_SECONDS)

    # --- boot override -----------------------------------------------------------------

    def boot_pxe_once(self, mode=None):
        boot = self.document().get("Boot") or {}
        allowed = boot.get("BootSourceOverrideTarget@Redfish.AllowableValues")
        if allowed is not None and "Pxe" not in allowed:
            raise BmcError(f"the BMC does not offer Pxe as a boot target: {allowed}")
        full = {"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once"}
        if mode is not None:
            full["BootSourceOverrideMode"] = mode
        self._patch_boot(full, {"BootSourceOverrideTarget": "Pxe"})
        boot = self._read_back_boot(lambda b: b.get("BootSourceOverrideTarget") == "Pxe")
        enabled = boot.get("BootSourceOverrideEnabled")
        if enabled == "Once":
            data = {"target": "Pxe", "enabled": "Once", "clear_after_boot": False}
            return {"message": "one-time PXE boot set and read back", "data": data}
        return self._fall_back_to_continuous(enabled)

    def _fall_back_to_continuous(self, enabled):
        self.events.log(
            "warning",
            f"the BMC did not keep a one-time override (reads back {enabled!r}); "
            "setting it continuous: clear it after the machine has booted",
        )
        if enabled != "Continuous":
            self._patch_boot(
                {"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Continuous"},
                {"BootSourceOverrideEnabled": "Continuous"},
            )
            self._read_back_boot(
                lambda b: (
                    b.get("BootSourceOverrideEnabled") == "Continuous"
                    and b.get("BootSourceOverrideTarget") == "Pxe"
                )
            )
        data = {"target": "Pxe", "enabled": "Continuous", "clear_after_boot": True}
        message = (
            "PXE boot set as a CONTINUOUS override (the BMC cannot keep a one-time one): "
            "run clear_boot_override after the machine has booted"
        )
        return {"message": message, "data": data}

    def clear_boot_override(self):
        self.document()
        self._patch_boot(
            {"BootSourceOverrideEnabled": "Disabled", "BootSourceOverrideTarget": "None"},
            {"BootSourceOverrideTarget": "None"},
        )
        boot = self._read_back_boot(
            lambda b: (
                b.get("BootSourceOverrideEnabled") == "Disabled"
                or b.get("BootSourceOverrideTarget") == "None"
            )
        )
        data = {
            "target": boot.get("BootSourceOverrideTarget"),
            "enabled": boot.get("BootSourceOverrideEnabled"),
        }
        return {"message": "boot override cleared and read back", "data": data}

    def _patch_boot(self, full, minimal):
        response = self.client.patch(self.path, {"Boot": full})
        if response.status in (400, 405):
            # Some BMCs refuse a body with any property they do not support (or any
            # property at all beyond the one that changes); the minimal body still says
            # what matters.
            self.events.log(
                "warning",
                f"the BMC refused the full Boot body (HTTP {response.status}); "
                f"retrying with {minimal}",
            )
            response = self.client.patch(self.path, {"Boot": minimal})
        if response.status not in (200, 202, 204):
            raise BmcError(f"PATCH {self.path} Boot: HTTP {response.status}",
                           response.status, response.body)  # fmt: skip

    def _read_back_boot(self, holds):
        boot = {}
        for attempt in range(READBACK_TRIES):
            boot = self._get(self.path).get("Boot") or {}
            if holds(boot):
                return boot
            if attempt + 1 < READBACK_TRIES:
                self.sleep(POWER_POLL_SECONDS)
        shown = {k: boot.get(k) for k in ("BootSourceOverrideTarget", "BootSourceOverrideEnabled")}
        raise BmcError(f"the BMC accepted the change but reads back {shown}")

    # --- inventory ---------------------------------------------------------------------

    def inventory(self):
        document = self.document()
        data = {
            "system": system_identity(document),
            "processors": self._processors(document),
            "memory": memory_summary(document),
            "nics": self._nics(document),
            "reset_types": reset_types(document, self.events),
            "boot_targets": (document.get("Boot") or {}).get(
                "BootSourceOverrideTarget@Redfish.AllowableValues"
            ),
        }
        system = data["system"]
        message = f"{system['manufacturer']} {system['model']} serial {system['serial']}"
        return {"message": message, "data": data}

    def _processors(self, document):
        summary = processor_summary(document)
        members = self._members(document, "Processors")
        summary["items"] = [processor_item(m) for m in members]
        return summary

    def _nics(self, document):
        return [nic_item(m) for m in self._members(document, "EthernetInterfaces")]

    def _members(self, document, name):
        """The documents of a sub-collection; a missing one is a warning, not a failure."""
        link = _link(document, name)
        if link is None:
            return []
        try:
            members = self._get(link).get("Members") or []
        except BmcError as exc:
            self.events.log("warning", f"{name} not readable: {exc}")
            return []
        found = []
        for path in filter(None, (_odata_id(m) for m in members[:MAX_MEMBERS])):
            try:
                found.append(self._get(path))
            except BmcError as exc:
                self.events.log("warning", f"{name} member not readable: {exc}")
        return found


def choose_reset_type(intent, action):
    """The first preferred ResetType the BMC allows (all preferred ones if it lists none)."""
    allowed = action.get("ResetType@Redfish.AllowableValues")
    preferred = RESET_TYPES[intent]
    if allowed is None:
        return preferred[0]
    for reset_type in preferred:
        if reset_type in allowed:
            return reset_type
    raise BmcError(f"none of {list(preferred)} is among the BMC's reset types {allowed}")


def reset_types(document, events):
    """The advertised ResetType values, with the ones outside the schema reported.

    Supermicro firmware advertises the run-together 'GracefulShutdownGracefulRestart';
    such a value is kept out of the choices and shown as a warning, never sent.
    """
    action = (document.get("Actions") or {}).get("#ComputerSystem.Reset") or {}
    allowed = action.get("ResetType@Redfish.AllowableValues") or []
    unknown = [value for value in allowed if value not in KNOWN_RESET_TYPES]
    if unknown:
        events.log("warning", f"the BMC advertises reset types outside the schema: {unknown}")
    return {"usable": [v for v in allowed if v in KNOWN_RESET_TYPES], "unknown": unknown}


def system_identity(document):
    return {
        "manufacturer": _text(document.get("Manufacturer")),
        "model": _text(document.get("Model")),
        "serial": _text(document.get("SerialNumber")),
        "uuid": _text(document.get("UUID")),
        "sku": _text(document.get("SKU")),
        "bios_version": _text(document.get("BiosVersion")),
        "power_state": document.get("PowerState"),
    }


def processor_summary(document):
    summary = document.get("ProcessorSummary") or {}
    return {
        "count": summary.get("Count"),
        "model": _text(summary.get("Model")),
        "logical_count": summary.get("LogicalProcessorCount"),
    }


def processor_item(document):
    return {
        "socket": _text(document.get("Socket")),
        "model": _text(document.get("Model")),
        "cores": document.get("TotalCores"),
        "threads": document.get("TotalThreads"),
    }


def memory_summary(document):
    summary = document.get("MemorySummary") or {}
    return {"total_gib": summary.get("TotalSystemMemoryGiB")}


def nic_item(document):
    mac = document.get("MACAddress") or document.get("PermanentMACAddress")
    return {
        "id": _text(document.get("Id")),
        "mac": mac.lower() if isinstance(mac, str) else None,
        "speed_mbps": document.get("SpeedMbps"),
        "link_status": document.get("LinkStatus"),
    }


def _text(value):
    """Strings stripped; the empty string and non-strings become None."""
    if not isinstance(value, str):
        return None
    return value.strip() or None


def _link(document, name):
    return _odata_id(document.get(name))


def _odata_id(value):
    if isinstance(value, dict) and isinstance(value.get("@odata.id"), str):
        return value["@odata.id"]
    return None
