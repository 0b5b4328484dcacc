"""The audit log through the REST API: admin only, filters, paging, export, reads audited."""

import csv
import io
import json

import requests
import trio

from appliance.api import audit as audit_api
from appliance.config import Settings
from appliance.core.app import App
from tests.api_support import Api, build_router, make_tokens
from tests.audit_support import add_event, open_store
from tests.http_support import start_server


async def _start(nursery, folder):
    store = await open_store(folder)
    settings = Settings()
    settings.server.data_dir = str(folder)
    app = App(store=store, settings=settings)
    tokens = await make_tokens(store)
    router = build_router(app)
    audit_api.register_routes(router, app)
    port = await start_server(nursery, router)
    return Api(store, app, f"http://127.0.0.1:{port}", tokens)


async def _get_text(api, path, role="admin"):
    headers = {"Authorization": f"Bearer {api.tokens[role]}"}
    response = await trio.to_thread.run_sync(
        lambda: requests.get(api.base + path, headers=headers, timeout=30)
    )
    return response.status_code, response.headers, response.text


async def _seed(store):
    for n in range(30):
        actor = "alice" if n % 3 else "bob"
        action = "machine.approve" if n % 2 else "job.create"
        await store.write(add_event, n, actor, action)


async def test_only_admins_read_the_audit_log(tmp_path):
    async with trio.open_nursery() as nursery:
        api = await _start(nursery, tmp_path)
        for role in ("viewer", "operator"):
            status, _, body = await api.call("GET", "/api/v1/audit/events", role=role)
            assert status == 403, body
        status, _, _ = await api.call("GET", "/api/v1/audit/events", role=None)
        assert status == 401
        nursery.cancel_scope.cancel()


async def test_filters_and_paging(tmp_path):
    async with trio.open_nursery() as nursery:
        api = await _start(nursery, tmp_path)
        await _seed(api.store)

        seen, cursor = [], None
        while True:
            path = "/api/v1/audit/events?actor=bob&limit=4" + (
                f"&cursor={cursor}" if cursor else ""
            )
            status, _, body = await api.call("GET", path)
            assert status == 200, body
            seen.extend(body["items"])
            cursor = body["next_cursor"]
            if cursor is None:
                break
        # Events 0, 3, ... 27 were bob's: 10 of them, newest first, no repeats.
        assert [e["details"]["n"] for e in seen] == list(range(27, -1, -3))
        assert all(e["actor"] == "bob" and e["hash"] for e in seen)

        status, _, body = await api.call(
            "GET", "/api/v1/audit/events?action=job.create&resource_id=m-4"
        )
        assert [e["details"]["n"] for e in body["items"]] == [4]

        status, _, body = await api.call("GET", "/api/v1/audit/events?since=2999-01-01")
        assert status == 200 and body["items"] == []
        status, _, body = await api.call("GET", "/api/v1/audit/events?since=yesterday")
        assert status == 400 and "since" in body["error"]["message"]
        nursery.cancel_scope.cancel()


async def test_reading_the_log_is_audited(tmp_path):
    async with trio.open_nursery() as nursery:
        api = await _start(nursery, tmp_path)
        await api.call("GET", "/api/v1/audit/events?actor=nobody")
        status, _, body = await api.call("GET", "/api/v1/audit/events?action=audit.read")
        assert status == 200
        read = body["items"][-1]
        assert read["actor"] == "admin-user"
        assert read["details"]["filters"]["actor"] == "nobody"
        assert read["source"] == "127.0.0.1"
        assert read["trace_id"]
        nursery.cancel_scope.cancel()


async def test_export_as_json_lines_and_csv(tmp_path):
    async with trio.open_nursery() as nursery:
        api = await _start(nursery, tmp_path)
        await _seed(api.store)

        status, headers, text = await _get_text(api, "/api/v1/audit/export?actor=alice")
        assert status == 200 and headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in text.splitlines()]
        assert [e["details"]["n"] for e in lines] == [n for n in range(30) if n % 3]

        status, headers, text = await _get_text(api, "/api/v1/audit/export?format=csv&limit=5")
        assert status == 200 and headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(text)))
        assert len(rows) == 5 and "x-next-cursor" in headers
        assert json.loads(rows[0]["details"]) is not None
        assert all(len(r["hash"]) == 64 for r in rows)
        nursery.cancel_scope.cancel()


async def test_verify_through_the_api(tmp_path):
    async with trio.open_nursery() as nursery:
        api = await _start(nursery, tmp_path)
        await _seed(api.store)
        status, _, body = await api.call("GET", "/api/v1/audit/verify")
        assert status == 200 and body["ok"] is True, body
        nursery.cancel_scope.cancel()
