"""Load generator for the REST API, run by hand (never by the test suite).

    .venv/bin/python -m bench.bench_api create  --connections 500  --seconds 20
    .venv/bin/python -m bench.bench_api read    --connections 1000 --seconds 20
    .venv/bin/python -m bench.bench_api read    --connections 1000 --rate 2000 --seconds 20
    .venv/bin/python -m bench.bench_api ceiling --connections 1000 --seconds 20
    .venv/bin/python -m bench.bench_api crash   --rounds 10 --creations 500
    .venv/bin/python -m bench.bench_api read    --connections 1000 --workers 2
    .venv/bin/python -m bench.bench_api table   --seconds 20

--workers N runs the real `cloudboot serve --workers N` (N processes on one
HTTPS port, appliance/workers.py) instead of the single-process test server,
and N ceiling processes sharing their port with SO_REUSEPORT, so the two are
compared on equal terms. `table` runs ceiling and read at 1,000 connections
and create at 500, for workers=1 and workers=2, one after the other in one
run, and prints the load average before and after (the machine is shared).

create:  POST /api/v1/jobs (a new Idempotency-Key each) over keep-alive TLS connections.
read:    GET /api/v1/machines?limit=50.
ceiling: the same client against a bare trio + h11 TLS server answering a
         constant JSON document: what this machine and this client can do at
         most, so the API figures can be read against it.
crash:   SIGKILL the appliance in the middle of concurrent creations, restart,
         check every acknowledged job is present once (tests/test_jobs_crash.py
         with more rounds and connections).

Without --rate the load is closed-loop: each connection sends its next
request when the answer to the last one arrives; wrk (Debian package wrk)
drives it when installed, because a Python client on the same two cores is
slower than the server it measures (--client python forces ours). With --rate R it is
open-loop: requests are due at R per second whatever the server does, and a
latency counts from when the request was due, so queueing is not hidden
(coordinated omission). Servers run in their own processes on 127.0.0.1.
Everything stays on loopback and ends after --seconds.
"""

import argparse
import functools
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h11
import trio

REPO = Path(__file__).resolve().parent.parent


# -- client -----------------------------------------------------------------------


class Connection:
    """One keep-alive HTTP/1.1 connection (TLS when a context is given)."""

    def __init__(self, stream):
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)

    @classmethod
    async def open(cls, port, ssl_context):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        if ssl_context is not None:
            stream = trio.SSLStream(stream, ssl_context, server_hostname="localhost")
            await stream.do_handshake()
        return cls(stream)

    async def request(self, method, target, headers, body=b""):
        headers = [("host", "localhost"), ("content-length", str(len(body))), *headers]
        data = self.h11.send(h11.Request(method=method, target=target, headers=headers))
        data += self.h11.send(h11.Data(data=body)) if body else b""
        data += self.h11.send(h11.EndOfMessage())
        await self.stream.send_all(data)

        status = None
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                chunk = await self.stream.receive_some(65536)
                if not chunk:
                    raise ConnectionError("server closed the connection")
                self.h11.receive_data(chunk)
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.EndOfMessage):
                self.h11.start_next_cycle()
                return status


class Results:
    def __init__(self):
        self.latencies = []
        self.statuses = {}
        self.errors = 0

    def add(self, seconds, status):
        self.latencies.append(seconds)
        self.statuses[status] = self.statuses.get(status, 0) + 1

    def summary(self, seconds):
        ordered = sorted(self.latencies)

        def percentile(p):
            return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 1)

        return {
            "requests": len(ordered),
            "per_second": round(len(ordered) / seconds, 1),
            "p50_ms": percentile(0.50) if ordered else None,
            "p99_ms": percentile(0.99) if ordered else None,
            "max_ms": round(ordered[-1] * 1000, 1) if ordered else None,
            "statuses": self.statuses,
            "errors": self.errors,
        }


async def open_all(count, port, ssl_context):
    connections = []
    limit = trio.CapacityLimiter(100)

    async def one():
        async with limit:
            connections.append(await Connection.open(port, ssl_context))

    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(one)
    return connections


async def closed_loop(connections, make_request, seconds, results):
    deadline = trio.current_time() + seconds

    async def run(connection):
        while trio.current_time() < deadline:
            start = trio.current_time()
            try:
                status = await connection.request(*make_request())
            except (ConnectionError, trio.BrokenResourceError, h11.ProtocolError):
                results.errors += 1
                return
            results.add(trio.current_time() - start, status)

    async with trio.open_nursery() as nursery:
        for connection in connections:
            nursery.start_soon(run, connection)


