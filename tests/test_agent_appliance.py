"""The real agent against the real appliance API over real TLS on 127.0.0.1.

The appliance side is appliance.api.agent on appliance.http.serve with its
own self-signed certificate; the agent side is bootos.agent's client and
runtime, run in a worker thread, with only time and commands faked. This is
the path a booted machine takes after DHCP: register, wait for approval,
receive jobs, report results.
"""

import trio

from appliance.core import jobs, machines
from appliance.http import certificate_fingerprint, ensure_self_signed, make_ssl_context
from bootos.agent.client import AgentClient, PinMismatch
from bootos.agent.runtime import EXIT_STOPPED, Runtime
from tests.agent_api_support import start_api
from tests.http_support import start_server
from tests.identity_support import inventory

MAC = "52:54:00:31:00:01"


class FakeHost:
    def __init__(self, net_dir):
        self.commands = []
        self.lines = []
        self.net_dir = net_dir
        (net_dir / "eth0").mkdir(parents=True)
        (net_dir / "eth0" / "address").write_text(MAC + "\n")

    def run(self, argv, timeout=None):
        self.commands.append(argv)
        return 0, ""

    def sleep(self, seconds):
        pass


async def start_tls_api(nursery, tmp_path):
    """The agent routes of a fresh appliance, served over TLS; returns (api, url, pin)."""
    # start_api makes the store and App (and a plain listener this test leaves unused).
    api = await start_api(nursery, tmp_path)
    cert, key = ensure_self_signed(tmp_path / "data", ["cloudboot"], ["127.0.0.1"])
    router = _router_of(api)
    port = await start_server(nursery, router, ssl_context=make_ssl_context(cert, key))
    return api, f"https://127.0.0.1:{port}", certificate_fingerprint(cert)


def _router_of(api):
    from appliance.api import agent as agent_api
    from appliance.api import auth as auth_api
    from appliance.http import Router

    router = Router()
    agent_api.register_routes(router, api.app)
    auth_api.register_routes(router, api.app)
    return router


async def test_agent_registers_waits_for_approval_and_runs_jobs(nursery, tmp_path):
    api, url, pin = await start_tls_api(nursery, tmp_path)
    host = FakeHost(tmp_path / "net")
    document = inventory(
        uuid="4c4c4544-0051-3410-8052-b4c04f4e3132", system_serial="SN-TLS-1", nics=[MAC]
    )
    params = {"url": url, "fp": pin, "mac": MAC, "proto": 1}
    runtime = Runtime(
        params,
        AgentClient(url, pin, timeout=10),
        inventory=lambda: document,
        run=host.run,
        sleep=host.sleep,
        console=host.lines.append,
        net_dir=host.net_dir,
        poll_wait=1,
    )

    async with trio.open_nursery() as session:
        outcome = {}

        async def agent():
            outcome["exit"] = await trio.to_thread.run_sync(runtime.run)

        session.start_soon(agent)
        machine_id = await _registered_machine(api, host)
        inventory_job, _ = await jobs.create_job(
            api.store, "alice", {"machine_id": machine_id, "kind": "inventory"}
        )
        reboot_job, _ = await jobs.create_job(
            api.store, "alice", {"machine_id": machine_id, "kind": "reboot"}
        )
        await machines.approve(api.store, machine_id, "olga")

    assert outcome["exit"] == EXIT_STOPPED
    assert host.commands[-1] == ["reboot", "-f"]
    assert (await jobs.get_job(api.store, inventory_job["id"]))["state"] == "succeeded"
    assert (await jobs.get_job(api.store, reboot_job["id"]))["state"] == "succeeded"
    assert any("waiting for approval" in line for line in host.lines)


async def _registered_machine(api, host):
    with trio.fail_after(30):
        while True:
            for line in host.lines:
                if line.startswith("registered with "):
                    return line.split(" as machine ")[1].split()[0]
            await trio.sleep(0.1)


async def test_agent_with_a_wrong_pin_sends_nothing_to_the_appliance(nursery, tmp_path):
    api, url, pin = await start_tls_api(nursery, tmp_path)
    client = AgentClient(url, "sha256:" + "0" * 64, timeout=10)

    def register():
        try:
            client.register(MAC, None, inventory(system_serial="SN-TLS-2", nics=[MAC]))
        except PinMismatch as e:
            return e
        return None

    refused = await trio.to_thread.run_sync(register)

    assert isinstance(refused, PinMismatch)
    assert refused.presented == pin
    count = await api.store.read(
        lambda conn: conn.execute("SELECT count(*) FROM machines").fetchone()[0]
    )
    assert count == 0


async def test_a_cancelled_job_stops_at_the_next_heartbeat(nursery, tmp_path):
    api, url, pin = await start_tls_api(nursery, tmp_path)
    host = FakeHost(tmp_path / "net")
    document = inventory(system_serial="SN-TLS-3", nics=[MAC])
    params = {"url": url, "fp": pin, "mac": MAC, "proto": 1}
    sleeps = []
    wait_job = {}

    def sleep(seconds):
        # The operator cancels while the agent sleeps through its first step.
        sleeps.append(seconds)
        if seconds == 30 and "id" in wait_job:
            trio.from_thread.run(jobs.cancel_job, api.store, "alice", wait_job["id"])
            trio.from_thread.run(
                jobs.create_job,
                api.store,
                "alice",
                {"machine_id": wait_job["machine"], "kind": "reboot"},
            )

    runtime = Runtime(
        params,
        AgentClient(url, pin, timeout=10),
        inventory=lambda: document,
        run=host.run,
        sleep=sleep,
        console=host.lines.append,
        net_dir=host.net_dir,
        poll_wait=1,
    )

    async with trio.open_nursery() as session:
        outcome = {}

        async def agent():
            outcome["exit"] = await trio.to_thread.run_sync(runtime.run)

        session.start_soon(agent)
        machine_id = await _registered_machine(api, host)
        job, _ = await jobs.create_job(
            api.store,
            "alice",
            {"machine_id": machine_id, "kind": "wait", "params": {"seconds": 600}},
        )
        wait_job.update(id=job["id"], machine=machine_id)
        await machines.approve(api.store, machine_id, "olga")

    assert outcome["exit"] == EXIT_STOPPED
    assert (await jobs.get_job(api.store, job["id"]))["state"] == "cancelled"
    assert sleeps.count(30) == 1, sleeps
    assert any(f"job {job['id']} stopped by the appliance" in line for line in host.lines)
    lines, _ = await jobs.read_job_log(api.store, job["id"])
    assert any("wait started" in str(line) for line in lines), lines
