"""The appliance's HTTP server: plain HTTP for the boot plane, HTTPS for the API.

Public surface (everything else in this package is private):

    Router, Request, Response, HttpError, serve, HttpStats
    make_ssl_context, ensure_self_signed, certificate_fingerprint

Handlers are `async def handler(request) -> Response`. This package knows
nothing about machines, jobs or the store, and must never import them.
"""

from appliance.http._router import RouteError, Router
from appliance.http._server import HttpStats, open_listeners, serve, serve_listeners
from appliance.http._tls import certificate_fingerprint, ensure_self_signed, make_ssl_context
from appliance.http._types import HttpError, Request, Response

__all__ = [
    "HttpError",
    "HttpStats",
    "Request",
    "Response",
    "RouteError",
    "Router",
    "certificate_fingerprint",
    "ensure_self_signed",
    "make_ssl_context",
    "open_listeners",
    "serve",
    "serve_listeners",
]
