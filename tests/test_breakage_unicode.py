"""Adversarial JSON: a lone UTF-16 surrogate ("\\ud800") in any request body.

Python's JSON parser accepts the escape, but no UTF-8 text can hold the
result. Before the fix it failed late: a job with such a parameter was
committed and then answered 500 (a client retry made a second job), and its
agent got 500 from jobs/next on every poll; a serial or label with one
answered 500. Each must be a 400 that keeps nothing.
"""

import pytest

from appliance.api import agent as agent_api
from appliance.api import jobs as jobs_api
from appliance.api import machines as machines_api
from appliance.config import Settings
from appliance.core.app import App
from appliance.http import Router
from tests.agent_api_support import call
from tests.api_support import make_tokens
from tests.http_support import start_server
from tests.jobs_support import open_store

SURROGATE = b'"\\ud800"'
HEADERS = [("content-type", "application/json")]


@pytest.fixture
async def server(nursery, tmp_path):
    store = await open_store(tmp_path)
    app = App(store=store, settings=Settings())
    router = Router()
    for module in (agent_api, jobs_api, machines_api):
        module.register_routes(router, app)
    port = await start_server(nursery, router)
    yield store, port, await make_tokens(store)
    await store.close()


async def registered_machine(store, port, admin):
    inventory = {"schema": "cloudboot.inventory/1", "system": {"serial": "SN-U-1"}}
    body = {"protocol": 1, "boot_mac": "52:54:00:dd:00:01", "pxe_guid": None}
    reply = await call(port, "POST", "/api/v1/agent/register", {**body, "inventory": inventory})
    machine = reply.json
    approved = await call(
        port, "POST", f"/api/v1/machines/{machine['machine_id']}/approve", b"", admin, False
    )
    assert approved.status == 200, approved.body
    return machine


def _job_count(conn):
    return conn.execute("SELECT count(*) FROM jobs").fetchone()[0]


def assert_bad_json(reply):
    assert reply.status == 400, reply.body
    assert reply.error_code == "bad_json"


async def test_a_job_with_a_surrogate_is_refused_and_not_created(server):
    store, port, tokens = server
    machine = await registered_machine(store, port, tokens["admin"])
    body = (
        b'{"machine_id": "' + machine["machine_id"].encode() + b'", "kind": "wait",'
        b' "params": {"note": ' + SURROGATE + b"}}"
    )

    reply = await call(port, "POST", "/api/v1/jobs", body, tokens["operator"], False)

    assert_bad_json(reply)
    assert await store.read(_job_count) == 0
    # The agent's next poll is an ordinary "nothing to do", not a 500.
    poll = await call(port, "GET", "/api/v1/agent/jobs/next?wait=0", token=machine["token"])
    assert poll.status == 204, poll.body


async def test_a_registration_with_a_surrogate_serial_is_a_400(server):
    _store, port, _tokens = server
    body = (
        b'{"protocol": 1, "boot_mac": "52:54:00:dd:00:02", "pxe_guid": null, "inventory":'
        b' {"schema": "cloudboot.inventory/1", "system": {"serial": ' + SURROGATE + b"}}}"
    )
    assert_bad_json(await call(port, "POST", "/api/v1/agent/register", body))


async def test_labels_and_agent_reports_with_a_surrogate_are_400s(server):
    store, port, tokens = server
    machine = await registered_machine(store, port, tokens["admin"])
    path = f"/api/v1/machines/{machine['machine_id']}/labels"

    labels = await call(port, "PUT", path, b'{"rack": ' + SURROGATE + b"}", tokens["admin"], False)
    events = await call(
        port,
        "POST",
        "/api/v1/agent/jobs/job_00000000000000000000/events",
        b'{"progress": null, "lines": [' + SURROGATE + b"]}",
        machine["token"],
    )

    assert_bad_json(labels)
    assert_bad_json(events)
