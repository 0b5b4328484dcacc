"""JSON Schemas (2020-12, as OpenAPI 3.1 uses) of what the REST API sends and takes.

Data only. The OpenAPI document (appliance/api/openapi.py) refers to these by
name; the schemathesis test checks real answers against them, so a schema
here must say what the code really sends, not what it should send one day.
"""

from appliance.api._machine_reads import LABEL_KEY_PATTERN, LABEL_VALUE_PATTERN
from appliance.api.bmc import JOB_PARAMS_RULES
from appliance.core import machines
from appliance.core._jobsql import KINDS, STATES

MACHINE_STATES = list(machines.STATES)


def _nullable(kind):
    return {"type": [kind, "null"]}


_TEXT = {"type": "string"}
_STAMP = {"type": "string", "description": "UTC time, 2026-01-31T12:00:00.000000Z"}
_STAMP_OR_NULL = {"type": ["string", "null"], "description": "UTC time or null"}


def _object(properties, required=None, additional=False, description=None):
    schema = {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
        "additionalProperties": additional,
    }
    if description:
        schema["description"] = description
    return schema


def _page(item):
    return _object(
        {
            "items": {"type": "array", "items": {"$ref": f"#/components/schemas/{item}"}},
            "next_cursor": {
                "type": ["string", "null"],
                "description": "Give back as ?cursor= for the next page; null on the last page.",
            },
        }
    )


_MACHINE = {
    "id": _TEXT,
    "state": {"enum": MACHINE_STATES},
    "approved": {"type": "boolean"},
    "approved_by": _nullable("string"),
    "approved_at": _STAMP_OR_NULL,
    "approved_via": _nullable("string"),
    "boot_mac": _nullable("string"),
    "pxe_guid": _nullable("string"),
    "pxe_guid_matches": _nullable("boolean"),
    "smbios_uuid": _nullable("string"),
    "uuid_trusted": {"type": "boolean"},
    "system_serial": _nullable("string"),
    "manufacturer": _nullable("string"),
    "product": _nullable("string"),
    "labels": {"$ref": "#/components/schemas/Labels"},
    "source_address": _nullable("string"),
    "created_at": _STAMP,
    "updated_at": _STAMP,
    "last_seen_at": _STAMP_OR_NULL,
    "retired_at": _STAMP_OR_NULL,
    "registrations": {"type": "integer"},
}


SCHEMAS = {
    "Error": _object(
        {
            "error": _object(
                {
                    "code": {"type": "string", "description": "Stable word, e.g. not_found"},
                    "message": {"type": "string", "description": "What was wrong, for people"},
                    "trace_id": {"type": "string", "description": "Also in X-Request-ID"},
                }
            )
        }
    ),
    "Job": _object(
        {
            "id": _TEXT,
            "machine_id": _TEXT,
            "kind": {"enum": list(KINDS)},
            "params": {"type": "object"},
            "state": {"enum": list(STATES)},
            "timeout_seconds": {"type": "integer", "minimum": 1},
            "attempt": {"type": "integer", "minimum": 0},
            "max_attempts": {"type": "integer", "minimum": 1},
            "progress": {"type": ["integer", "null"], "minimum": 0, "maximum": 100},
            "message": _TEXT,
            "result": _nullable("object"),
            "confirmed": {"type": "boolean"},
            "created_by": _TEXT,
            "idempotency_key": _nullable("string"),
            "retry_of": _nullable("string"),
            "created_at": _STAMP,
            "updated_at": _STAMP,
            "not_before": _STAMP,
            "started_at": _STAMP_OR_NULL,
            "finished_at": _STAMP_OR_NULL,
            "lease_expires_at": _STAMP_OR_NULL,
            "cancel_requested": {"type": "boolean"},
        }
    ),
    "JobCreate": {
        **_object(
            {
                "machine_id": {"type": "string", "minLength": 1, "maxLength": 100},
                "kind": {"enum": list(KINDS)},
                "params": {"type": "object"},
                "timeout_seconds": {"type": "integer", "minimum": 1, "maximum": 7 * 24 * 3600},
                "confirm": {
                    "type": "boolean",
                    "description": "Needed for raid, wipe and install on a deployed machine.",
                },
            },
            required=["machine_id", "kind"],
        ),
        "allOf": JOB_PARAMS_RULES,
    },
    "JobRetry": _object({"confirm": {"type": "boolean"}}, required=[]),
    "JobPage": _page("Job"),
    "JobLog": _object(
        {
            "lines": {
                "type": "array",
                "items": _object(
                    {
                        "seq": {"type": "integer"},
                        "attempt": {"type": "integer"},
                        "at": _STAMP,
                        "line": _TEXT,
                    }
                ),
            },
            "next_after": {"type": "integer", "description": "Give back as ?after="},
        }
    ),
    "Machine": _object(_MACHINE),
    "MachineDetail": _object(
        {
            **_MACHINE,
            "identifiers": {
                "type": "array",
                "items": _object({"kind": _TEXT, "value": _TEXT}),
            },
            "conflicts": {
                "type": "array",
                "items": _object({"kind": _TEXT, "value": _TEXT, "machine_id": _TEXT}),
            },
        }
    ),
    "MachinePage": _page("Machine"),
    "Labels": {
        "type": "object",
        "maxProperties": 64,
        "propertyNames": {"pattern": LABEL_KEY_PATTERN},
        "additionalProperties": {
            "type": "string",
            "maxLength": 256,
            "pattern": LABEL_VALUE_PATTERN,
        },
    },
    "LabelsPatch": {
        "type": "object",
        "maxProperties": 64,
        "propertyNames": {"pattern": LABEL_KEY_PATTERN},
        "additionalProperties": {
            "type": ["string", "null"],
            "maxLength": 256,
            "pattern": LABEL_VALUE_PATTERN,
        },
        "description": "JSON merge patch: a string sets a label, null removes it.",
    },
    "InventorySnapshot": _object(
        {
            "id": {"type": "integer"},
            "machine_id": _TEXT,
            "taken_at": _STAMP,
            "schema": _TEXT,
            "inventory": {"type": "object", "description": "docs/architecture.md, Inventory"},
        }
    ),
    "InventoryPage": _page("InventorySnapshot"),
    "Event": _object(
        {
            "seq": {"type": "integer"},
            "at": _STAMP,
            "type": {"enum": ["machine.state", "job.state"]},
            "machine_id": _nullable("string"),
            "job_id": _nullable("string"),
            "from_state": _nullable("string"),
            "to_state": _TEXT,
            "message": _TEXT,
        }
    ),
    "EventPage": _page("Event"),
    "Health": _object({"status": {"const": "alive"}}),
    "Ready": _object(
        {
            "status": {"enum": ["ready", "not_ready"]},
            "checks": {"type": "object", "additionalProperties": {"type": "boolean"}},
        }
    ),
}