async def open_loop(connections, make_request, seconds, rate, results):
    idle_send, idle_receive = trio.open_memory_channel(len(connections))
    for connection in connections:
        idle_send.send_nowait(connection)

    async def one(due):
        connection = await idle_receive.receive()
        try:
            status = await connection.request(*make_request())
        except (ConnectionError, trio.BrokenResourceError, h11.ProtocolError):
            results.errors += 1
            return
        # From when the request was due, not when a connection became free.
        results.add(trio.current_time() - due, status)
        idle_send.send_nowait(connection)

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for index in range(int(rate * seconds)):
            due = start + index / rate
            await trio.sleep_until(due)
            nursery.start_soon(one, due)


def client_context():
    # Loopback benchmark against a self-signed certificate made for this run.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


# -- servers ----------------------------------------------------------------------


def start_api_server(data_dir, machines, workers=0):
    sys.path.insert(0, str(REPO))
    if workers:
        return ServeProcess(data_dir, machines, workers).start()

    from tests.api_process import ApiProcess

    return ApiProcess(data_dir, machines=machines, tls=True).start()


class ServeProcess:
    """`cloudboot serve --interface lo --workers N` on high loopback ports, over a seeded store.

    Offers what ApiProcess offers the workloads: ready["port"], ready["machines"],
    token(role) and kill().
    """

    def __init__(self, folder, machines, workers):
        self.folder = Path(folder)
        self.data = self.folder / "data"
        self.machines = machines
        self.workers = workers
        self.process = None
        self.ready = None

    def start(self, timeout=120):
        from tests.syslog_support import free_port

        self.data.mkdir(mode=0o700)
        seeded = trio.run(_seed_store, self.data, self.machines)
        port = free_port()
        config = self.folder / "serve.toml"
        config.write_text(
            '[dhcp]\nenabled = false\n[tftp]\nenabled = false\n[log]\nlevel = "warning"\n'
            f"[server]\nhttp_port = {free_port()}\nhttps_port = {port}\n"
        )
        self.log = self.folder / "serve.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "appliance.cli", "serve", "--interface", "lo"]
                + ["--data-dir", str(self.data), "--config", str(config)]
                + ["--workers", str(self.workers), "--log-level", "info"],
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while "appliance ready" not in self.log.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"serve did not start: {self.log.read_text()[-3000:]}")
            time.sleep(0.1)
        self.ready = {"port": port, **seeded}
        return self

    def token(self, role="admin"):
        return self.ready["tokens"][role]

    def kill(self):
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)
        locked = self.log.read_text(errors="replace").count("database is locked")
        if locked:
            print(f"serve log: 'database is locked' {locked} times", file=sys.stderr)


async def _seed_store(data, machines):
    from appliance.store import Store
    from tests.api_server import seed

    store = await Store.open(Path(data) / "cloudboot.db")
    try:
        return await seed(store, machines)
    finally:
        await store.close()


CEILING_BODY = json.dumps({"items": [], "next_cursor": None}).encode()


async def ceiling_server(port_file, port=0):
    """A bare trio + h11 TLS server answering every request with a constant JSON body.

    With a port given, it listens there with SO_REUSEPORT beside its siblings.
    """
    from appliance.http import ensure_self_signed, make_ssl_context

    folder = Path(port_file).parent
    context = make_ssl_context(*ensure_self_signed(folder, ["localhost"], ["127.0.0.1"]))

    async def handle(stream):
        stream = trio.SSLStream(stream, context, server_side=True)
        connection = h11.Connection(h11.SERVER)
        try:
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    connection.receive_data(data)
                elif isinstance(event, h11.EndOfMessage):
                    headers = [
                        ("content-type", "application/json"),
                        ("content-length", str(len(CEILING_BODY))),
                    ]
                    reply = connection.send(h11.Response(status_code=200, headers=headers))
                    reply += connection.send(h11.Data(data=CEILING_BODY))
                    reply += connection.send(h11.EndOfMessage())
                    await stream.send_all(reply)
                    connection.start_next_cycle()
        except (trio.BrokenResourceError, h11.ProtocolError, ssl.SSLError):
            return

    if port:
        from appliance.http import open_listeners

        listeners = await open_listeners("127.0.0.1", port, reuse_port=True)
    else:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    Path(port_file).write_text(str(listeners[0].socket.getsockname()[1]))
    await trio.serve_listeners(handle, listeners)


