"""OpenAPI descriptions of the routes in agent.py, auth.py and enrolment.py.

Those modules belong to the enrolment and auth work; their routes are
described here, read from their code, so that the one document covers the
whole API. Their answers carry fields those modules may grow, so the objects
here allow more properties than they list (our own schemas do not).
"""

from appliance.api._schemas import MACHINE_STATES
from appliance.proto.agent import MAX_WAIT_SECONDS, PROTOCOL_HEADER


def _open(properties, required=None):
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
    }


_TEXT = {"type": "string"}
# appliance/core/auth.py: printable, no ':' and no spaces at the ends (printable
# is wider than a pattern can say, so the schema keeps to the safe subset).
_USER_NAME = "^[A-Za-z0-9._@-]([A-Za-z0-9._@ -]{0,62}[A-Za-z0-9._@-])?$"
_MAC = "^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$"
_UUID = "^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$"
_TEXT_OR_NULL = {"type": ["string", "null"]}
_IDENTIFIERS = {
    "type": "array",
    "items": _open({"kind": _TEXT, "value": _TEXT}),
}
_CONFLICTS = {
    "type": "array",
    "items": _open({"kind": _TEXT, "value": _TEXT, "machine_id": _TEXT}),
}

OTHER_SCHEMAS = {
    "AgentRegistration": _open(
        {
            "protocol": {"type": "integer", "enum": [1]},
            "boot_mac": {"type": "string", "pattern": _MAC},
            "pxe_guid": {"type": ["string", "null"], "pattern": _UUID},
            "inventory": _open(
                {"schema": {"const": "cloudboot.inventory/1"}},
            ),
        },
        required=["protocol", "boot_mac", "inventory"],
    ),
    "AgentRegistered": _open(
        {
            "machine_id": _TEXT,
            "token": _TEXT,
            "state": {"enum": MACHINE_STATES},
            "approved": {"type": "boolean"},
        }
    ),
    "AgentJob": _open(
        {
            "job": _open(
                {
                    "id": _TEXT,
                    "kind": _TEXT,
                    "params": {"type": "object"},
                    "timeout_seconds": {"type": "integer"},
                },
            )
        }
    ),
    "AgentEvents": _open(
        {
            "progress": {"type": ["integer", "null"], "minimum": 0, "maximum": 100},
            "lines": {"type": "array", "items": _TEXT, "maxItems": 1000},
        },
        required=[],
    ),
    "AgentResult": _open(
        {
            "status": {"enum": ["succeeded", "failed"]},
            "message": _TEXT,
            "data": {"type": "object", "description": 'inventory jobs: {"inventory": {...}}'},
        },
        required=["status"],
    ),
    "Principal": _open(
        {
            "kind": {"enum": ["user", "agent"]},
            "name": _TEXT,
            "role": _TEXT,
            "token_id": _TEXT,
            "machine_id": _TEXT_OR_NULL,
        }
    ),
    "User": _open(
        {
            "name": _TEXT,
            "role": {"enum": ["viewer", "operator", "admin"]},
            "created_at": _TEXT,
            "disabled": {"type": "boolean"},
        }
    ),
    "UserCreate": _open(
        {
            "name": {"type": "string", "pattern": _USER_NAME, "maxLength": 64},
            "role": {"enum": ["viewer", "operator", "admin"]},
        },
    ),
    "UserList": _open(
        {"items": {"type": "array", "items": {"$ref": "#/components/schemas/User"}}}
    ),
    "Token": _open(
        {
            "id": _TEXT,
            "kind": {"enum": ["user", "agent"]},
            "user_name": _TEXT_OR_NULL,
            "machine_id": _TEXT_OR_NULL,
            "description": _TEXT,
            "created_at": _TEXT,
            "expires_at": _TEXT,
            "revoked_at": _TEXT_OR_NULL,
        }
    ),
    "TokenIssued": {
        "allOf": [
            {"$ref": "#/components/schemas/Token"},
            _open({"token": {"type": "string", "description": "Shown this once only"}}),
        ]
    },
    "TokenIssue": _open(
        {
            "user": {"type": "string", "pattern": _USER_NAME, "maxLength": 64},
            "ttl_days": {"type": "integer", "minimum": 1, "maximum": 3650},
            "description": _TEXT,
        },
        required=["user"],
    ),
    "TokenList": _open(
        {"items": {"type": "array", "items": {"$ref": "#/components/schemas/Token"}}}
    ),
    "MachineDocument": _open(
        {
            "id": _TEXT,
            "state": {"enum": MACHINE_STATES},
            "approved": {"type": "boolean"},
            "labels": {"type": "object"},
            "identifiers": _IDENTIFIERS,
            "conflicts": _CONFLICTS,
        }
    ),
    "MachineConflicts": _open(
        {
            "machine_id": _TEXT,
            "uuid_trusted": {"type": "boolean"},
            "identifiers": _IDENTIFIERS,
            "conflicts": _CONFLICTS,
        }
    ),
    "ExpectedImport": {
        **_open(
            {
                "serials": {
                    "type": "array",
                    "items": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9-]{2,30}$"},
                },
                "macs": {"type": "array", "items": {"type": "string", "pattern": _MAC}},
            },
            required=[],
        ),
        "additionalProperties": False,
        "anyOf": [
            {"required": ["serials"], "properties": {"serials": {"minItems": 1}}},
            {"required": ["macs"], "properties": {"macs": {"minItems": 1}}},
        ],
    },
    "ExpectedImported": _open(
        {
            "added": {"type": "integer"},
            "serials": {"type": "integer"},
            "macs": {"type": "integer"},
            "approved": {"type": "array", "items": _TEXT},
        }
    ),
    "ExpectedList": _open(
        {
            "items": {
                "type": "array",
                "items": _open(
                    {
                        "kind": {"enum": ["serial", "mac"]},
                        "value": _TEXT,
                        "imported_by": _TEXT,
                        "imported_at": _TEXT,
                        "matched_machine_id": _TEXT_OR_NULL,
                        "matched_at": _TEXT_OR_NULL,
                    }
                ),
            }
        }
    ),
}

