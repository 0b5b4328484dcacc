"""The OpenAPI 3.1 document of the REST API, served at /api/v1/openapi.json.

Built from ROUTES, one short description per route (ours and the agent,
auth and enrolment routes of appliance/api/agent.py and friends). A test
compares ROUTES with the router, so a route cannot be added without being
described here; schemathesis then checks the server against the document.
This module describes; it never handles a request other than its own.
"""

import dataclasses

from appliance.api import audit as audit_api
from appliance.api import bmc as bmc_api
from appliance.api import keys as keys_api
from appliance.api._machine_reads import MAC_PATTERN
from appliance.api._openapi_others import OTHER_SCHEMAS, other_routes
from appliance.api._schemas import MACHINE_STATES, SCHEMAS
from appliance.core._jobsql import KINDS, STATES
from appliance.core.jobs import cursor_pattern
from appliance.http import Response

OPENAPI_PATH = "/api/v1/openapi.json"


@dataclasses.dataclass(frozen=True)
class Route:
    method: str
    path: str
    summary: str
    # None: no token needed. "agent": an agent token. Else the least user role.
    role: str | None
    tag: str
    ok: dict  # status -> schema name (None for no body)
    errors: tuple = ()
    query: tuple = ()
    body: str | None = None
    headers: tuple = ()
    body_required: bool = True


def _q(name, schema, description, required=False, repeat=False):
    parameter = {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": {"type": "array", "items": schema} if repeat else schema,
    }
    if repeat:
        parameter.update(style="form", explode=True)
    return parameter


_LIMIT = _q("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "Page size (50).")


def _cursor(scope):
    schema = {"type": "string", "pattern": cursor_pattern(scope)}
    return _q("cursor", schema, "next_cursor from the previous page (opaque).")


_LABEL_FILTER = "^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?(=.*)?$"
_IDEMPOTENCY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Same key and body: the same job (200). Same key, other body: 409.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 200},
}
ROUTES = [
    Route("GET", "/healthz", "The process answers", None, "health", {200: "Health"}),
    Route(
        "GET",
        "/readyz",
        "Store writable and services up (503 otherwise)",
        None,
        "health",
        {200: "Ready", 503: "Ready"},
    ),
    Route("GET", OPENAPI_PATH, "This document", None, "meta", {200: None}),
    Route(
        "GET",
        "/metrics",
        "Counters in the Prometheus text format",
        "viewer",
        "meta",
        {200: "media:text/plain"},
    ),
    Route(
        "GET",
        "/api/v1/machines",
        "List machines",
        "viewer",
        "machines",
        {200: "MachinePage"},
        (400,),
        (
            _q("state", {"enum": MACHINE_STATES}, "Only machines in this state."),
            _q(
                "label",
                {"type": "string", "pattern": _LABEL_FILTER},
                "key=value or key; repeat to require several.",
                repeat=True,
            ),
            _q("serial", {"type": "string"}, "Part of the system serial number."),
            _q(
                "mac",
                {"type": "string", "pattern": MAC_PATTERN},
                "A MAC address the machine has (colons, dashes or none).",
            ),
            _LIMIT,
            _cursor("machines"),
        ),
    ),
    Route(
        "GET",
        "/api/v1/machines/{machine_id}",
        "One machine, with its identifiers and conflicts",
        "viewer",
        "machines",
        {200: "MachineDetail"},
        (404,),
    ),
    Route(
        "PUT",
        "/api/v1/machines/{machine_id}/labels",
        "Replace a machine's labels",
        "operator",
        "machines",
        {200: "MachineDetail"},
        (400, 404),
        body="Labels",
    ),
    Route(
        "PATCH",
        "/api/v1/machines/{machine_id}/labels",
        "Change some labels (null removes one)",
        "operator",
        "machines",
        {200: "MachineDetail"},
        (400, 404),
        body="LabelsPatch",
    ),
    Route(
        "POST",
        "/api/v1/machines/{machine_id}/retire",
        "Retire a machine: no more jobs, agent token revoked",
        "admin",
        "machines",
        {200: "MachineDetail"},
        (404,),
    ),
    Route(
        "GET",
        "/api/v1/machines/{machine_id}/inventory",
        "The latest inventory snapshot",
        "viewer",
        "inventory",
        {200: "InventorySnapshot"},
        (404,),
    ),
    Route(
        "GET",
        "/api/v1/machines/{machine_id}/inventory/history",
        "Every inventory snapshot, newest first",
        "viewer",
        "inventory",
        {200: "InventoryPage"},
        (400, 404),
        (_LIMIT, _cursor("inventory")),
    ),
    Route(
        "POST",
        "/api/v1/jobs",
        "Create a job (201; 200 when the Idempotency-Key replays)",
        "operator",
        "jobs",
        {201: "Job", 200: "Job"},
        (400, 404, 409),
        body="JobCreate",
        headers=(_IDEMPOTENCY,),
    ),
    Route(
        "GET",
        "/api/v1/jobs",
        "List jobs, newest first",
        "viewer",
        "jobs",
        {200: "JobPage"},
        (400,),
        (
            _q("machine_id", {"type": "string"}, "Only this machine's jobs."),
            _q("state", {"enum": list(STATES)}, "Only jobs in this state."),
            _q("kind", {"enum": list(KINDS)}, "Only jobs of this kind."),
            _LIMIT,
            _cursor("jobs"),
        ),
    ),
    Route("GET", "/api/v1/jobs/{job_id}", "One job", "viewer", "jobs", {200: "Job"}, (404,)),
    Route(
        "POST",
        "/api/v1/jobs/{job_id}/cancel",
        "Cancel: a queued job ends; a running one is stopped at the agent's next report",
        "operator",
        "jobs",
        {200: "Job"},
        (404, 409),
    ),
    Route(
        "POST",
        "/api/v1/jobs/{job_id}/retry",
        "Queue a new job like a failed, cancelled or timed-out one",
        "operator",
        "jobs",
        {201: "Job"},
        (400, 404, 409),
        body="JobRetry",
        body_required=False,
    ),
    Route(
        "GET",
        "/api/v1/jobs/{job_id}/log",
        "The job's log lines",
        "viewer",
        "jobs",
        {200: "JobLog"},
        (400, 404),
        (
            _q("after", {"type": "integer", "minimum": 0}, "Lines after this number."),
            _q("limit", {"type": "integer", "minimum": 1, "maximum": 5000}, "At most (500)."),
        ),
    ),
    Route(
        "GET",
        "/api/v1/events",
        "Machine and job state changes, oldest first; follow with the cursor",
        "viewer",
        "events",
        {200: "EventPage"},
        (400,),
        (
            _q("machine_id", {"type": "string"}, "Only this machine's events."),
            _q("job_id", {"type": "string"}, "Only this job's events."),
            _q("type", {"enum": ["machine.state", "job.state"]}, "Only this type."),
            _LIMIT,
            _cursor("events"),
        ),
    ),
]


