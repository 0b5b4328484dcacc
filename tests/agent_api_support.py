"""Helpers for the agent and auth API tests: a real server on loopback and a small client.

The client speaks HTTP/1.1 with h11 over a plain trio TCP stream to
127.0.0.1; nothing here talks to any other address.
"""

import json
from dataclasses import dataclass, field

import h11
import trio

from appliance.api import agent as agent_api
from appliance.api import auth as auth_api
from appliance.config import Settings
from appliance.core.app import App
from appliance.http import Router
from appliance.proto.agent import PROTOCOL_HEADER
from appliance.store import Store
from tests.http_support import start_server


@dataclass
class Api:
    app: App
    port: int
    store: Store
    settings: Settings = field(default_factory=Settings)

    async def call(self, method, path, body=None, token=None, agent=True, headers=()):
        return await call(self.port, method, path, body, token, agent, headers)


async def start_api(nursery, folder, **api_settings):
    """A store, an App and the agent + auth routes served on 127.0.0.1."""
    settings = Settings()
    for name, value in api_settings.items():
        setattr(settings.api, name, value)
    store = await Store.open(folder / "cloudboot.db", settings.store)
    app = App(store=store, settings=settings)

    router = Router()
    agent_api.register_routes(router, app)
    auth_api.register_routes(router, app)
    port = await start_server(nursery, router)
    return Api(app, port, store, settings)


@dataclass
class Reply:
    status: int
    headers: dict
    body: bytes

    @property
    def json(self):
        return json.loads(self.body) if self.body else None

    @property
    def error_code(self):
        return (self.json or {}).get("error", {}).get("code")


async def call(port, method, path, body=None, token=None, agent=True, headers=()):
    """One request on a fresh connection; returns a Reply."""
    payload = (
        b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    )
    head = [("host", "127.0.0.1"), ("content-length", str(len(payload))), ("connection", "close")]
    if body is not None:
        head.append(("content-type", "application/json"))
    if token is not None:
        head.append(("authorization", f"Bearer {token}"))
    if agent:
        head.append((PROTOCOL_HEADER, "1"))
    head.extend(headers)

    connection = h11.Connection(h11.CLIENT)
    with trio.fail_after(60):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            request = h11.Request(method=method, target=path, headers=head)
            await stream.send_all(connection.send(request))
            await stream.send_all(connection.send(h11.Data(data=payload)) if payload else b"")
            await stream.send_all(connection.send(h11.EndOfMessage()))
            return await _read_reply(stream, connection)


async def _read_reply(stream, connection):
    status, headers, body = None, {}, b""
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            connection.receive_data(await stream.receive_some(65536))
            continue
        if isinstance(event, h11.Response):
            status = event.status_code
            headers = {k.decode().lower(): v.decode() for k, v in event.headers}
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return Reply(status, headers, body)


def _user_with_token(conn, name, role, minted):
    from appliance.core import auth

    if not conn.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchall():
        auth.create_user(conn, name, role, actor="test")
    return auth.issue_user_token(conn, name, 30, "test", minted)


async def user_token(store, name, role):
    """Make user `name` with `role` (if missing) and return a fresh token for it."""
    from appliance.core import auth

    minted = auth.new_token()
    await store.write(_user_with_token, name, role, minted)
    return minted[0]
