"""Checking a machine's BMC settings as an operator sends them (PUT /api/v1/machines/ID/bmc),
and the params of a BMC job (at creation and again when the runner starts it).

Pure validation: no store, no keys, no I/O (asking the kernel whether an address is one
of this host's is a bind, never a packet). The errors carry the HTTP status and code the
API answers. It must never echo the password in a message.
"""

import errno
import ipaddress
import re
import socket

from providers.manifest import NAME as PROVIDER_NAME
from providers.redfish.client import normalise_fingerprint

DEFAULT_PORTS = {"redfish": 443, "ipmi": 623}
POWER_ACTIONS = {"on": "power_on", "off": "power_off", "reset": "reset", "status": "power_state"}
MAX_TEXT = 128
# C0 and C1 control characters: nothing a BMC login holds, and they would break log lines.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")

_FIELDS = {
    "protocol",
    "address",
    "port",
    "username",
    "password",
    "scheme",
    "verify_tls",
    "tls_fingerprint_sha256",
}


class BmcError(Exception):
    """A BMC request that cannot be done, with the HTTP status and code it maps to."""

    def __init__(self, status, code, message):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class KeysUnavailable(BmcError):
    """No master key is configured, or it is sealed: nothing secret can be stored or used."""


# -- settings ---------------------------------------------------------------------------


def parse_settings(body):
    """Check a PUT body; return the normalised settings (password included) or raise 400."""
    if not isinstance(body, dict):
        raise BmcError(400, "invalid_request", "expected a JSON object")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise BmcError(400, "invalid_request", f"unknown field(s) {unknown}")
    kind = body.get("protocol")
    if not isinstance(kind, str) or kind not in DEFAULT_PORTS:
        raise BmcError(400, "invalid_request", f"protocol must be redfish or ipmi, got {kind!r}")
    settings = {
        "protocol": kind,
        "address": _address(body.get("address")),
        "port": _port(body.get("port", DEFAULT_PORTS[kind])),
        "username": _text(body.get("username"), "username"),
        "password": _text(body.get("password"), "password"),
    }
    settings.update(_tls(kind, body))
    return settings


def _address(value):
    try:
        if not isinstance(value, str):  # IPv4Address(3232235777) would be 192.168.1.1
            raise TypeError(value)
        address = ipaddress.IPv4Address(value)
    except (ValueError, TypeError):
        raise BmcError(
            400, "invalid_request", f"address must be an IPv4 address, got {value!r:.60}"
        ) from None
    # 0.0.0.0/8 is "this network" (RFC 1122 3.2.1.3); 224 and up are multicast and reserved.
    if not 0 < address.packed[0] < 224:
        raise BmcError(400, "invalid_request", f"address {address} is not a unicast address")
    # 169.254/16 holds cloud metadata services (169.254.169.254) and nothing a bank's
    # management LAN configures by hand; the grant would reach them from the appliance.
    if address.is_link_local:
        raise BmcError(400, "invalid_request", f"address {address} is a link-local address")
    return str(address)


def appliance_ports(settings):
    """The ports this appliance's own services listen on (TCP or UDP)."""
    server, dhcp = settings.server, settings.dhcp
    ports = {server.http_port, server.https_port, dhcp.port, dhcp.pxe_port}
    return ports | {settings.tftp.port, settings.dns.port}


def refuse_appliance_itself(address, port, settings):
    """BmcError(400) when address is this appliance (or, in a lab, one of its services).

    The job's grant is relayed from the appliance's network namespace, so a "BMC" on
    loopback or on one of this host's addresses would hand the provider (possibly an
    imported package) a line into whatever listens there, the appliance's own API
    among them. A lab with BMC simulators on loopback sets jobs.bmc_allow_this_host;
    the appliance's own service ports stay refused even then.
    """
    if not _is_this_host(address):
        return
    if port in appliance_ports(settings):
        raise BmcError(
            400,
            "invalid_request",
            f"{address}:{port} is this appliance's own service, not a BMC",
        )
    if not settings.jobs.bmc_allow_this_host:
        raise BmcError(
            400,
            "invalid_request",
            f"{address} is this appliance, not a BMC (jobs.bmc_allow_this_host is off)",
        )


def _is_this_host(address):
    if ipaddress.IPv4Address(address).is_loopback:
        return True
    # bind() to an address succeeds only when it is one of this host's (EADDRNOTAVAIL).
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError as e:
            if e.errno == errno.EADDRNOTAVAIL:
                return False
            raise
    return True