AGENT_PROTOCOL_HEADER = {
    "name": PROTOCOL_HEADER,
    "in": "header",
    "required": True,
    "description": "Agent protocol version; 426 when missing or unsupported.",
    "schema": {"type": "string", "enum": ["1"]},
}
WAIT_QUERY = {
    "name": "wait",
    "in": "query",
    "required": False,
    "description": "Seconds to wait for a job before answering 204.",
    "schema": {"type": "number", "minimum": 0, "maximum": MAX_WAIT_SECONDS},
}
TOKENS_QUERY = (
    {"name": "user", "in": "query", "required": False, "schema": {"type": "string"}},
    {
        "name": "include_agents",
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
        "description": "true: list agent tokens too",
    },
)


def other_routes(Route):
    """The Route descriptions (openapi.Route is passed in to avoid an import cycle)."""
    agent = (AGENT_PROTOCOL_HEADER,)
    return [
        Route(
            "POST",
            "/api/v1/agent/register",
            "An agent registers its machine (PXE networks only, rate-limited)",
            None,
            "agent",
            {200: "AgentRegistered"},
            (400, 403, 426, 429),
            body="AgentRegistration",
            headers=agent,
        ),
        Route(
            "GET",
            "/api/v1/agent/jobs/next",
            "Long poll for the machine's next job (204 when none)",
            "agent",
            "agent",
            {200: "AgentJob", 204: None},
            (400, 426),
            (WAIT_QUERY,),
            headers=agent,
        ),
        Route(
            "POST",
            "/api/v1/agent/jobs/{job_id}/events",
            "Progress and log lines; 409 job_cancelled tells the agent to stop",
            "agent",
            "agent",
            {204: None},
            (400, 404, 409, 426),
            body="AgentEvents",
            headers=agent,
        ),
        Route(
            "POST",
            "/api/v1/agent/jobs/{job_id}/result",
            "The job's final result",
            "agent",
            "agent",
            {204: None},
            (400, 404, 409, 426),
            body="AgentResult",
            headers=agent,
        ),
        Route(
            "GET",
            "/api/v1/agent/jobs/{job_id}/provider",
            "The imported RAID package the running raid job names, checked again now "
            "(X-CloudBoot-Package-SHA256; 403 provider_refused)",
            "agent",
            "agent",
            {200: "media:application/octet-stream"},
            (404, 409, 426),
            headers=agent,
        ),
        Route(
            "GET", "/api/v1/auth/whoami", "Who this token is", "viewer", "auth", {200: "Principal"}
        ),
        Route("GET", "/api/v1/users", "List users", "admin", "auth", {200: "UserList"}),
        Route(
            "POST",
            "/api/v1/users",
            "Create a user",
            "admin",
            "auth",
            {201: "User"},
            (400, 409),
            body="UserCreate",
        ),
        Route(
            "GET",
            "/api/v1/tokens",
            "List tokens",
            "admin",
            "auth",
            {200: "TokenList"},
            (400,),
            TOKENS_QUERY,
        ),
        Route(
            "POST",
            "/api/v1/tokens",
            "Issue a token for a user (the token is shown once)",
            "admin",
            "auth",
            {201: "TokenIssued"},
            (400, 404, 409),
            body="TokenIssue",
        ),
        Route(
            "POST",
            "/api/v1/tokens/{token_id}/revoke",
            "Revoke a token",
            "admin",
            "auth",
            {200: "Token"},
            (404,),
        ),
        Route(
            "DELETE",
            "/api/v1/tokens/{token_id}",
            "Revoke a token",
            "admin",
            "auth",
            {200: "Token"},
            (404,),
        ),
        Route(
            "POST",
            "/api/v1/machines/{machine_id}/approve",
            "Approve a machine: it may now get jobs",
            "operator",
            "enrolment",
            {200: "MachineDocument"},
            (404, 409),
        ),
        Route(
            "GET",
            "/api/v1/machines/{machine_id}/conflicts",
            "Identifiers the machine shares with other machines",
            "viewer",
            "enrolment",
            {200: "MachineConflicts"},
            (404,),
        ),
        Route(
            "POST",
            "/api/v1/enrolment/expected",
            "Import expected serials and MACs (matching machines are approved)",
            "operator",
            "enrolment",
            {200: "ExpectedImported"},
            (400,),
            body="ExpectedImport",
        ),
        Route(
            "GET",
            "/api/v1/enrolment/expected",
            "The expected serials and MACs",
            "viewer",
            "enrolment",
            {200: "ExpectedList"},
        ),
    ]
