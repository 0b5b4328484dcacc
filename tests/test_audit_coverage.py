"""Every state-changing route and every sensitive read leaves an audit event.

The routes to check are built from openapi.ALL_ROUTES: every non-GET route,
and every GET route that reads sensitive data. A route added later without a
scenario here makes test_every_route_has_a_scenario fail, so it cannot slip
in unaudited. Each scenario makes a real successful call against the whole
API (appliance.api.register_routes, as serve.py mounts it) on 127.0.0.1 and
then a refused one, and looks the events up in the store by the X-Request-ID
it sent.
"""

import dataclasses
import functools
import json
import re
import uuid

import pytest
import trio
from prometheus_client import REGISTRY

from appliance import api
from appliance.api import openapi
from appliance.api._accounting import REFUSALS_PER_MINUTE
from appliance.config import Settings
from appliance.core import audit
from appliance.core.app import App
from appliance.http import Router
from appliance.proto import inventory
from keys.envelope import Keyring
from tests.api_support import Api, make_tokens
from tests.audit_support import open_store
from tests.http_support import start_server
from tests.keys_support import make_key_file

AGENT = {"X-CloudBoot-Agent-Protocol": "1"}
MAC = "52:54:00:aa:bb:01"

# GET routes that read sensitive data: audited like a change.
SENSITIVE_GETS = {
    "/api/v1/audit/events",
    "/api/v1/audit/export",
    "/api/v1/audit/verify",
    "/api/v1/keys/status",
    # The BMC's address and login (never the password): who looked is audited.
    "/api/v1/machines/{machine_id}/bmc",
}
# A GET route whose path has one of these words must be in SENSITIVE_GETS or in
# NOT_SENSITIVE, so a new secret-reading route is a decision, not an accident.
SENSITIVE_WORDS = re.compile(r"audit|keys|secret|export|credential|bmc|backup|password")
NOT_SENSITIVE = set()

# Deliberately not audited, with the reason.
EXEMPT = {
    # Progress lines, at least one a minute from every running job: auditing them
    # would make the job log twice. The job's start, end and cancellation are
    # audited (job.create, job.finish, job.cancel).
    ("POST", "/api/v1/agent/jobs/{job_id}/events"),
    # Audited by the route itself as provider.run (ok, or denied with the reason) for every
    # answer about a package; that needs a vendor-signed package imported, which this walk's
    # appliance has not: tests/test_agent_packages_api.py checks those events.
    ("GET", "/api/v1/agent/jobs/{job_id}/provider"),
}


@dataclasses.dataclass
class Scenario:
    method: str
    pattern: str
    path: str  # pattern with {names} filled from the context
    action: str
    resource_type: str
    resource_id: str | None  # filled from the context
    role: str | None = "admin"  # "agent" for the machine's token; None: no token
    body: object = None
    ok: tuple = (200, 201, 204)


def _registration():
    document = {
        "schema": inventory.SCHEMA,
        "system": {"manufacturer": "QEMU", "product": "Standard PC", "serial": "SNCOV1"},
        "nics": [{"name": "ens3", "mac": MAC, "permanent_mac": MAC}],
    }
    return {"protocol": 1, "boot_mac": MAC, "pxe_guid": None, "inventory": document}


# A BMC on a documentation address (RFC 5737): only stored, never contacted here.
BMC = {"protocol": "ipmi", "address": "192.0.2.61", "username": "cov", "password": "cov-pw-1"}

