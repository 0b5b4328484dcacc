"""REST routes for the audit log under /api/v1/audit (admin only).

GET /api/v1/audit/events   one page, newest first; filters actor, action,
                           resource_type, resource_id, since, until; limit, cursor
GET /api/v1/audit/export   the same filters, oldest first, format=jsonl|csv
GET /api/v1/audit/verify   the chain verdict (appliance/core/audit_chain.py)

Reading the audit log is itself audited: every call records an event with
the caller, the filters and the number of events returned. Thin: no SQL here.
"""

import trio

from appliance.api._common import page_limit, query_int, query_one, require, service_errors
from appliance.core import audit, audit_chain
from appliance.core.audit_cli import AuditCliError, filters_from, render
from appliance.http import HttpError, Response

EXPORT_MAX = 10_000
_CONTENT_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}


def register_routes(router, app):
    handlers = _Handlers(app)
    router.add("GET", "/api/v1/audit/events", service_errors(handlers.events))
    router.add("GET", "/api/v1/audit/export", service_errors(handlers.export))
    router.add("GET", "/api/v1/audit/verify", service_errors(handlers.verify))


def _filters(request):
    try:
        return filters_from(
            **{
                name: query_one(request, name)
                for name in ("actor", "action", "resource_type", "resource_id", "since", "until")
            }
        )
    except AuditCliError as e:
        raise HttpError(400, "invalid_query", str(e).replace("--", "")) from None


def _cursor(request):
    return query_int(request, "cursor", None, 1, 2**63 - 1)


class _Handlers:
    def __init__(self, app):
        self.store = app.store
        self.data_dir = app.settings.data_path

    async def _record(self, request, actor, action, details):
        await self.store.write(
            lambda conn: audit.record(
                conn,
                actor=actor,
                action=action,
                resource_type="audit_log",
                trace_id=request.trace_id,
                source=request.client[0] if request.client else None,
                details=details,
            )
        )

    async def events(self, request):
        actor = await require(request, self.store, "admin")
        wanted = _filters(request)
        limit, before = page_limit(request), _cursor(request)
        found, next_id = await self.store.read(
            lambda conn: audit.search(conn, limit=limit, before_id=before, **wanted)
        )
        await self._record(request, actor, "audit.read", {"filters": wanted, "count": len(found)})
        cursor = None if next_id is None else str(next_id)
        return Response.json({"items": found, "next_cursor": cursor})

    async def export(self, request):
        actor = await require(request, self.store, "admin")
        wanted = _filters(request)
        fmt = query_one(request, "format", "jsonl")
        if fmt not in _CONTENT_TYPES:
            raise HttpError(400, "invalid_query", f"format must be jsonl or csv, got {fmt!r}")
        limit = query_int(request, "limit", EXPORT_MAX, 1, EXPORT_MAX)
        found, next_id = await self.store.read(
            lambda conn: audit.search(conn, limit=limit, before_id=_cursor(request), **wanted)
        )
        await self._record(
            request, actor, "audit.export", {"filters": wanted, "format": fmt, "count": len(found)}
        )
        headers = [("content-type", _CONTENT_TYPES[fmt])]
        if next_id is not None:
            # Older events remain: the client asks again with this cursor.
            headers.append(("x-next-cursor", str(next_id)))
        return Response(200, headers, render(found[::-1], fmt).encode())

    async def verify(self, request):
        actor = await require(request, self.store, "admin")
        trusted = await trio.to_thread.run_sync(audit_chain.verify_key, self.data_dir)
        verdict = await self.store.read(audit_chain.verify, trusted)
        await self._record(
            request,
            actor,
            "audit.verify",
            {"ok": verdict.ok, "first_bad_id": verdict.first_bad_id},
        )
        return Response.json(verdict.as_dict())


def _query(name, schema, description):
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


# Month, day and clock fields are bounded here; a day past the month's end
# (2026-02-30) still matches and is refused by the server with 400.
_TIME = {
    "type": "string",
    "pattern": r"^[1-9]\d{3}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"
    r"(T([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d{1,6})?)?Z?)?$",
}
_FILTERS = (
    _query("actor", {"type": "string"}, "Only events by this actor."),
    _query("action", {"type": "string"}, "Only this action, e.g. machine.approve."),
    _query("resource_type", {"type": "string"}, "Only this resource type."),
    _query("resource_id", {"type": "string"}, "Only this resource."),
    _query("since", _TIME, "From this UTC date or time (inclusive)."),
    _query("until", _TIME, "Before this UTC date or time."),
    _query("cursor", {"type": "integer", "minimum": 1}, "next_cursor of the previous page."),
)


def openapi_routes(Route):
    """Descriptions for appliance/api/openapi.py's extra_routes (Route passed in: no cycle)."""
    limit = _query("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "Page size (50).")
    export_limit = _query(
        "limit", {"type": "integer", "minimum": 1, "maximum": EXPORT_MAX}, "Most events (10000)."
    )
    export_format = _query("format", {"enum": ["jsonl", "csv"]}, "jsonl (default) or csv.")
    return [
        Route(
            "GET",
            "/api/v1/audit/events",
            "Audit events, newest first (the read is audited)",
            "admin",
            "audit",
            {200: None},
            (400,),
            (*_FILTERS, limit),
        ),
        Route(
            "GET",
            "/api/v1/audit/export",
            "Audit events as JSON lines or CSV, oldest first",
            "admin",
            "audit",
            {200: "media:application/x-ndjson,text/csv"},
            (400,),
            (*_FILTERS, export_limit, export_format),
        ),
        Route(
            "GET",
            "/api/v1/audit/verify",
            "Check the audit hash chain and signed heads",
            "admin",
            "audit",
            {200: None},
        ),
    ]
