"""Unsealing a dual-control master key on the running appliance, and its key status.

After a restart a dual-control appliance holds no key: it serves boot files
but refuses everything that needs one, and /readyz says so. Each officer
enters a passphrase here (with an admin's token: the officer's passphrase
alone is not a login), the share opens with Argon2id in a worker thread,
and the M-th share rebuilds the key in this process's memory only. Every
attempt, refused or not, is in the audit log; passphrases never are.
"""

import trio

from appliance.api._common import json_body
from appliance.core import audit, auth
from appliance.http import HttpError, Response

_MAX_FIELD = 512


def register_routes(router, app):
    async def status(request):
        principal = await auth.authorize(app.store, request, "admin")
        master = getattr(app, "master", None)
        # Key status is a sensitive read (issue 7): who looked, and when, is audited.
        await _record(app, principal, request, None, "ok", action="key.status")
        if master is None:
            return Response.json({"initialised": False, "sealed": False})
        return Response.json({"initialised": True, **_public(master.status())})

    async def unseal(request):
        principal = await auth.authorize(app.store, request, "admin")
        officer, passphrase = _officer_and_passphrase(json_body(request))
        master = getattr(app, "master", None)
        if master is None or not hasattr(master, "unseal"):
            await _record(app, principal, request, officer, "failed")
            raise HttpError(409, "not_dual_control", "the master key is not under dual control")

        import keys

        try:
            state = await trio.to_thread.run_sync(master.unseal, officer, passphrase)
        except keys.KeysError as e:
            await _record(app, principal, request, officer, "denied")
            raise HttpError(403, "unseal_refused", str(e)) from None
        await _record(app, principal, request, officer, "ok")
        return Response.json(_public(state))

    router.add("GET", "/api/v1/keys/status", status)
    router.add("POST", "/api/v1/keys/unseal", unseal)


def _officer_and_passphrase(body):
    if not isinstance(body, dict):
        raise HttpError(400, "invalid_request", 'expected {"officer": ..., "passphrase": ...}')
    officer, passphrase = body.get("officer"), body.get("passphrase")
    for name, value in (("officer", officer), ("passphrase", passphrase)):
        if not isinstance(value, str) or not 0 < len(value) <= _MAX_FIELD:
            raise HttpError(400, "invalid_request", f"{name} must be text of 1-{_MAX_FIELD} chars")
    return officer, passphrase


def _public(state):
    # Which officers have entered a share is for the officers in the room; the
    # shares themselves never leave the process.
    keep = ("source", "key_id", "sealed", "current_version", "threshold", "officers")
    public = {k: state[k] for k in keep if k in state}
    public["shares_entered"] = list(state.get("shares_entered", []))
    return public


async def _record(app, principal, request, officer, result, action="key.unseal"):
    def write(conn):
        audit.record(
            conn,
            actor=principal.name,
            action=action,
            resource_type="master_key",
            resource_id=None,
            result=result,
            trace_id=request.trace_id,
            source=request.client[0],
            details={} if officer is None else {"officer": officer[:64]},
        )

    await app.store.write(write)


_TEXT = {"type": "string", "minLength": 1, "maxLength": _MAX_FIELD}
SCHEMAS = {
    "KeyUnseal": {
        "type": "object",
        "properties": {"officer": _TEXT, "passphrase": _TEXT},
        "required": ["officer", "passphrase"],
        "additionalProperties": True,
    },
    "KeyStatus": {"type": "object"},
}


def openapi_routes(Route):
    """Descriptions for appliance/api/openapi.py (Route passed in: no import cycle)."""
    return [
        Route("GET", "/api/v1/keys/status", "Master key source and whether it is sealed",
              "admin", "keys", {200: "KeyStatus"}),
        Route("POST", "/api/v1/keys/unseal", "One officer's share of a dual-control key",
              "admin", "keys", {200: "KeyStatus"}, (403, 409), body="KeyUnseal"),
    ]  # fmt: skip
