"""The agent's routes: registration, the job long poll, job events and results.

Registration is the one API call without a token (the agent has no secret
yet), so it is accepted only from the PXE networks
(settings.api.registration_networks; an empty list accepts any source) and
rate-limited per source address. Every other call carries the agent token
from registration, which reaches only its own machine. Every call carries the
protocol version header (appliance/proto/agent.py). Job work is delegated to
appliance.core.engine, and an imported RAID package's checks to
appliance/core/_agent_packages.py; this module never decides what a job may do.
"""

import functools

from appliance.api._common import json_body, storage_full
from appliance.core import app as app_module
from appliance.core import auth, machines
from appliance.core._jobsql import JobError
from appliance.http import HttpError, Response
from appliance.proto import agent as protocol
from appliance.proto import inventory as inventory_schema
from appliance.store import StorageFullError

# Errors the services raise carrying their own HTTP status and code.
SERVICE_ERRORS = (JobError, machines.MachineError, auth.AuthError)


def translate_errors(handler):
    """Turn service and protocol errors into HttpError (one JSON error shape)."""

    @functools.wraps(handler)
    async def wrapped(request):
        try:
            return await handler(request)
        except SERVICE_ERRORS as e:
            raise HttpError(e.status, e.code, e.message) from None
        except protocol.UnsupportedProtocol as e:
            raise HttpError(426, e.code, e.message) from None
        except protocol.AgentProtocolError as e:
            raise HttpError(400, e.code, e.message) from None
        except StorageFullError as e:
            raise storage_full(e) from None

    return wrapped


def register_routes(router, app):
    handlers = _Handlers(app)
    routes = [
        ("POST", "/api/v1/agent/register", handlers.register),
        ("GET", "/api/v1/agent/jobs/next", handlers.next_job),
        ("POST", "/api/v1/agent/jobs/{job_id}/events", handlers.events),
        ("POST", "/api/v1/agent/jobs/{job_id}/result", handlers.result),
        ("GET", "/api/v1/agent/jobs/{job_id}/provider", handlers.provider_package),
    ]
    for method, pattern, handler in routes:
        router.add(method, pattern, translate_errors(handler))

    # Approval belongs with registration: one call from the API package sets up both.
    from appliance.api import enrolment

    enrolment.register_routes(router, app)


def check_protocol(request):
    return protocol.check_version(request.headers.get(protocol.PROTOCOL_HEADER.lower()))


class _Handlers:
    def __init__(self, app):
        self.app = app
        self.store = app.store
        self.settings = app.settings

    async def register(self, request):
        check_protocol(request)
        source = request.client[0] if request.client else ""
        self._check_source(source)

        registration = protocol.validate_registration(json_body(request))
        outcome = await machines.register(
            self.store,
            registration,
            source,
            self.settings.api.token_ttl_days,
            request.trace_id,
        )
        return Response.json(
            {key: outcome[key] for key in ("machine_id", "token", "state", "approved")}
        )

    def _check_source(self, source):
        networks = self.app.registration_networks
        if not app_module.address_in(networks, source):
            allowed = ", ".join(str(n) for n in networks)
            raise HttpError(
                403,
                "registration_not_allowed",
                f"agent registration is accepted only from {allowed}; {source!r} is not in them",
            )

        allowed = self.app.registration_limiter.allow(source)
        if allowed is not True:
            limit = self.settings.api.registration_per_minute
            raise HttpError(
                429,
                "rate_limited",
                f"more than {limit} registrations a minute from {source}; retry in {allowed} s",
                headers=[("retry-after", str(allowed))],
            )

    async def next_job(self, request):
        check_protocol(request)
        principal = await auth.authorize(self.store, request, "agent")
        values = request.query.get("wait") or [None]
        wait = protocol.parse_wait(values[0], self.settings.api.long_poll_seconds)

        from appliance.core import engine

        job = await engine.next_job_for_machine(self.store, principal.machine_id, wait)
        if job is None:
            return Response(204)
        return Response.json({"job": job})

    async def events(self, request):
        check_protocol(request)
        principal = await auth.authorize(self.store, request, "agent")
        events = protocol.validate_events(json_body(request))

        from appliance.core import engine

        await engine.append_job_events(
            self.store,
            principal.machine_id,
            request.path_params["job_id"],
            events["progress"],
            events["lines"],
        )
        return Response(204)

    async def result(self, request):
        check_protocol(request)
        principal = await auth.authorize(self.store, request, "agent")
        result = protocol.validate_result(json_body(request))
        data = result["data"]
        if "inventory" in data:
            # Checked here so a bad document is the agent's 400, not a failed commit.
            try:
                data = {**data, "inventory": inventory_schema.validate(data["inventory"])}
            except inventory_schema.InventoryError as e:
                raise HttpError(400, "invalid_inventory", str(e)) from None

        from appliance.core import engine

        await engine.report_job_result(
            self.store,
            principal.machine_id,
            request.path_params["job_id"],
            result["status"],
            result["message"],
            data,
            request.trace_id,
            request.client[0] if request.client else None,
        )
        return Response(204)

    async def provider_package(self, request):
        """The imported RAID package the agent's running raid job names, checked just now."""
        check_protocol(request)
        principal = await auth.authorize(self.store, request, "agent")

        from appliance.core import _agent_packages as packages

        blob, sha256 = await packages.package_for_agent(
            self.store,
            self.settings,
            principal.machine_id,
            request.path_params["job_id"],
            request.trace_id,
            request.client[0] if request.client else None,
        )
        headers = [
            ("content-type", "application/octet-stream"),
            (packages.SHA256_HEADER.lower(), sha256),
        ]
        return Response(200, headers, blob)
