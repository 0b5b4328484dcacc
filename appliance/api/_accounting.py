"""Per-route accounting around every REST handler: counters, refusals audited, reads audited.

`AccountingRouter(router, app)` stands in for the router while the API
modules register: each handler is wrapped so that

1. every answer is counted in cloudboot_api_requests_total by method, route
   template (never the raw path: ids would make one series per machine) and
   status class;
2. a refused request (401 or 403 on any route; any error on a state-changing
   route) becomes an audit event `request.refused` with the source address,
   the trace id, the actor when the token was valid, and the route and status
   in its details. The domain modules audit what a request changed; this
   layer audits what it was not allowed to change. Refusals are bounded: at
   most REFUSALS_PER_MINUTE per source address and route, and GLOBAL_PER_MINUTE
   in all, so a flood of bad tokens cannot fill the disk; what is held back is
   counted in cloudboot_audit_refusals_suppressed_total and carried as
   "suppressed" in the next event recorded for the same key;
3. with api.audit_reads on, a successful plain read of machines or jobs is an
   audit event `<resource>.read` as well.

It never changes an answer and never raises an error of its own: a failed
audit write of a refusal is logged, and the client still gets the refusal.
"""

import functools
import logging

from prometheus_client import Counter

from appliance.core import audit
from appliance.core.app import RateLimiter
from appliance.http import HttpError

log = logging.getLogger(__name__)

# Refused requests recorded per minute: per source and route, per source over all
# routes, and in all. The per-source bound keeps one address flooding many routes from
# using up the overall budget and so hiding another address's refusal; the overall
# bound keeps many addresses from filling the disk. What is over a bound is counted in
# a metric and named in the next recorded refusal of the same source and route.
REFUSALS_PER_MINUTE = 10
SOURCE_REFUSALS_PER_MINUTE = 30
GLOBAL_PER_MINUTE = 300
MAX_TRACKED = 10_000

REQUESTS = Counter(
    "cloudboot_api_requests",
    "API requests answered, by method, route template and status class",
    ["method", "route", "status"],
)
REFUSALS_SUPPRESSED = Counter(
    "cloudboot_audit_refusals_suppressed",
    "Refused requests not written to the audit log because of the rate bound",
)

# Plain reads that api.audit_reads also audits: route template -> resource type.
PLAIN_READS = {
    "/api/v1/machines": "machine",
    "/api/v1/machines/{machine_id}": "machine",
    "/api/v1/machines/{machine_id}/inventory": "machine",
    "/api/v1/machines/{machine_id}/inventory/history": "machine",
    "/api/v1/machines/{machine_id}/conflicts": "machine",
    "/api/v1/jobs": "job",
    "/api/v1/jobs/{job_id}": "job",
    "/api/v1/jobs/{job_id}/log": "job",
    "/api/v1/events": "event",
}


class AccountingRouter:
    """Wraps each handler added; everything else goes to the real router."""

    def __init__(self, router, app):
        self._router = router
        self._app = app
        self._per_key = RateLimiter(REFUSALS_PER_MINUTE, max_keys=MAX_TRACKED)
        self._per_source = RateLimiter(SOURCE_REFUSALS_PER_MINUTE, max_keys=MAX_TRACKED)
        self._overall = RateLimiter(GLOBAL_PER_MINUTE, max_keys=1)
        self._suppressed = {}

    def add(self, method, pattern, handler):
        self._router.add(method, pattern, self._wrap(method.upper(), pattern, handler))

    def __getattr__(self, name):
        return getattr(self._router, name)

    def _wrap(self, method, pattern, handler):
        @functools.wraps(handler)
        async def accounted(request):
            try:
                response = await handler(request)
            except HttpError as e:
                REQUESTS.labels(method, pattern, _status_class(e.status)).inc()
                await self._refused(request, method, pattern, e)
                raise
            except Exception:
                REQUESTS.labels(method, pattern, "5xx").inc()
                raise
            REQUESTS.labels(method, pattern, _status_class(response.status)).inc()
            if pattern in PLAIN_READS and method == "GET" and self._app.settings.api.audit_reads:
                await self._read(request, pattern)
            return response

        return accounted

    async def _refused(self, request, method, pattern, error):
        # A 404 or 400 on a read changed nothing and names nothing sensitive.
        if method in ("GET", "HEAD") and error.status not in (401, 403):
            return
        source = _source(request)
        key = (source, method, pattern)
        if not self._within_bounds(key, source):
            self._count_suppressed(key)
            return

        resource_type, resource_id = _resource(pattern, request.path_params)
        details = {
            "method": method,
            "route": pattern,
            "status": error.status,
            "code": error.code,
            "suppressed": self._suppressed.pop(key, 0),
        }
        await self._record(
            request,
            action="request.refused",
            resource_type=resource_type,
            resource_id=resource_id,
            result="denied" if error.status in (401, 403) else "failed",
            details=details,
        )

    def _within_bounds(self, key, source):
        return (
            self._per_key.allow(key) is True
            and self._per_source.allow(source) is True
            and self._overall.allow("all") is True
        )

    def _count_suppressed(self, key):
        REFUSALS_SUPPRESSED.inc()
        if key not in self._suppressed and len(self._suppressed) >= MAX_TRACKED:
            # Bounded like the limiters: the oldest count is forgotten (the metric keeps it).
            self._suppressed.pop(next(iter(self._suppressed)))
        self._suppressed[key] = self._suppressed.get(key, 0) + 1

    async def _read(self, request, pattern):
        _, resource_id = _resource(pattern, request.path_params)
        resource_type = PLAIN_READS[pattern]
        if resource_id == pattern:
            resource_id = None
        query = {name: values for name, values in request.query.items() if name != "cursor"}
        await self._record(
            request,
            action=f"{PLAIN_READS[pattern]}.read",
            resource_type=resource_type,
            resource_id=resource_id,
            result="ok",
            details={"route": pattern, "query": query},
        )

    async def _record(self, request, **event):
        if getattr(self._app.store, "read_only", False):
            # An API worker process (appliance/workers.py): it hands refused
            # requests to the main process, which answers and records them.
            return
        principal = request.state.get("principal")
        actor = principal.name if principal is not None else "anonymous"
        try:
            await self._app.store.write(
                lambda conn: audit.record(
                    conn,
                    actor=actor,
                    trace_id=request.trace_id,
                    source=_source(request),
                    **event,
                )
            )
        except Exception:
            # The client's answer must not change because the audit write failed
            # (a full disk, for one); the failure is visible in the log.
            log.exception("could not audit %s for trace %s", event["action"], request.trace_id)


def _status_class(status):
    return f"{status // 100}xx"


def _source(request):
    return request.client[0] if request.client else None


def _resource(pattern, path_params):
    """(resource type, id) from the route: the last {name_id} parameter, else the path."""
    names = [part[1:-1] for part in pattern.split("/") if part.startswith("{")]
    for name in reversed(names):
        if name.endswith("_id") and name in (path_params or {}):
            return name.removesuffix("_id"), path_params[name]
    return "route", pattern