def start_ceiling(folder, processes=1):
    """`processes` ceiling servers on one port (SO_REUSEPORT when more than one)."""
    from tests.syslog_support import free_port

    port = free_port() if processes > 1 else 0
    started = []
    for index in range(processes):
        port_file = Path(folder) / f"ceiling-{index}.port"
        command = [sys.executable, "-m", "bench.bench_api", "ceiling-server", str(port_file)]
        started.append(subprocess.Popen([*command, "--port", str(port)], cwd=REPO))
        while not port_file.exists():
            time.sleep(0.05)
        port = int(port_file.read_text())
    return started, port


# -- workloads --------------------------------------------------------------------


def create_request(server):
    token = server.token("operator")
    machines = server.ready["machines"]
    counter = iter(range(10**9))

    def make():
        index = next(counter)
        body = {"machine_id": machines[index % len(machines)], "kind": "wait", "params": {}}
        headers = [
            ("authorization", f"Bearer {token}"),
            ("content-type", "application/json"),
            ("idempotency-key", f"bench-{os.getpid()}-{index}"),
        ]
        return "POST", "/api/v1/jobs", headers, json.dumps(body).encode()

    return make


def read_request(server):
    headers = [("authorization", f"Bearer {server.token('viewer')}")]
    return lambda: ("GET", "/api/v1/machines?limit=50", headers, b"")


async def measure(port, make_request, arguments):
    connections = await open_all(arguments.connections, port, client_context())
    results = Results()
    started = trio.current_time()
    if arguments.rate:
        await open_loop(connections, make_request, arguments.seconds, arguments.rate, results)
    else:
        await closed_loop(connections, make_request, arguments.seconds, results)
    summary = results.summary(arguments.seconds)
    if arguments.rate:
        # Open loop: the last answer may come long after the last request was due, so
        # the rate served is the answers over the time until the last one, not the rate asked.
        summary["offered_per_second"] = arguments.rate
        summary["per_second"] = round(summary["requests"] / (trio.current_time() - started), 1)
    return summary


WRK_SCRIPT = """
wrk.method = os.getenv("WRK_METHOD") or "GET"
local counter = 0
local threads = 0
local body = nil
function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end
function init(args)
  body = args[1]
end
request = function()
  counter = counter + 1
  if wrk.method == "POST" then
    wrk.headers["Idempotency-Key"] = "bench-" .. id .. "-" .. counter .. "-" .. os.time()
    return wrk.format(nil, nil, nil, body)
  end
  return wrk.format()
end
"""


def run_wrk(port, make_request, arguments, folder):
    """Closed-loop load with wrk; returns the summary in our own shape."""
    method, target, headers, body = make_request()
    script = Path(folder) / "bench.lua"
    script.write_text(WRK_SCRIPT)
    command = ["wrk", "--latency", "-t2", f"-c{arguments.connections}",
               f"-d{int(arguments.seconds)}s", "-s", str(script), "--timeout", "10s",
               "-H", "Content-Type: application/json"]  # fmt: skip
    for name, value in headers:
        if name not in ("content-type", "idempotency-key"):
            command += ["-H", f"{name}: {value}"]
    output = subprocess.run(
        [*command, f"https://127.0.0.1:{port}{target}", "--", body.decode() or "-"],
        capture_output=True,
        text=True,
        env={**os.environ, "WRK_METHOD": method},
    ).stdout
    return parse_wrk(output, arguments.seconds)


def parse_wrk(output, seconds):
    summary = {"requests": None, "per_second": None, "statuses": {}, "errors": 0}
    for line in output.splitlines():
        words = line.split()
        if line.strip().startswith(("50%", "99%")) and len(words) == 2:
            summary[f"p{words[0][:-1]}_ms"] = _milliseconds(words[1])
        elif "requests in" in line:
            summary["requests"] = int(words[0])
        elif line.startswith("Requests/sec:"):
            summary["per_second"] = float(words[1])
        elif line.startswith("Non-2xx or 3xx responses:"):
            summary["statuses"]["non-2xx"] = int(words[-1])
        elif line.strip().startswith("Socket errors:"):
            summary["errors"] = sum(int(w.strip(",")) for w in words[3::2])
    summary["raw"] = output
    return summary


