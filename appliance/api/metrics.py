"""/metrics: the appliance's counters in the Prometheus text format.

Every module keeps its own prometheus_client counters (DHCP replies and
ignores by reason, TFTP transfers, HTTP requests ...); this route only exposes
the process registry. API answers are counted by route template and status
class in appliance/api/_accounting.py (cloudboot_api_requests_total), which
also audits refused requests; docs/operations.md, "Metrics", reads them.

The route needs a viewer token: Prometheus sends one with `authorization:
{credentials: ...}`, and the counters name machines' traffic, which a bank
treats as internal information.
"""

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from appliance.core import auth
from appliance.http import Response


def register_routes(router, app):
    async def metrics(request):
        await auth.authorize(app.store, request, "viewer")
        body = generate_latest(REGISTRY)
        return Response(status=200, headers=[("content-type", CONTENT_TYPE_LATEST)], body=body)

    router.add("GET", "/metrics", metrics)
