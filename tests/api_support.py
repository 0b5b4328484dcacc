"""Helpers for the REST API tests: a real server on loopback, users with tokens, a client.

The client is `requests` run in a worker thread, so the tests speak real HTTP
over a real socket to the real server, as a technician's curl would.
"""

import dataclasses
import functools
import json

import requests
import trio

from appliance.api import health, jobs, machines, openapi
from appliance.config import Settings
from appliance.core import auth
from appliance.core.app import App
from appliance.http import Router
from tests.http_support import start_server
from tests.jobs_support import open_store

ROLES = ("viewer", "operator", "admin")


def _make_users(conn, minted):
    tokens = {}
    for role in ROLES:
        auth.create_user(conn, f"{role}-user", role, actor="test")
        auth.issue_user_token(conn, f"{role}-user", 1, "test", minted[role])
        tokens[role] = minted[role][0]
    return tokens


async def make_tokens(store):
    """One user per role; returns {role: bearer token}."""
    minted = {role: auth.new_token() for role in ROLES}
    return await store.write(_make_users, minted)


def build_router(app, services_ready=dict):
    router = Router()
    health.register_routes(router, app, services_ready)
    machines.register_routes(router, app)
    jobs.register_routes(router, app)
    openapi.register_routes(router, app)
    return router


@dataclasses.dataclass
class Api:
    store: object
    app: App
    base: str
    tokens: dict
    session: requests.Session = dataclasses.field(default_factory=requests.Session)

    async def call(self, method, path, body=None, role="admin", headers=None, raw=None):
        """(status, headers, parsed JSON body or None)."""
        sent = dict(headers or {})
        if role is not None:
            sent["Authorization"] = f"Bearer {self.tokens[role]}"
        data = raw if raw is not None else (None if body is None else json.dumps(body))
        if data is not None:
            sent.setdefault("Content-Type", "application/json")
        request = functools.partial(
            self.session.request, method, self.base + path, data=data, headers=sent, timeout=30
        )
        response = await trio.to_thread.run_sync(request)
        parsed = response.json() if response.content else None
        return response.status_code, response.headers, parsed


async def start_api(nursery, folder, services_ready=dict, settings=None):
    """Store, App, tokens and a server on 127.0.0.1; returns an Api client."""
    store = await open_store(folder)
    app = App(store=store, settings=settings or Settings())
    tokens = await make_tokens(store)
    port = await start_server(nursery, build_router(app, services_ready))
    return Api(store, app, f"http://127.0.0.1:{port}", tokens)