# In the order they run: later ones use what earlier ones made (ctx).
SCENARIOS = [
    Scenario(
        "POST",
        "/api/v1/agent/register",
        "/api/v1/agent/register",
        "machine.register",
        "machine",
        "{machine_id}",
        role=None,
        body=_registration(),
    ),
    Scenario(
        "POST",
        "/api/v1/machines/{machine_id}/approve",
        "/api/v1/machines/{machine_id}/approve",
        "machine.approve",
        "machine",
        "{machine_id}",
    ),
    Scenario(
        "PUT",
        "/api/v1/machines/{machine_id}/labels",
        "/api/v1/machines/{machine_id}/labels",
        "machine.labels",
        "machine",
        "{machine_id}",
        body={"rack": "r1"},
    ),
    Scenario(
        "PATCH",
        "/api/v1/machines/{machine_id}/labels",
        "/api/v1/machines/{machine_id}/labels",
        "machine.labels",
        "machine",
        "{machine_id}",
        body={"row": "2"},
    ),
    Scenario(
        "PUT",
        "/api/v1/machines/{machine_id}/bmc",
        "/api/v1/machines/{machine_id}/bmc",
        "machine.bmc.set",
        "machine",
        "{machine_id}",
        body=BMC,
    ),
    Scenario(
        "GET",
        "/api/v1/machines/{machine_id}/bmc",
        "/api/v1/machines/{machine_id}/bmc",
        "machine.bmc.read",
        "machine",
        "{machine_id}",
    ),
    Scenario(
        "DELETE",
        "/api/v1/machines/{machine_id}/bmc",
        "/api/v1/machines/{machine_id}/bmc",
        "machine.bmc.delete",
        "machine",
        "{machine_id}",
    ),
    Scenario(
        "POST",
        "/api/v1/jobs",
        "/api/v1/jobs",
        "job.create",
        "job",
        "{job_id}",
        body={"machine_id": "{machine_id}", "kind": "inventory"},
    ),
    Scenario(
        "POST",
        "/api/v1/agent/jobs/{job_id}/result",
        "/api/v1/agent/jobs/{job_id}/result",
        "job.result",
        "job",
        "{job_id}",
        role="agent",
        body={"status": "failed", "message": "coverage test", "data": {}},
    ),
    # The failed inventory job went back to the queue (retry-safe): cancel it, then retry.
    Scenario(
        "POST",
        "/api/v1/jobs/{job_id}/cancel",
        "/api/v1/jobs/{job_id}/cancel",
        "job.cancel",
        "job",
        "{job_id}",
    ),
    Scenario(
        "POST",
        "/api/v1/jobs/{job_id}/retry",
        "/api/v1/jobs/{job_id}/retry",
        "job.retry",
        "job",
        "{retried_job_id}",
        body={},
    ),
    Scenario(
        "POST",
        "/api/v1/enrolment/expected",
        "/api/v1/enrolment/expected",
        "enrolment.expected_import",
        "expected_machines",
        None,
        body={"serials": ["SNCOV2"], "macs": []},
    ),
    Scenario(
        "POST",
        "/api/v1/users",
        "/api/v1/users",
        "user.create",
        "user",
        "carol",
        body={"name": "carol", "role": "viewer"},
    ),
    Scenario(
        "POST",
        "/api/v1/tokens",
        "/api/v1/tokens",
        "token.issue",
        "token",
        "{token_id}",
        body={"user": "carol", "ttl_days": 1},
    ),
    Scenario(
        "POST",
        "/api/v1/tokens/{token_id}/revoke",
        "/api/v1/tokens/{token_id}/revoke",
        "token.revoke",
        "token",
        "{token_id}",
    ),
    Scenario(
        "DELETE",
        "/api/v1/tokens/{token_id}",
        "/api/v1/tokens/{token_id}",
        "token.revoke",
        "token",
        "{token_id}",
    ),
    Scenario(
        "POST",
        "/api/v1/machines/{machine_id}/retire",
        "/api/v1/machines/{machine_id}/retire",
        "machine.retire",
        "machine",
        "{machine_id}",
    ),
    Scenario(
        "GET", "/api/v1/audit/events", "/api/v1/audit/events", "audit.read", "audit_log", None
    ),
    Scenario(
        "GET", "/api/v1/audit/export", "/api/v1/audit/export", "audit.export", "audit_log", None
    ),
    Scenario(
        "GET", "/api/v1/audit/verify", "/api/v1/audit/verify", "audit.verify", "audit_log", None
    ),
    Scenario(
        "GET", "/api/v1/keys/status", "/api/v1/keys/status", "key.status", "master_key", None
    ),
    # Without a dual-control key configured the attempt fails, and is audited as such;
    # tests/test_keys_unseal_api.py unseals a real dual-control key.
    Scenario(
        "POST",
        "/api/v1/keys/unseal",
        "/api/v1/keys/unseal",
        "key.unseal",
        "master_key",
        None,
        body={"officer": "alice", "passphrase": "not it"},
        ok=(200, 403, 409),
    ),
]


def _audited_routes():
    routes = set()
    for route in openapi.ALL_ROUTES:
        key = (route.method, route.path)
        if route.method != "GET" or route.path in SENSITIVE_GETS:
            routes.add(key)
    return routes - EXEMPT


