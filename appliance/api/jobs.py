"""REST routes for jobs under /api/v1/jobs (create, list, get, cancel, retry, log).

Thin: each handler checks the role, reads the request, calls
appliance.core.jobs and shapes the answer. It never writes SQL and never
decides what a job may do.
"""

from appliance.api._common import (
    json_body,
    json_object,
    page,
    page_limit,
    query_int,
    query_one,
    require,
    service_errors,
    source_of,
)
from appliance.core import jobs
from appliance.http import HttpError, Response


def register_routes(router, app):
    handlers = _Handlers(app)
    router.add("POST", "/api/v1/jobs", service_errors(handlers.create))
    router.add("GET", "/api/v1/jobs", service_errors(handlers.list))
    router.add("GET", "/api/v1/jobs/{job_id}", service_errors(handlers.get))
    router.add("POST", "/api/v1/jobs/{job_id}/cancel", service_errors(handlers.cancel))
    router.add("POST", "/api/v1/jobs/{job_id}/retry", service_errors(handlers.retry))
    router.add("GET", "/api/v1/jobs/{job_id}/log", service_errors(handlers.log))


class _Handlers:
    def __init__(self, app):
        self.store = app.store
        self.job_settings = app.settings.jobs
        self.data_dir = app.settings.server.data_dir

    async def create(self, request):
        actor = await require(request, self.store, "operator")
        body = json_body(request)
        key = request.headers.get("idempotency-key")
        job, created = await jobs.create_job(
            self.store,
            actor,
            body,
            key,
            self.job_settings,
            request.trace_id,
            source_of(request),
            data_dir=self.data_dir,
        )
        headers = [("location", f"/api/v1/jobs/{job['id']}")]
        return Response.json(job, status=201 if created else 200, headers=headers)

    async def list(self, request):
        await require(request, self.store, "viewer")
        items, next_cursor = await jobs.list_jobs(
            self.store,
            machine_id=query_one(request, "machine_id"),
            state=query_one(request, "state"),
            kind=query_one(request, "kind"),
            limit=page_limit(request),
            cursor=query_one(request, "cursor"),
        )
        return Response.json(page(items, next_cursor))

    async def get(self, request):
        await require(request, self.store, "viewer")
        return Response.json(await jobs.get_job(self.store, request.path_params["job_id"]))

    async def cancel(self, request):
        actor = await require(request, self.store, "operator")
        job_id = request.path_params["job_id"]
        job = await jobs.cancel_job(
            self.store, actor, job_id, request.trace_id, source_of(request)
        )
        return Response.json(job)

    async def retry(self, request):
        actor = await require(request, self.store, "operator")
        confirm = False
        if request.body:
            confirm = json_object(request).get("confirm", False)
            if not isinstance(confirm, bool):
                raise HttpError(400, "invalid_request", "confirm must be true or false")
        job_id = request.path_params["job_id"]
        job = await jobs.retry_job(
            self.store, actor, job_id, confirm, request.trace_id, source_of(request)
        )
        return Response.json(job, status=201, headers=[("location", f"/api/v1/jobs/{job['id']}")])

    async def log(self, request):
        await require(request, self.store, "viewer")
        after = query_int(request, "after", 0, 0, 2**62)
        limit = query_int(request, "limit", 500, 1, 5000)
        lines, next_after = await jobs.read_job_log(
            self.store, request.path_params["job_id"], after, limit
        )
        return Response.json({"lines": lines, "next_after": next_after})
