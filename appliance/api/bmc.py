"""REST routes for a machine's BMC settings: PUT, GET and DELETE /api/v1/machines/{id}/bmc.

Thin: checks the role, reads the body, calls appliance.core.bmc and shapes the answer.
The password goes in with PUT and never comes out: GET answers "password_set": true.
Every call is audited with the caller, the X-Request-ID and the client's address; GET too,
as it names the BMC's address and login.
Without a master key, or while it is sealed, PUT answers 503 (no_master_key, keys_sealed)
and stores nothing. This module must never log or echo the request body.
"""

import functools

from appliance.api._common import json_body, require, service_errors, source_of
from appliance.core import bmc
from appliance.http import HttpError, Response

PATH = "/api/v1/machines/{machine_id}/bmc"


def register_routes(router, app):
    handlers = _Handlers(app)
    router.add("PUT", PATH, _bmc_errors(service_errors(handlers.put)))
    router.add("GET", PATH, _bmc_errors(service_errors(handlers.get)))
    router.add("DELETE", PATH, _bmc_errors(service_errors(handlers.delete)))


def _bmc_errors(handler):
    @functools.wraps(handler)
    async def wrapped(request):
        try:
            return await handler(request)
        except bmc.BmcError as e:
            headers = [("retry-after", "60")] if e.status == 503 else None
            raise HttpError(e.status, e.code, e.message, headers=headers) from None

    return wrapped


class _Handlers:
    def __init__(self, app):
        self.app = app
        self.store = app.store

    async def put(self, request):
        actor = await require(request, self.store, "operator")
        machine_id = request.path_params["machine_id"]
        body = json_body(request)
        view = await bmc.set_settings(
            self.app, machine_id, body, actor, request.trace_id, source_of(request)
        )
        return Response.json(view)

    async def get(self, request):
        # A sensitive read: it names the BMC's address and login (not the password).
        actor = await require(request, self.store, "operator")
        machine_id = request.path_params["machine_id"]
        view = await bmc.read_settings(
            self.store, machine_id, actor, request.trace_id, source_of(request)
        )
        return Response.json(view)

    async def delete(self, request):
        actor = await require(request, self.store, "operator")
        machine_id = request.path_params["machine_id"]
        await bmc.delete_settings(
            self.store, machine_id, actor, request.trace_id, source_of(request)
        )
        return Response(204, [], b"")


# No C0/C1 control characters (appliance/core/bmc.py CONTROL); a user name not led by '-'.
_PRINTABLE = "[^\\u0000-\\u001f\\u007f-\\u009f]"
_TEXT = {"type": "string", "minLength": 1, "maxLength": bmc.MAX_TEXT}
_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
# Unicast: the first octet 1-223 (0/8 is "this network", 224 and up multicast and reserved).
_FIRST = "(22[0-3]|2[01][0-9]|1[0-9]{2}|[1-9][0-9]?)"
_IPV4 = {"type": "string", "pattern": f"^{_FIRST}(\\.{_OCTET}){{3}}$"}
_PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
_FINGERPRINT = {"type": "string", "pattern": "^([0-9A-Fa-f]{2}:?){31}[0-9A-Fa-f]{2}$"}
SCHEMAS = {
    "BmcSettingsIn": {
        "type": "object",
        "properties": {
            "protocol": {"enum": sorted(bmc.DEFAULT_PORTS)},
            "address": _IPV4,
            "port": _PORT,
            "username": {**_TEXT, "pattern": f"^(?!-){_PRINTABLE}+$"},
            "password": {**_TEXT, "pattern": f"^{_PRINTABLE}+$"},
            "scheme": {"enum": ["https", "http"]},
            "verify_tls": {"type": "boolean"},
            "tls_fingerprint_sha256": _FINGERPRINT,
        },
        "required": ["protocol", "address", "username", "password"],
        "additionalProperties": False,
        "allOf": [
            # IPMI has no TLS.
            {
                "if": {"properties": {"protocol": {"const": "ipmi"}}, "required": ["protocol"]},
                "then": {"properties": {"scheme": False, "tls_fingerprint_sha256": False}},
            },
            # Redfish over https with verify_tls (both the default) needs the pin.
            {
                "if": {
                    "properties": {
                        "protocol": {"const": "redfish"},
                        "scheme": {"const": "https"},
                        "verify_tls": {"const": True},
                    },
                    "required": ["protocol"],
                },
                "then": {"required": ["tls_fingerprint_sha256"]},
            },
        ],
    },
    "BmcSettings": {
        "type": "object",
        "properties": {
            "machine_id": {"type": "string"},
            "protocol": {"enum": sorted(bmc.DEFAULT_PORTS)},
            "address": _IPV4,
            "port": _PORT,
            "username": {"type": "string"},
            "password_set": {"type": "boolean"},
            "scheme": {"enum": ["https", "http"]},
            "verify_tls": {"type": "boolean"},
            "tls_fingerprint_sha256": {"type": ["string", "null"]},
            "updated_at": {"type": "string"},
            "updated_by": {"type": "string"},
        },
        "required": ["machine_id", "protocol", "address", "port", "username", "password_set"],
        "additionalProperties": False,
    },
}


# The params of the BMC job kinds (appliance/core/_bmc_settings.py job_steps), as rules
# on JobCreate: a request these allow is one the job service accepts.
_PROVIDER = {
    "type": "string",
    "pattern": "^[a-z0-9][a-z0-9._-]{0,63}$",
    "description": "An imported provider package to run instead of the built-in one.",
}
JOB_PARAMS_RULES = [
    {
        "if": {"properties": {"kind": {"const": "power"}}, "required": ["kind"]},
        "then": {
            "required": ["params"],
            "properties": {
                "params": {
                    "type": "object",
                    "properties": {
                        "action": {"enum": sorted(bmc.POWER_ACTIONS)},
                        "provider": _PROVIDER,
                    },
                    "required": ["action"],
                    "additionalProperties": False,
                }
            },
        },
    },
    {
        "if": {"properties": {"kind": {"const": "boot_pxe"}}, "required": ["kind"]},
        "then": {
            "properties": {
                "params": {
                    "type": "object",
                    "properties": {
                        "reset": {"type": "boolean"},
                        "boot_mode": {"enum": ["UEFI", "Legacy"]},
                        "provider": _PROVIDER,
                    },
                    "additionalProperties": False,
                }
            },
        },
    },
]


def openapi_routes(Route):
    """Descriptions for appliance/api/openapi.py (Route passed in: no import cycle)."""
    return [
        Route("PUT", PATH, "Set a machine's BMC (the password is stored sealed)", "operator",
              "machines", {200: "BmcSettings"}, (404, 409, 503), body="BmcSettingsIn"),
        Route("GET", PATH, "A machine's BMC settings (never the password)", "operator",
              "machines", {200: "BmcSettings"}, (404,)),
        Route("DELETE", PATH, "Forget a machine's BMC settings", "operator", "machines",
              {204: None}, (404,)),
    ]  # fmt: skip
