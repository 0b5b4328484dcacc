"""What an API worker answers itself and what it hands to the main process (no child processes).

A worker's router is served here on a real loopback socket over a real
read-only store; its forwarder points at a socket nobody listens on, so a
forwarded request answers 503 main_unavailable and a local one answers from
the store. A local handler that tried to write would get a 500, because the
worker's store refuses writes.
"""

import functools
import json

import pytest
import requests
import trio

from appliance import api
from appliance.config import Settings
from appliance.core import jobs
from appliance.core.app import App
from appliance.http import Router
from appliance.http.forward import Forwarder, parse_peer
from appliance.store import ReadOnlyStore, Store
from appliance.workers import (
    LOCAL_READS,
    WorkerError,
    WorkerPool,
    build_router,
)
from tests.api_server import seed
from tests.http_support import start_server


async def start_worker_router(nursery, folder, **api_settings):
    settings = Settings()
    settings.server.data_dir = str(folder)
    for name, value in api_settings.items():
        setattr(settings.api, name, value)

    writer = await Store.open(folder / "cloudboot.db", settings.store)
    seeded = await seed(writer, 2)
    body = {"machine_id": seeded["machines"][0], "kind": "wait", "params": {"seconds": 1}}
    job, _ = await jobs.create_job(writer, "test", body, "key-1", settings.jobs, "trace-1")
    seeded["job_id"] = job["id"]
    store = await ReadOnlyStore.open(folder / "cloudboot.db", settings.store)
    app = App(store=store, settings=settings)
    router = build_router(app, Forwarder(folder / "nobody-listens.sock"))
    port = await start_server(nursery, router)
    return f"http://127.0.0.1:{port}", seeded, writer, store


async def get(url, token, method="GET"):
    call = functools.partial(
        requests.request, method, url, headers={"authorization": f"Bearer {token}"}, timeout=30
    )
    return await trio.to_thread.run_sync(call)


def concrete(pattern, seeded):
    machine_id, job_id = seeded["machines"][0], seeded["job_id"]
    return pattern.replace("{machine_id}", machine_id).replace("{job_id}", job_id)


async def test_every_local_read_is_answered_from_the_read_only_store(tmp_path):
    async with trio.open_nursery() as nursery:
        base, seeded, writer, store = await start_worker_router(nursery, tmp_path)
        token = seeded["tokens"]["admin"]

        for pattern in sorted(LOCAL_READS):
            reply = await get(base + concrete(pattern, seeded), token)
            # A 500 would mean the handler tried to write (the store refuses), a 503
            # that the request left the worker for the main process.
            assert reply.status_code == 200, (pattern, reply.status_code, reply.text)

        listed = (await get(f"{base}/api/v1/jobs", token)).json()
        assert [job["id"] for job in listed["items"]] == [seeded["job_id"]]

        machine = await get(f"{base}/api/v1/machines/{seeded['machines'][0]}", token)
        assert machine.status_code == 200
        assert machine.json()["id"] == seeded["machines"][0]
        nursery.cancel_scope.cancel()
    await store.close()
    await writer.close()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v1/jobs"),
        ("GET", "/api/v1/agent/jobs/next?wait=1"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/api/v1/audit/events"),
        ("GET", "/api/v1/keys/status"),
        ("DELETE", "/api/v1/machines"),
        ("GET", "/no/such/path"),
    ],
)
async def test_writes_audited_reads_and_unknown_paths_go_to_the_main_process(
    tmp_path, method, path
):
    async with trio.open_nursery() as nursery:
        base, seeded, writer, store = await start_worker_router(nursery, tmp_path)
        reply = await get(base + path, seeded["tokens"]["admin"], method)
        nursery.cancel_scope.cancel()
    await store.close()
    await writer.close()

    assert reply.status_code == 503, reply.text
    assert reply.json()["error"]["code"] == "main_unavailable"
    assert reply.headers["retry-after"] == "5"


async def test_with_audited_reads_machine_and_job_reads_go_to_the_main_process(tmp_path):
    async with trio.open_nursery() as nursery:
        base, seeded, writer, store = await start_worker_router(
            nursery, tmp_path, audit_reads=True
        )
        token = seeded["tokens"]["viewer"]
        machines = await get(f"{base}/api/v1/machines", token)
        whoami = await get(f"{base}/api/v1/auth/whoami", token)
        nursery.cancel_scope.cancel()
    await store.close()
    await writer.close()

    assert machines.status_code == 503
    assert whoami.status_code == 200


def test_every_local_read_is_a_real_get_route():
    router = Router()
    api.register_routes(router, App(store=None), dict)
    routes = set(router.routes())
    missing = [pattern for pattern in LOCAL_READS if ("GET", pattern) not in routes]
    assert missing == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1 5000", ("127.0.0.1", 5000)),
        ("::1 443", ("::1", 443)),
        ("", None),
        (None, None),
        ("127.0.0.1", None),
        ("127.0.0.1 99999", None),
        ("1.2.3.4 5 6", None),
        ("127.0.0.1 -1", None),
    ],
)
def test_peer_header_is_read_strictly(text, expected):
    assert parse_peer(text) == expected


@pytest.mark.parametrize("count", [0, -1, 65, "2"])
def test_a_worker_count_out_of_range_is_refused(count):
    settings = Settings()
    settings.http.workers = count
    with pytest.raises(WorkerError, match="http.workers must be 1-64"):
        WorkerPool(settings)


def test_the_start_message_round_trips_every_setting(tmp_path):
    from appliance.workers import settings_from

    settings = Settings()
    settings.http.workers = 3
    settings.api.registration_networks = ["192.0.2.0/24"]
    pool = WorkerPool(settings)
    message = json.loads(pool._start_message(tmp_path / "s.sock", ("c", "k"), "127.0.0.1"))
    assert settings_from(message["settings"]) == settings
