"""The real `cloudboot serve --workers 2` on loopback high ports: two processes, one HTTPS port.

The data directory is seeded first (users with tokens, approved machines),
then the appliance runs as a user would start it. Clients open a new TLS
connection per request, so the kernel spreads them over both processes
(SO_REUSEPORT hashes each connection's addresses and ports).
"""

import concurrent.futures
import os
import signal
import subprocess
import sys
import time
import uuid

import psutil
import pytest
import requests
import trio

from appliance.store import Store
from tests.api_server import seed
from tests.conftest import REPO
from tests.syslog_support import free_port
from tests.test_cli import high_port_config

PROTOCOL = {"X-CloudBoot-Agent-Protocol": "1"}
START_SECONDS = 60


class Appliance:
    def __init__(self, folder, workers=2):
        self.folder = folder
        self.data = folder / "data"
        self.workers = workers
        self.log_path = folder / "serve.log"
        self.port = free_port()
        self.process = None

    def start(self):
        self.data.mkdir(mode=0o700)
        self.seeded = trio.run(_seed, self.data)
        config = high_port_config(self.folder, http_port=free_port(), https_port=self.port)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "appliance.cli", "serve", "--interface", "lo"]
                + ["--data-dir", str(self.data), "--config", str(config)]
                + ["--workers", str(self.workers)],
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_ready()
        # The appliance's own self-signed certificate, made for its address 127.0.0.1.
        self.certificate = str(self.data / "tls" / "appliance.crt")
        return self

    def _wait_ready(self):
        deadline = time.monotonic() + START_SECONDS
        while "appliance ready" not in self.log():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"appliance did not start:\n{self.log()[-3000:]}")
            time.sleep(0.1)

    def log(self):
        return self.log_path.read_text(errors="replace")

    def workers_alive(self):
        return psutil.Process(self.process.pid).children()

    def call(self, method, path, role="admin", body=None, headers=None, token=None):
        sent = {}
        if role is not None:
            sent["authorization"] = f"Bearer {token or self.seeded['tokens'][role]}"
        sent.update(headers or {})
        # No session: a new connection each time, so calls spread over the processes.
        return requests.request(
            method,
            f"https://127.0.0.1:{self.port}{path}",
            json=body,
            headers=sent,
            verify=self.certificate,
            timeout=90,
        )

    def metrics(self):
        values = {}
        for line in self.call("GET", "/metrics", role="viewer").text.splitlines():
            if line.startswith("cloudboot_https_"):
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        return values

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)


async def _seed(data):
    store = await Store.open(data / "cloudboot.db")
    try:
        return await seed(store, 3)
    finally:
        await store.close()


@pytest.fixture(scope="module")
def appliance(tmp_path_factory):
    running = Appliance(tmp_path_factory.mktemp("workers")).start()
    yield running
    running.stop()


def wait_for(check, what, seconds=60):
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not seen within {seconds} s: {what}")
        time.sleep(0.2)


def in_parallel(calls, threads=40):
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda call: call(), calls))


def test_requests_land_in_both_processes(appliance):
    readings = in_parallel([lambda: appliance.call("GET", "/api/v1/machines")] * 60)
    assert {reply.status_code for reply in readings} == {200}
    assert all(len(reply.json()["items"]) == 3 for reply in readings)

    def both_counted():
        counts = appliance.metrics()
        return (
            counts.get('cloudboot_https_requests_total{process="main"}', 0) > 0
            and counts.get('cloudboot_https_requests_total{process="worker-1"}', 0) > 0
        )

    # A worker reports its counters to the main process once a second.
    wait_for(both_counted, "HTTPS requests counted in the main process and in worker-1")


def test_concurrent_creations_through_both_processes_commit_exactly_once(appliance):
    machine = appliance.seeded["machines"][0]
    run = uuid.uuid4().hex[:8]

    def create(index):
        body = {"machine_id": machine, "kind": "wait", "params": {"seconds": 1}}
        headers = {"idempotency-key": f"{run}-{index}"}
        return lambda: appliance.call("POST", "/api/v1/jobs", "operator", body, headers)

    first = in_parallel([create(index) for index in range(200)])
    again = in_parallel([create(index) for index in range(200)])

    assert [reply.status_code for reply in first] == [201] * 200
    assert [reply.status_code for reply in again] == [200] * 200
    created = [reply.json()["id"] for reply in first]
    assert [reply.json()["id"] for reply in again] == created
    assert len(set(created)) == 200

    listed = appliance.call("GET", f"/api/v1/jobs?machine_id={machine}&limit=500").json()
    stored = {job["id"] for job in listed["items"]}
    assert set(created) <= stored
    assert len(stored) == 200
    assert "database is locked" not in appliance.log()
    assert "BusyError" not in appliance.log()


def register_agent(appliance, mac, headers=None):
    document = {"schema": "cloudboot.inventory/1", "nics": [{"name": "ens3", "mac": mac}]}
    body = {"protocol": 1, "boot_mac": mac, "pxe_guid": None, "inventory": document}
    sent = {**PROTOCOL, **(headers or {})}
    reply = appliance.call("POST", "/api/v1/agent/register", None, body, sent)
    assert reply.status_code == 200, reply.text
    return reply.json()


def approve(appliance, machine_id):
    approved = appliance.call("POST", f"/api/v1/machines/{machine_id}/approve")
    assert approved.status_code == 200, approved.text


