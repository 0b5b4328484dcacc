"""REST routes for machines, their inventory and the event feed, under /api/v1.

Machines: list (filters: state, label, serial, mac; paged), get, labels
(PUT replaces, PATCH merges), retire. Inventory: the latest snapshot and its
history. Events: machine and job state changes in commit order.

Reads are SQL in appliance/api/_machine_reads.py; changes go through
appliance.core.machines so that audit and enrolment rules stay in one place.
This module never changes a machine's state by itself.
"""

from appliance.api import _machine_reads as reads
from appliance.api._common import (
    json_object,
    page,
    page_limit,
    query_one,
    require,
    service_errors,
    source_of,
)
from appliance.core import jobs, machines
from appliance.core.jobs import decode_cursor, encode_cursor
from appliance.http import HttpError, Response


def register_routes(router, app):
    handlers = _Handlers(app)
    routes = [
        ("GET", "/api/v1/machines", handlers.list),
        ("GET", "/api/v1/machines/{machine_id}", handlers.get),
        ("PUT", "/api/v1/machines/{machine_id}/labels", handlers.put_labels),
        ("PATCH", "/api/v1/machines/{machine_id}/labels", handlers.patch_labels),
        ("POST", "/api/v1/machines/{machine_id}/retire", handlers.retire),
        ("GET", "/api/v1/machines/{machine_id}/inventory", handlers.inventory),
        ("GET", "/api/v1/machines/{machine_id}/inventory/history", handlers.inventory_history),
        ("GET", "/api/v1/events", handlers.events),
    ]
    for method, pattern, handler in routes:
        router.add(method, pattern, service_errors(handler))


class _Handlers:
    def __init__(self, app):
        self.store = app.store

    async def list(self, request):
        await require(request, self.store, "viewer")
        state = query_one(request, "state")
        if state is not None and state not in reads.MACHINE_STATES:
            raise HttpError(
                400,
                "invalid_filter",
                f"state must be one of {list(reads.MACHINE_STATES)}, got {state!r}",
            )
        labels = [reads.parse_label_filter(text) for text in request.query.get("label", [])]
        cursor = query_one(request, "cursor")
        after = decode_cursor(cursor, "machines") if cursor is not None else None
        limit = page_limit(request)

        rows = await self.store.read(
            reads.list_machines,
            state,
            labels,
            query_one(request, "serial"),
            query_one(request, "mac"),
            after,
            limit + 1,
        )
        more = len(rows) > limit
        items = [reads.machine_view(row) for row in rows[:limit]]
        next_cursor = encode_cursor("machines", rows[limit - 1][0]) if more else None
        return Response.json(page(items, next_cursor))

    async def get(self, request):
        await require(request, self.store, "viewer")
        machine = await self._machine(request)
        return Response.json(machine)

    async def _machine(self, request):
        machine_id = request.path_params["machine_id"]
        machine = await self.store.read(reads.get_machine, machine_id)
        if machine is None:
            raise HttpError(404, "machine_not_found", f"no machine with id {machine_id!r}")
        return machine

    async def put_labels(self, request):
        actor = await require(request, self.store, "operator")
        labels = reads.check_labels(json_object(request), allow_null=False)
        return await self._change_labels(request, actor, labels, replace=True)

    async def patch_labels(self, request):
        actor = await require(request, self.store, "operator")
        changes = reads.check_labels(json_object(request), allow_null=True)
        return await self._change_labels(request, actor, changes, replace=False)

    async def _change_labels(self, request, actor, labels, replace):
        machine_id = request.path_params["machine_id"]
        await machines.set_labels(
            self.store,
            machine_id,
            labels,
            replace=replace,
            actor=actor,
            trace_id=request.trace_id,
            source=source_of(request),
        )
        return Response.json(await self._machine(request))

    async def retire(self, request):
        actor = await require(request, self.store, "admin")
        machine_id = request.path_params["machine_id"]
        source = source_of(request)
        await machines.retire(
            self.store, machine_id, actor=actor, trace_id=request.trace_id, source=source
        )
        await jobs.cancel_machine_jobs(self.store, machine_id, actor, request.trace_id, source)
        return Response.json(await self._machine(request))

    async def inventory(self, request):
        await require(request, self.store, "viewer")
        machine = await self._machine(request)
        snapshot = await self.store.read(reads.latest_inventory, machine["id"])
        if snapshot is None:
            raise HttpError(
                404, "no_inventory", f"machine {machine['id']} has not reported an inventory yet"
            )
        return Response.json(snapshot)

    async def inventory_history(self, request):
        await require(request, self.store, "viewer")
        machine = await self._machine(request)
        cursor = query_one(request, "cursor")
        before = decode_cursor(cursor, "inventory") if cursor is not None else None
        limit = page_limit(request)

        snapshots = await self.store.read(
            reads.inventory_history, machine["id"], before, limit + 1
        )
        more = len(snapshots) > limit
        next_cursor = encode_cursor("inventory", snapshots[limit - 1]["id"]) if more else None
        return Response.json(page(snapshots[:limit], next_cursor))

    async def events(self, request):
        await require(request, self.store, "viewer")
        event_type = query_one(request, "type")
        if event_type is not None and event_type not in reads.EVENT_TYPES:
            raise HttpError(
                400,
                "invalid_filter",
                f"type must be one of {list(reads.EVENT_TYPES)}, got {event_type!r}",
            )
        cursor = query_one(request, "cursor")
        after = decode_cursor(cursor, "events") if cursor is not None else 0
        limit = page_limit(request)

        events = await self.store.read(
            reads.list_events,
            query_one(request, "machine_id"),
            query_one(request, "job_id"),
            event_type,
            after,
            limit,
        )
        # The feed is followed, not finished: the cursor after the last event
        # is always given, so a client can ask again later for newer ones.
        last = events[-1]["seq"] if events else after
        return Response.json(page(events, encode_cursor("events", last)))