def _milliseconds(text):
    for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return round(float(text[: -len(unit)]) * factor, 1)
    return None


def run_load(arguments):
    with tempfile.TemporaryDirectory(prefix="cloudboot-bench-") as folder:
        if arguments.workload == "ceiling":
            processes, port = start_ceiling(folder, max(1, arguments.workers))
            make = lambda: ("GET", "/", [], b"")  # noqa: E731 (one-line request factory)
            stop = functools.partial(_stop_all, processes)
        else:
            server = start_api_server(folder, arguments.machines, arguments.workers)
            port = server.ready["port"]
            make = (create_request if arguments.workload == "create" else read_request)(server)
            stop = server.kill
        try:
            if use_wrk(arguments):
                summary = run_wrk(port, make, arguments, folder)
            else:
                summary = trio.run(measure, port, make, arguments)
        finally:
            stop()

    raw = summary.pop("raw", "")
    if arguments.verbose and raw:
        print(raw)
    mode = f"open-loop {arguments.rate}/s" if arguments.rate else "closed-loop"
    summary["client"] = "wrk" if use_wrk(arguments) else "python"
    summary["workers"] = arguments.workers or 1
    print(json.dumps({"workload": arguments.workload, "mode": mode,
                      "connections": arguments.connections, **summary}))  # fmt: skip
    return summary


def _stop_all(processes):
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        process.wait(timeout=30)


# The acceptance run: (workload, connections) for each worker count, in this order.
TABLE_RUNS = (("ceiling", 1000), ("read", 1000), ("create", 500))


def run_table(arguments):
    """Every TABLE_RUNS entry for workers=1 and workers=2, then a Markdown table."""
    before = Path("/proc/loadavg").read_text().split()[:3]
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    rows = []
    for workers in (1, 2):
        for workload, connections in TABLE_RUNS:
            run = argparse.Namespace(**vars(arguments))
            run.workload, run.connections, run.workers = workload, connections, workers
            rows.append((workers, workload, connections, run_load(run)))
    after = Path("/proc/loadavg").read_text().split()[:3]
    ended = time.strftime("%H:%M UTC", time.gmtime())

    print(f"\n{started} to {ended}; load average before {' '.join(before)}, "
          f"after {' '.join(after)}\n")  # fmt: skip
    print("| workers | workload | connections | requests/s | p50 ms | p99 ms | non-2xx | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for workers, workload, connections, summary in rows:
        statuses = summary.get("statuses", {})
        non_2xx = statuses.get("non-2xx", 0) + sum(
            count for status, count in statuses.items() if str(status).isdigit() and status >= 300
        )
        print(f"| {workers} | {workload} | {connections} | {summary.get('per_second')} | "
              f"{summary.get('p50_ms')} | {summary.get('p99_ms')} | {non_2xx} | "
              f"{summary.get('errors')} |")  # fmt: skip


def use_wrk(arguments):
    return not arguments.rate and arguments.client == "wrk" and shutil.which("wrk") is not None


def run_crash(arguments):
    sys.path.insert(0, str(REPO))
    from tests.test_jobs_crash import crash_rounds

    with tempfile.TemporaryDirectory(prefix="cloudboot-crash-") as folder:
        started = time.monotonic()
        acknowledged, unanswered = crash_rounds(
            Path(folder), arguments.rounds, arguments.creations
        )
        print(
            json.dumps(
                {
                    "rounds": arguments.rounds,
                    "creations_per_round": arguments.creations,
                    "jobs_present_once": len(acknowledged),
                    "cut_off_by_sigkill": len(unanswered),
                    "seconds": round(time.monotonic() - started, 1),
                }
            )
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "workload", choices=["create", "read", "ceiling", "crash", "table", "ceiling-server"]
    )
    parser.add_argument("port_file", nargs="?")
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=0.0, help="open-loop requests per second")
    parser.add_argument("--machines", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--creations", type=int, default=500)
    parser.add_argument("--client", choices=["wrk", "python"], default="wrk")
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="run the real `cloudboot serve --workers N` (and N ceiling processes)",
    )
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--verbose", action="store_true")
    arguments = parser.parse_args()

    if arguments.workload == "ceiling-server":
        trio.run(ceiling_server, arguments.port_file, arguments.port)
    elif arguments.workload == "crash":
        run_crash(arguments)
    elif arguments.workload == "table":
        run_table(arguments)
    else:
        run_load(arguments)


if __name__ == "__main__":
    main()