def test_every_route_has_a_scenario():
    covered = {(s.method, s.pattern) for s in SCENARIOS}
    missing = _audited_routes() - covered
    assert not missing, (
        f"routes without an audit scenario (add one, make the handler audit, "
        f"or exempt it with a reason): {sorted(missing)}"
    )
    unknown = {
        route.path
        for route in openapi.ALL_ROUTES
        if route.method == "GET"
        and SENSITIVE_WORDS.search(route.path)
        and route.path not in SENSITIVE_GETS | NOT_SENSITIVE
    }
    assert not unknown, f"GET routes that look sensitive, undecided: {sorted(unknown)}"


async def _start(nursery, folder, audit_reads=False):
    data = folder / "data"
    data.mkdir()
    store = await open_store(data)
    settings = Settings()
    settings.server.data_dir = str(data)
    settings.api.audit_reads = audit_reads
    app = App(store=store, settings=settings)
    # A master key (a key file beside, not in, the data directory), so that PUT .../bmc
    # can seal the password, as in tests/test_keys_*.py.
    holder = folder / "keyholder"
    holder.mkdir(mode=0o700)
    app.master = make_key_file(holder, data)
    app.keyring = Keyring(data, app.master, actor="appliance")
    tokens = await make_tokens(store)
    router = Router()
    api.register_routes(router, app, lambda: {"jobs": True})
    port = await start_server(nursery, router)
    return Api(store, app, f"http://127.0.0.1:{port}", tokens)


def _fill(value, ctx):
    if isinstance(value, str):
        return value.format(**ctx)
    if isinstance(value, dict):
        return {k: _fill(v, ctx) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, ctx) for v in value]
    return value


async def _call(client, scenario, ctx, role, trace):
    headers = {"X-Request-ID": trace}
    if scenario.pattern.startswith("/api/v1/agent/"):
        headers.update(AGENT)
    if role == "agent":
        headers["Authorization"] = f"Bearer {ctx['agent_token']}"
        role = None
    if role is not None:
        headers["Authorization"] = f"Bearer {client.tokens[role]}"
    path, body = _fill(scenario.path, ctx), _fill(scenario.body, ctx)
    data = None if scenario.method == "GET" else json.dumps({} if body is None else body)
    request = functools.partial(
        client.session.request,
        scenario.method,
        client.base + path,
        data=data,
        headers={"Content-Type": "application/json", **headers},
        timeout=30,
    )
    response = await trio.to_thread.run_sync(request)
    try:
        return response.status_code, response.json() if response.content else None
    except ValueError:
        return response.status_code, response.text  # the export is JSON lines or CSV


async def _events(store, trace):
    found, _ = await store.read(lambda conn: audit.search(conn, limit=500))
    return [e for e in found if e["trace_id"] == trace]


def _learn(ctx, scenario, body):
    """Remember the ids later scenarios need."""
    if scenario.pattern == "/api/v1/agent/register":
        ctx.update(machine_id=body["machine_id"], agent_token=body["token"])
    elif scenario.pattern == "/api/v1/jobs":
        ctx["job_id"] = body["id"]
    elif scenario.pattern.endswith("/retry"):
        ctx["retried_job_id"] = body["id"]
    elif scenario.pattern == "/api/v1/tokens":
        ctx["token_id"] = body["id"]


async def _hand_job_to_agent(client, ctx):
    headers = {**AGENT, "Authorization": f"Bearer {ctx['agent_token']}"}
    status, _, body = await client.call(
        "GET", "/api/v1/agent/jobs/next?wait=1", None, None, headers
    )
    assert status == 200 and body["job"]["id"] == ctx["job_id"], body


def _refusing_role(scenario):
    """A caller the route refuses with 403 (a role too small), or None for the open route."""
    if scenario.role == "agent":
        return "admin"
    if scenario.role is None:
        return None
    return "viewer"


async def test_every_audited_route_records_success_and_refusal(tmp_path):
    failures = []
    ctx = {}
    async with trio.open_nursery() as nursery:
        client = await _start(nursery, tmp_path)
        for scenario in SCENARIOS:
            try:
                if scenario.pattern.endswith("/result"):
                    await _hand_job_to_agent(client, ctx)
                failures += await _check_success(client, scenario, ctx)
                failures += await _check_refusal(client, scenario, ctx)
            except KeyError as e:
                failures.append(f"{scenario.method} {scenario.pattern}: no {e} from earlier")
        nursery.cancel_scope.cancel()
    assert not failures, "\n".join(failures)
    await client.store.close()