def _port(value):
    # JSON has one number type: 623.0 is the whole number 623 (JSON Schema agrees).
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise BmcError(400, "invalid_request", f"port must be 1-65535, got {value!r:.20}")
    return value


def _text(value, name):
    if not isinstance(value, str) or not 0 < len(value) <= MAX_TEXT:
        raise BmcError(400, "invalid_request", f"{name} must be text of 1-{MAX_TEXT} characters")
    if CONTROL.search(value):
        raise BmcError(400, "invalid_request", f"{name} must not hold control characters")
    if name == "username" and value.startswith("-"):
        # ipmitool takes the user name as an argument: nothing that reads as an option.
        raise BmcError(400, "invalid_request", "username must not start with '-'")
    return value


def _tls(kind, body):
    verify = body.get("verify_tls", True)
    if not isinstance(verify, bool):
        raise BmcError(400, "invalid_request", f"verify_tls must be true or false, got {verify!r}")
    scheme = body.get("scheme", "https")
    fingerprint = body.get("tls_fingerprint_sha256")
    if "tls_fingerprint_sha256" in body and not isinstance(fingerprint, str):
        raise BmcError(400, "invalid_request", "tls_fingerprint_sha256 must be text if given")
    if kind == "ipmi":
        if fingerprint is not None or "scheme" in body:
            raise BmcError(400, "invalid_request", "scheme and TLS settings are for redfish only")
        return {"scheme": "https", "verify_tls": verify, "tls_fingerprint_sha256": None}
    if scheme not in ("https", "http"):
        raise BmcError(400, "invalid_request", f"scheme must be https or http, got {scheme!r}")
    if fingerprint is not None:
        try:
            fingerprint = normalise_fingerprint(fingerprint)
        except ValueError as e:
            raise BmcError(400, "invalid_request", str(e)) from None
    if scheme == "https" and verify and fingerprint is None:
        # BMC certificates are self-signed: verifying means pinning (providers/redfish).
        raise BmcError(
            400,
            "invalid_request",
            "verify_tls needs tls_fingerprint_sha256 (the BMC certificate's SHA-256);"
            ' send "verify_tls": false to skip the check knowingly',
        )
    return {"scheme": scheme, "verify_tls": verify, "tls_fingerprint_sha256": fingerprint}


# -- job params -------------------------------------------------------------------------


def job_steps(kind, params):
    """[(provider action, extra params)] for a power or boot_pxe job, or raise BmcError(400).

    One check for both ends: the job service refuses bad params at creation, and the runner
    checks a job again before it runs (a job queued by an older version, or retried).
    The optional "provider" param names an imported provider package; provider_name()
    reads it.
    """
    params = dict(params)
    provider_name(params)
    params.pop("provider", None)
    if kind == "power":
        unknown = sorted(set(params) - {"action"})
        action = params.get("action")
        if unknown or not isinstance(action, str) or action not in POWER_ACTIONS:
            raise BmcError(
                400,
                "invalid_request",
                'power params must be {"action": "on"|"off"|"reset"|"status"}'
                f' (and optionally "provider"), got {params!r:.120}',
            )
        return [(POWER_ACTIONS[action], {})]
    unknown = sorted(set(params) - {"reset", "boot_mode"})
    if unknown:
        raise BmcError(
            400,
            "invalid_request",
            f"unknown param(s) {unknown}; boot_pxe takes reset, boot_mode and provider",
        )
    reset, mode = params.get("reset", False), params.get("boot_mode")
    if not isinstance(reset, bool) or mode not in (None, "UEFI", "Legacy"):
        raise BmcError(
            400,
            "invalid_request",
            'boot_pxe params: "reset" true/false, "boot_mode" "UEFI" or "Legacy"',
        )
    steps = [("boot_pxe_once", {"boot_mode": mode} if mode else {})]
    return steps + [("reset", {})] if reset else steps


def provider_name(params):
    """The imported provider package a BMC job names, or None for the built-in one."""
    if "provider" not in params:
        return None
    name = params["provider"]
    if not isinstance(name, str) or not PROVIDER_NAME.fullmatch(name):
        raise BmcError(
            400,
            "invalid_request",
            f"provider must name an imported provider package (as `cloudboot providers list`"
            f" shows it), got {name!r:.80}",
        )
    return name
