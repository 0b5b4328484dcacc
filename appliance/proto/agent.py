"""The agent protocol: version header, message shapes and their validation.

The agent in BootOS and the appliance's agent routes both use these rules,
so the two can never disagree about what a message may hold. Every function
returns a clean dict (only the known fields, normalised) or raises
AgentProtocolError with a message that says what was expected and what
arrived. Pure Python: this module must never import trio, sockets or the store.
"""

import json

from appliance.proto import inventory as _inventory
from appliance.proto import placeholders

# Carried by every agent request (docs/architecture.md, "Agent protocol").
PROTOCOL_HEADER = "X-CloudBoot-Agent-Protocol"
SUPPORTED_VERSIONS = (1,)
CURRENT_VERSION = 1

# Job kinds the agent of this protocol version runs itself.
AGENT_JOB_KINDS = ("inventory", "reboot", "poweroff", "wait")
RESULT_STATUSES = ("succeeded", "failed")

MAX_EVENT_LINES = 1000
MAX_LINE_CHARS = 4096
MAX_MESSAGE_CHARS = 4096
MAX_DATA_BYTES = 256 * 1024
MAX_WAIT_SECONDS = 60


class AgentProtocolError(ValueError):
    """A message breaks the agent protocol. `code` is the stable error word."""

    code = "bad_agent_message"

    def __init__(self, message):
        super().__init__(message)
        self.message = message


class UnsupportedProtocol(AgentProtocolError):
    """The request names no protocol version, or one this side does not speak."""

    code = "agent_protocol_unsupported"


def check_version(header_value):
    """Return the protocol version named by the header value, or raise UnsupportedProtocol."""
    spoken = ", ".join(str(v) for v in SUPPORTED_VERSIONS)
    if header_value is None:
        raise UnsupportedProtocol(
            f"header {PROTOCOL_HEADER} is missing; this appliance speaks version(s) {spoken}"
        )
    try:
        version = int(str(header_value).strip())
    except ValueError:
        version = None
    if version not in SUPPORTED_VERSIONS:
        raise UnsupportedProtocol(
            f"{PROTOCOL_HEADER} {header_value!r} is not supported; "
            f"this appliance speaks version(s) {spoken}"
        )
    return version


def _object(body, what):
    if not isinstance(body, dict):
        raise AgentProtocolError(f"{what} must be a JSON object, got {type(body).__name__}")
    return body


def validate_registration(body):
    """{"protocol", "boot_mac", "pxe_guid", "inventory"} -> the same, cleaned."""
    body = _object(body, "registration")

    protocol = body.get("protocol")
    if protocol not in SUPPORTED_VERSIONS or isinstance(protocol, bool):
        raise UnsupportedProtocol(
            f"registration protocol must be one of {list(SUPPORTED_VERSIONS)}, got {protocol!r}"
        )

    boot_mac = _inventory.normalize_mac(body.get("boot_mac"))
    if boot_mac is None:
        raise AgentProtocolError(
            f"boot_mac must be a MAC address like 52:54:00:12:34:56, got {body.get('boot_mac')!r}"
        )

    try:
        document = _inventory.validate(body.get("inventory"))
    except _inventory.InventoryError as e:
        raise AgentProtocolError(str(e)) from None
    # The same bound as an inventory job's result: every registration keeps a
    # snapshot for good, so an 8 MB one per request would fill the data disk
    # from one unauthenticated host within minutes.
    if len(json.dumps(document)) > MAX_DATA_BYTES:
        raise AgentProtocolError(f"inventory is larger than {MAX_DATA_BYTES} bytes as JSON")

    return {
        "protocol": protocol,
        "boot_mac": boot_mac,
        "pxe_guid": _pxe_guid(body.get("pxe_guid")),
        "inventory": document,
    }


def _pxe_guid(value):
    # DHCP option 97 from firmware that fills nothing in is all zeros: absent.
    if value is None or placeholders.clean(value) is None:
        return None
    guid = placeholders.normalize_uuid(value)
    if guid is None:
        raise AgentProtocolError(f"pxe_guid must be a UUID or null, got {value!r}")
    return guid


def validate_events(body):
    """{"progress": 0-100 or null, "lines": [...]} -> the same, cleaned."""
    body = _object(body, "job events")

    progress = body.get("progress")
    if progress is not None and (
        isinstance(progress, bool) or not isinstance(progress, int) or not 0 <= progress <= 100
    ):
        raise AgentProtocolError(f"progress must be 0-100 or null, got {progress!r}")

    lines = body.get("lines", [])
    if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
        raise AgentProtocolError(f"lines must be a list of text lines, got {lines!r:.200}")
    if len(lines) > MAX_EVENT_LINES:
        raise AgentProtocolError(f"at most {MAX_EVENT_LINES} lines per post, got {len(lines)}")

    return {"progress": progress, "lines": [line[:MAX_LINE_CHARS] for line in lines]}


def validate_result(body):
    """{"status", "message", "data"} -> the same, cleaned."""
    body = _object(body, "job result")

    status = body.get("status")
    if status not in RESULT_STATUSES:
        raise AgentProtocolError(f"status must be one of {list(RESULT_STATUSES)}, got {status!r}")

    message = body.get("message")
    message = "" if message is None else message
    if not isinstance(message, str):
        raise AgentProtocolError(f"message must be text, got {message!r:.200}")

    data = body.get("data")
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise AgentProtocolError(f"data must be a JSON object, got {type(data).__name__}")
    if len(json.dumps(data)) > MAX_DATA_BYTES:
        raise AgentProtocolError(f"data is larger than {MAX_DATA_BYTES} bytes as JSON")

    return {"status": status, "message": message[:MAX_MESSAGE_CHARS], "data": data}


def validate_job(doc):
    """A job handed to the agent: {"id", "kind", "params", "timeout_seconds"}."""
    doc = _object(doc, "job")

    job_id, kind = doc.get("id"), doc.get("kind")
    if not isinstance(job_id, str) or not job_id:
        raise AgentProtocolError(f"job id must be non-empty text, got {job_id!r}")
    if not isinstance(kind, str) or not kind:
        raise AgentProtocolError(f"job kind must be non-empty text, got {kind!r}")

    params = doc.get("params")
    params = {} if params is None else params
    if not isinstance(params, dict):
        raise AgentProtocolError(f"job params must be a JSON object, got {params!r:.200}")

    timeout = doc.get("timeout_seconds")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
    ):
        raise AgentProtocolError(f"timeout_seconds must be a positive number, got {timeout!r}")

    return {"id": job_id, "kind": kind, "params": params, "timeout_seconds": timeout}


def parse_wait(value, default):
    """The ?wait= long-poll seconds: a number 0..MAX_WAIT_SECONDS (default when absent)."""
    if value is None:
        return default
    try:
        wait = float(value)
    except (TypeError, ValueError):
        raise AgentProtocolError(f"wait must be a number of seconds, got {value!r}") from None
    if not 0 <= wait <= MAX_WAIT_SECONDS:
        raise AgentProtocolError(f"wait must be between 0 and {MAX_WAIT_SECONDS}, got {value!r}")
    return wait
