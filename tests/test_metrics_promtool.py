"""/metrics as Prometheus reads it: `promtool check metrics` (Debian package prometheus)
finds no problem, and the per-route request counter is there by route template."""

import shutil
import subprocess

import pytest
import requests
import trio

from appliance import api
from appliance.config import Settings
from appliance.core.app import App
from appliance.http import Router
from tests.api_support import make_tokens
from tests.audit_support import open_store
from tests.http_support import start_server

PROMTOOL = shutil.which("promtool")


async def _scrape(tmp_path):
    store = await open_store(tmp_path)
    app = App(store=store, settings=Settings())
    tokens = await make_tokens(store)
    router = Router()
    api.register_routes(router, app, lambda: {"jobs": True})
    async with trio.open_nursery() as nursery:
        port = await start_server(nursery, router)
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {tokens['viewer']}"}

        def get(path):
            return requests.get(base + path, headers=headers, timeout=30)

        await trio.to_thread.run_sync(get, "/api/v1/machines")
        await trio.to_thread.run_sync(get, "/api/v1/machines/m-unknown")
        response = await trio.to_thread.run_sync(get, "/metrics")
        nursery.cancel_scope.cancel()
    await store.close()
    return response


async def test_metrics_pass_promtool(tmp_path):
    if PROMTOOL is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    response = await _scrape(tmp_path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")

    text = response.text
    assert (
        'cloudboot_api_requests_total{method="GET",route="/api/v1/machines/{machine_id}",'
        'status="4xx"}' in text
    )
    # Counted by template: no raw path (with an id) becomes a label value.
    assert "m-unknown" not in text

    checked = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=response.content, capture_output=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()
