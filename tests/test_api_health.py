"""/healthz and /readyz over real HTTP, and the OpenAPI document against the router."""

import pytest

from appliance import api
from appliance.api import openapi
from appliance.config import Settings
from appliance.core.app import App
from appliance.http import Router
from tests.api_support import start_api


async def test_healthz_and_readyz_need_no_token(nursery, tmp_path):
    client = await start_api(nursery, tmp_path, services_ready=lambda: {"dhcp": True})

    alive = await client.call("GET", "/healthz", role=None)
    ready = await client.call("GET", "/readyz", role=None)
    await client.store.close()

    assert (alive[0], alive[2]) == (200, {"status": "alive"})
    assert (ready[0], ready[2]) == (
        200,
        {"status": "ready", "checks": {"store": True, "dhcp": True}},
    )


async def test_readyz_is_503_naming_the_service_that_is_down(nursery, tmp_path):
    states = {"dhcp": True, "tftp": True}
    client = await start_api(nursery, tmp_path, services_ready=lambda: dict(states))

    states["tftp"] = False
    down = await client.call("GET", "/readyz", role=None)
    await client.store.close()
    closed = await client.call("GET", "/readyz", role=None)

    assert down[0] == 503
    assert down[2]["checks"] == {"store": True, "dhcp": True, "tftp": False}
    assert closed[0] == 503 and closed[2]["checks"]["store"] is False


async def test_readyz_survives_a_broken_services_callable(nursery, tmp_path):
    def broken():
        raise RuntimeError("service table unavailable")

    client = await start_api(nursery, tmp_path, services_ready=broken)
    status, _, body = await client.call("GET", "/readyz", role=None)
    await client.store.close()

    assert status == 503
    assert body["checks"] == {"store": True, "services": False}


@pytest.fixture
async def full_router(tmp_path):
    from tests.jobs_support import open_store

    store = await open_store(tmp_path)
    router = Router()
    api.register_routes(router, App(store=store, settings=Settings()), dict)
    yield router
    await store.close()


async def test_every_route_is_described_in_the_openapi_document(full_router):
    served = {(method, path) for method, path in full_router.routes()}
    described = {(route.method, route.path) for route in openapi.ALL_ROUTES}

    assert served == described


def test_openapi_document_is_valid_openapi_3_1():
    import schemathesis

    document = openapi.build_document(openapi.ALL_ROUTES)
    schema = schemathesis.openapi.from_dict(document)

    assert document["openapi"] == "3.1.0"
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == len(openapi.ALL_ROUTES)