# Ours first, then agent.py, auth.py, enrolment.py and audit.py.
ALL_ROUTES = [
    *ROUTES,
    *other_routes(Route),
    *audit_api.openapi_routes(Route),
    *keys_api.openapi_routes(Route),
    *bmc_api.openapi_routes(Route),
]


def register_routes(router, app, extra_routes=()):
    """Serve the document; `extra_routes` describes routes added by other modules."""
    document = build_document([*ALL_ROUTES, *extra_routes])

    async def openapi(request):
        return Response.json(document)

    router.add("GET", OPENAPI_PATH, openapi)


def build_document(routes):
    paths = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "CloudBoot NG appliance API",
            "version": "1",
            "description": "Bare-metal provisioning. See docs/api.md for examples.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": {**SCHEMAS, **OTHER_SCHEMAS, **keys_api.SCHEMAS, **bmc_api.SCHEMAS},
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token from `cloudboot token issue` (or an agent token).",
                }
            },
        },
    }


def _operation(route):
    operation = {
        "operationId": _operation_id(route),
        "summary": route.summary,
        "tags": [route.tag],
        "parameters": [*_path_parameters(route.path), *route.query, *route.headers],
        "responses": _responses(route),
    }
    if route.role is not None:
        operation["security"] = [{"bearer": []}]
        if route.role != "agent":
            operation["description"] = f"Needs role {route.role} or above."
    if route.body is not None:
        operation["requestBody"] = {
            "required": route.body_required,
            "content": {"application/json": {"schema": _ref(route.body)}},
        }
    return operation


def _operation_id(route):
    words = [w.strip("{}") for w in route.path.split("/") if w and w not in ("api", "v1")]
    return "_".join([route.method.lower(), *words]).replace(".", "_").replace("-", "_")


def _path_parameters(path):
    names = [part[1:-1] for part in path.split("/") if part.startswith("{")]
    return [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in names
    ]


_ERROR_TEXT = {
    400: "The request is malformed; the message says what was expected",
    401: "No token, or an unknown, expired or revoked one",
    403: "The token's role is not enough",
    404: "No such resource",
    409: "Conflicts with the resource's state; the message says why",
    426: "Unsupported agent protocol version",
    429: "Too many requests; see Retry-After",
    503: "Not possible now (e.g. the master key is sealed); see the code and Retry-After",
}


def _responses(route):
    responses = {}
    for status, schema in route.ok.items():
        entry = {"description": "OK" if status < 300 else "See the body"}
        if isinstance(schema, str) and schema.startswith("media:"):
            # Not JSON: "media:text/csv,application/x-ndjson" lists what may come back.
            types = schema.removeprefix("media:").split(",")
            entry["content"] = {t: {"schema": {"type": "string"}} for t in types}
        elif schema is not None:
            entry["content"] = {"application/json": {"schema": _ref(schema)}}
        elif status != 204:
            entry["content"] = {"application/json": {"schema": {"type": "object"}}}
        responses[str(status)] = entry

    errors = set(route.errors)
    if route.role is not None:
        errors |= {401, 403}
    if route.body is not None:
        errors.add(400)
    for status in sorted(errors):
        responses[str(status)] = {
            "description": _ERROR_TEXT[status],
            "content": {"application/json": {"schema": _ref("Error")}},
        }
    return responses


def _ref(name):
    return {"$ref": f"#/components/schemas/{name}"}


__all__ = ["ALL_ROUTES", "OPENAPI_PATH", "ROUTES", "Route", "build_document"]
