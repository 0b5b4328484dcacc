"""Enrolment routes: approve a machine, import expected serials and MACs, see conflicts.

A machine that registers waits, unapproved, until an operator approves it or
it reports a serial or MAC from the imported list. Every approval and import
is audited (appliance/core/machines.py records it in the same transaction).
"""

from appliance.api._common import json_body, source_of
from appliance.api.agent import translate_errors
from appliance.core import auth, machines
from appliance.http import Response


def register_routes(router, app):
    handlers = _Handlers(app)
    routes = [
        ("POST", "/api/v1/machines/{machine_id}/approve", handlers.approve),
        ("GET", "/api/v1/machines/{machine_id}/conflicts", handlers.conflicts),
        ("POST", "/api/v1/enrolment/expected", handlers.import_expected),
        ("GET", "/api/v1/enrolment/expected", handlers.list_expected),
    ]
    for method, pattern, handler in routes:
        router.add(method, pattern, translate_errors(handler))


class _Handlers:
    def __init__(self, app):
        self.store = app.store

    async def approve(self, request):
        principal = await auth.authorize(self.store, request, "operator")
        machine_id = request.path_params["machine_id"]
        await machines.approve(
            self.store, machine_id, principal.name, request.trace_id, source_of(request)
        )
        return Response.json(await self.store.read(machines.machine_document, machine_id))

    async def conflicts(self, request):
        await auth.authorize(self.store, request, "viewer")
        machine_id = request.path_params["machine_id"]
        machine = await self.store.read(machines.machine_document, machine_id)
        return Response.json(
            {
                "machine_id": machine_id,
                "uuid_trusted": machine["uuid_trusted"],
                "identifiers": machine["identifiers"],
                "conflicts": machine["conflicts"],
            }
        )

    async def import_expected(self, request):
        principal = await auth.authorize(self.store, request, "operator")
        serials, macs = machines.check_expected(json_body(request))
        outcome = await machines.import_expected(
            self.store, serials, macs, principal.name, request.trace_id, source_of(request)
        )
        return Response.json(outcome)

    async def list_expected(self, request):
        await auth.authorize(self.store, request, "viewer")
        return Response.json({"items": await self.store.read(machines.list_expected)})
