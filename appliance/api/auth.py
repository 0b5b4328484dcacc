"""Users and tokens under /api/v1 (admins) and whoami.

Every handler starts with `appliance.core.auth.authorize(store, request, role)`,
which looks the bearer token up once per request and refuses a missing or bad
one with 401 (WWW-Authenticate: Bearer) or a too-small role with 403. Token
values appear only once, in the answer to the request that issued them.
"""

from appliance.api._common import json_body, source_of
from appliance.api.agent import translate_errors
from appliance.core import auth
from appliance.http import HttpError, Response


def register_routes(router, app):
    handlers = _Handlers(app)
    routes = [
        ("GET", "/api/v1/auth/whoami", handlers.whoami),
        ("GET", "/api/v1/users", handlers.list_users),
        ("POST", "/api/v1/users", handlers.create_user),
        ("GET", "/api/v1/tokens", handlers.list_tokens),
        ("POST", "/api/v1/tokens", handlers.issue_token),
        ("POST", "/api/v1/tokens/{token_id}/revoke", handlers.revoke_token),
        ("DELETE", "/api/v1/tokens/{token_id}", handlers.revoke_token),
    ]
    for method, pattern, handler in routes:
        router.add(method, pattern, translate_errors(handler))


class _Handlers:
    def __init__(self, app):
        self.store = app.store
        self.settings = app.settings

    async def whoami(self, request):
        await auth.authenticate(self.store, request)
        principal = request.state.get("principal")
        if principal is None or principal.kind != "agent":
            principal = auth.require(request, "viewer")
        return Response.json(
            {
                "kind": principal.kind,
                "name": principal.name,
                "role": principal.role,
                "token_id": principal.token_id,
                "machine_id": principal.machine_id,
            }
        )

    async def list_users(self, request):
        await auth.authorize(self.store, request, "admin")
        return Response.json({"items": await self.store.read(auth.list_users)})

    async def create_user(self, request):
        principal = await auth.authorize(self.store, request, "admin")
        body = _object(request)
        user = await self.store.write(
            _create_user,
            body.get("name"),
            body.get("role"),
            principal.name,
            request.trace_id,
            source_of(request),
        )
        return Response.json(user, status=201)

    async def list_tokens(self, request):
        await auth.authorize(self.store, request, "admin")
        user = (request.query.get("user") or [None])[0]
        agents = (request.query.get("include_agents") or ["false"])[0].lower() == "true"
        return Response.json({"items": await self.store.read(auth.list_tokens, user, agents)})

    async def issue_token(self, request):
        principal = await auth.authorize(self.store, request, "admin")
        body = _object(request)
        ttl_days = body.get("ttl_days", self.settings.api.token_ttl_days)
        minted = auth.new_token()
        record = await self.store.write(
            _issue_token,
            body.get("user"),
            ttl_days,
            principal.name,
            minted,
            body.get("description", ""),
            request.trace_id,
            source_of(request),
        )
        return Response.json({**record, "token": minted[0]}, status=201)

    async def revoke_token(self, request):
        principal = await auth.authorize(self.store, request, "admin")
        record = await self.store.write(
            _revoke_token,
            request.path_params["token_id"],
            principal.name,
            request.trace_id,
            source_of(request),
        )
        return Response.json(record)


def _create_user(conn, name, role, actor, trace_id, source):
    return auth.create_user(conn, name, role, actor, trace_id=trace_id, source=source)


def _issue_token(conn, user, ttl_days, actor, minted, description, trace_id, source):
    return auth.issue_user_token(
        conn, user, ttl_days, actor, minted, description, trace_id=trace_id, source=source
    )


def _revoke_token(conn, token_id, actor, trace_id, source):
    return auth.revoke_token(conn, token_id, actor, trace_id=trace_id, source=source)


def _object(request):
    body = json_body(request)
    if not isinstance(body, dict):
        raise HttpError(400, "invalid_request", f"expected a JSON object, got {body!r:.100}")
    return body