async def _check_success(client, scenario, ctx):
    trace = f"cov-{uuid.uuid4().hex[:12]}"
    status, body = await _call(client, scenario, ctx, scenario.role, trace)
    name = f"{scenario.method} {scenario.pattern}"
    if status not in scenario.ok:
        return [f"{name}: expected success, got {status} {body}"]
    _learn(ctx, scenario, body)

    expected = {
        "action": scenario.action,
        "resource_type": scenario.resource_type,
        "resource_id": _fill(scenario.resource_id, ctx),
        "trace_id": trace,
        "source": "127.0.0.1",
    }
    events = await _events(client.store, trace)
    if not any(all(e[k] == v for k, v in expected.items()) for e in events):
        return [f"{name}: no audit event like {expected}; got {events}"]
    return []


async def _check_refusal(client, scenario, ctx):
    trace = f"ref-{uuid.uuid4().hex[:12]}"
    role = _refusing_role(scenario)
    name = f"{scenario.method} {scenario.pattern}"
    if role is None:
        # The open registration route refuses a body that is not a registration.
        refused = dataclasses.replace(scenario, body={"protocol": 1})
        status, _ = await _call(client, refused, ctx, None, trace)
        wanted = {"result": "failed", "actor": "anonymous"}
    else:
        status, _ = await _call(client, scenario, ctx, role, trace)
        wanted = {"result": "denied", "actor": f"{role}-user"}
    if status not in (400, 403):
        return [f"{name}: expected a refusal, got {status}"]

    wanted.update(action="request.refused", trace_id=trace, source="127.0.0.1")
    events = await _events(client.store, trace)
    if not any(all(e[k] == v for k, v in wanted.items()) for e in events):
        return [f"{name}: refused call not audited like {wanted}; got {events}"]
    if events and events[0]["details"].get("route") != scenario.pattern:
        return [f"{name}: refusal names route {events[0]['details']}"]
    return []


def _suppressed():
    return REGISTRY.get_sample_value("cloudboot_audit_refusals_suppressed_total") or 0


async def test_refused_authentication_is_audited_within_a_bound(tmp_path):
    async with trio.open_nursery() as nursery:
        client = await _start(nursery, tmp_path)
        client.tokens["bad"] = "cbt_not-a-token"
        before = _suppressed()
        for n in range(REFUSALS_PER_MINUTE + 15):
            status, _, _ = await client.call(
                "POST", "/api/v1/users", {"name": f"x{n}", "role": "viewer"}, "bad"
            )
            assert status == 401
        nursery.cancel_scope.cancel()

    found, _ = await client.store.read(
        lambda conn: audit.search(conn, action="request.refused", limit=500)
    )
    assert len(found) == REFUSALS_PER_MINUTE
    assert {e["actor"] for e in found} == {"anonymous"}
    assert {e["details"]["code"] for e in found} == {"invalid_token"}
    assert _suppressed() - before == 15
    await client.store.close()


@pytest.mark.parametrize("audit_reads", [False, True])
async def test_plain_reads_are_counted_and_audited_when_set(tmp_path, audit_reads):
    def count(route, status="2xx"):
        sample = REGISTRY.get_sample_value(
            "cloudboot_api_requests_total", {"method": "GET", "route": route, "status": status}
        )
        return sample or 0

    async with trio.open_nursery() as nursery:
        client = await _start(nursery, tmp_path, audit_reads=audit_reads)
        before = (count("/api/v1/machines"), count("/api/v1/jobs/{job_id}", "4xx"))
        status, _, _ = await client.call("GET", "/api/v1/machines", role="viewer")
        assert status == 200
        status, _, _ = await client.call("GET", "/api/v1/jobs/job-missing", role="viewer")
        assert status == 404
        after = (count("/api/v1/machines"), count("/api/v1/jobs/{job_id}", "4xx"))
        nursery.cancel_scope.cancel()

    assert after[0] - before[0] == 1 and after[1] - before[1] == 1
    found, _ = await client.store.read(
        lambda conn: audit.search(conn, action="machine.read", limit=10)
    )
    assert len(found) == (1 if audit_reads else 0)
    if audit_reads:
        assert found[0]["actor"] == "viewer-user" and found[0]["source"] == "127.0.0.1"
    await client.store.close()
