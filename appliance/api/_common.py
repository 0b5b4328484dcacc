"""Small pieces every REST handler module shares: roles, query parameters, errors.

Handlers turn service errors (JobError and the like, which carry a status
and a code) into HttpError here, once, so the client always gets the one JSON
error shape. Nothing here touches the store.
"""

import functools
import json

from appliance.core import auth
from appliance.core._jobsql import JobError
from appliance.core.machines import MachineError
from appliance.http import HttpError
from appliance.store import StorageFullError

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


async def require(request, store, role):
    """Check the caller's token and role; return the actor name for audit and job records.

    Authentication runs here when no earlier layer did it for this request, so
    these routes are safe however they are mounted.
    """
    if "principal" not in request.state and "auth_error" not in request.state:
        await auth.authenticate(store, request)
    return auth.require(request, role).name


def source_of(request):
    """The client's address, for the audit record's source."""
    return request.client[0] if request.client else None


def service_errors(handler):
    """Turn the services' errors (which carry status and code) into HttpError."""

    @functools.wraps(handler)
    async def wrapped(request):
        try:
            return await handler(request)
        except (JobError, MachineError, auth.AuthError) as e:
            raise HttpError(e.status, e.code, e.message) from None
        except StorageFullError as e:
            raise storage_full(e) from None

    return wrapped


def storage_full(error):
    """503 for a write the full data disk refused: nothing was saved, retrying later works."""
    return HttpError(503, "storage_full", str(error), headers=[("retry-after", "60")])


def query_one(request, name, default=None):
    """The single value of query parameter `name`; 400 when it is given twice."""
    values = request.query.get(name)
    if not values:
        return default
    if len(values) > 1:
        raise HttpError(
            400, "invalid_query", f"query parameter {name!r} given {len(values)} times"
        )
    return values[0]


def query_int(request, name, default, low, high):
    text = query_one(request, name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise HttpError(
            400, "invalid_query", f"query parameter {name!r} must be a whole number, got {text!r}"
        ) from None
    if not low <= value <= high:
        raise HttpError(
            400, "invalid_query", f"query parameter {name!r} must be {low}-{high}, got {value}"
        )
    return value


def page_limit(request):
    return query_int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)


def json_body(request):
    """The request body parsed as JSON that can also be stored and sent back.

    JSON lets "\\ud800" (a lone UTF-16 surrogate) through the parser, but no
    UTF-8 text can hold it: such a value would fail later, when SQLite binds it
    or when a response is encoded, after the change it came with had already
    committed (a job created, then a 500 to the caller and to its agent).
    """
    body = request.json()
    try:
        json.dumps(body, ensure_ascii=False).encode()
    except UnicodeEncodeError as e:
        raise HttpError(
            400, "bad_json", f"request body holds text that is not valid Unicode: {e.reason}"
        ) from None
    except RecursionError:
        raise HttpError(400, "bad_json", "request body JSON is nested too deeply") from None
    return body


def json_object(request):
    body = json_body(request)
    if not isinstance(body, dict):
        raise HttpError(400, "invalid_request", "request body must be a JSON object")
    return body


def page(items, next_cursor):
    return {"items": items, "next_cursor": next_cursor}