def test_a_job_created_anywhere_wakes_an_agent_long_polling_anywhere(appliance):
    agent = register_agent(appliance, "52:54:00:aa:00:01")
    approve(appliance, agent["machine_id"])
    body = {"machine_id": agent["machine_id"], "kind": "wait", "params": {"seconds": 1}}

    # Each round is a new poll connection and a new creation connection, so over
    # the rounds both land in the main process and in the worker in every pairing.
    for _ in range(6):
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            polling = pool.submit(
                appliance.call,
                "GET",
                "/api/v1/agent/jobs/next?wait=25",
                headers=PROTOCOL,
                token=agent["token"],
            )
            # A head start, so the job is created while the poll waits (as in
            # tests/test_agent_api_flow.py); the poll must still be open then.
            time.sleep(1.0)
            assert not polling.done()
            created = appliance.call("POST", "/api/v1/jobs", "operator", body=body)
            answer = polling.result()

        assert created.status_code == 201, created.text
        assert answer.status_code == 200, answer.text
        assert answer.json()["job"]["id"] == created.json()["id"]


def test_a_forged_peer_header_from_the_network_is_ignored(appliance):
    forged = {"X-CloudBoot-Peer": "203.0.113.9 4444"}
    traces = [f"forged-{uuid.uuid4().hex[:12]}" for _ in range(16)]

    def read_audit(trace):
        headers = {**forged, "X-Request-ID": trace}
        return lambda: appliance.call("GET", "/api/v1/audit/events?limit=1", headers=headers)

    replies = in_parallel([read_audit(trace) for trace in traces])
    assert {reply.status_code for reply in replies} == {200}

    events = appliance.call("GET", "/api/v1/audit/events?action=audit.read&limit=200").json()
    by_trace = {event["trace_id"]: event for event in events["items"]}
    # The trace id survived the hop to the main process, and the source is the real peer.
    assert [by_trace[trace]["source"] for trace in traces] == ["127.0.0.1"] * len(traces)

    agent = register_agent(appliance, "52:54:00:aa:00:02", forged)
    machine = appliance.call("GET", f"/api/v1/machines/{agent['machine_id']}").json()
    assert machine["source_address"] == "127.0.0.1"


def test_refused_reads_are_audited_whichever_process_took_them(appliance):
    # Eight new connections: the chance that none lands in the worker is 1 in 256.
    traces = [f"refused-{uuid.uuid4().hex[:12]}" for _ in range(8)]

    def refused(trace):
        headers = {"X-Request-ID": trace}
        return lambda: appliance.call("GET", "/api/v1/machines", token="wrong", headers=headers)

    replies = in_parallel([refused(trace) for trace in traces])
    assert {reply.status_code for reply in replies} == {401}
    assert {reply.headers["x-request-id"] for reply in replies} == set(traces)

    query = "/api/v1/audit/events?action=request.refused&limit=200"
    events = appliance.call("GET", query).json()["items"]
    by_trace = {event["trace_id"]: event for event in events}
    assert sorted(by_trace.keys() & set(traces)) == sorted(traces)
    assert {by_trace[trace]["source"] for trace in traces} == {"127.0.0.1"}
    assert {by_trace[trace]["result"] for trace in traces} == {"denied"}
    assert "could not audit" not in appliance.log()


def api_reads_counted(appliance):
    line_start = 'cloudboot_api_requests_total{method="GET",route="/api/v1/machines",status="2xx"}'
    for line in appliance.call("GET", "/metrics", role="viewer").text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_reads_answered_by_a_worker_are_counted_on_the_main_metrics(appliance):
    before = api_reads_counted(appliance)

    readings = in_parallel([lambda: appliance.call("GET", "/api/v1/machines")] * 30)
    assert {reply.status_code for reply in readings} == {200}

    # Workers report once a second; every one of the 30 must show up, whoever answered it.
    wait_for(lambda: api_reads_counted(appliance) == before + 30, "30 more machine reads counted")


def test_a_worker_killed_with_sigkill_is_started_again(appliance):
    (worker,) = appliance.workers_alive()
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=30)

    def replaced():
        alive = appliance.workers_alive()
        return len(alive) == 1 and alive[0].pid != worker.pid

    wait_for(replaced, "a new worker process")
    (new,) = appliance.workers_alive()
    wait_for(lambda: f"HTTPS worker 1 started (pid {new.pid})" in appliance.log(), "listening")
    replies = in_parallel([lambda: appliance.call("GET", "/api/v1/machines")] * 30)
    assert {reply.status_code for reply in replies} == {200}
    assert "HTTPS worker 1 exited with status -9" in appliance.log()
    counts = appliance.metrics()
    assert counts['cloudboot_https_worker_restarts_total{process="worker-1"}'] == 1.0


def test_sigterm_stops_every_process(tmp_path):
    running = Appliance(tmp_path, workers=3).start()
    children = running.workers_alive()
    assert len(children) == 2

    running.stop()
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert alive == []
    assert running.process.returncode == 0
    assert not (running.data / "api-forward.sock").exists()


def test_workers_end_when_the_main_process_is_killed(tmp_path):
    running = Appliance(tmp_path).start()
    children = running.workers_alive()
    assert len(children) == 1

    os.kill(running.process.pid, signal.SIGKILL)
    running.process.wait(timeout=30)
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert alive == []
    assert "main process gone" in running.log()


def test_a_worker_count_out_of_range_stops_the_start_with_one_sentence(tmp_path):
    config = high_port_config(tmp_path, http_port=free_port(), https_port=free_port())
    result = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "serve", "--interface", "lo"]
        + ["--data-dir", str(tmp_path / "d"), "--config", str(config), "--workers", "0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "http.workers must be 1-64, got 0" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_forwarding_socket_is_private(appliance):
    mode = (appliance.data / "api-forward.sock").stat().st_mode & 0o777
    assert mode == 0o600
