"""Several processes serving the one HTTPS port (settings.http.workers), and their supervision.

With http.workers = N > 1 the main process serves HTTPS with SO_REUSEPORT
and starts N-1 worker processes that open the same port; the kernel spreads
new connections over all of them. A worker opens the store READ-ONLY (no
writer, no migrations) and answers the plain reads in LOCAL_READS itself.
Every other request (each write, the agent's long poll, which claims a job,
and each read that is audited or needs the main process's memory) goes whole
over the Unix socket FORWARD_SOCKET in the data directory to the main process,
which runs the same router and the one store writer (appliance/http/forward.py).
So every write still goes through one writer, and a job created through any
worker wakes an agent long-polling through any other.

Supervision: a worker that exits is logged and started again; a worker sees
its standard input close when the main process ends, however it ends, and
exits; SIGTERM to the main process stops all. Each worker reports its request
counters over its standard output once a second; the main process shows them
on /metrics labelled by process. UDP services (67, 4011, 69) and every
background task stay in the main process. A worker must never write to the
store, hold the master key, or believe a peer address from the network.
"""

import dataclasses
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import trio

from appliance import log
from appliance.serve import StartupError

logger = logging.getLogger(__name__)

FORWARD_SOCKET = "api-forward.sock"
# Not `-m appliance.workers`: that would name this module's logger "__main__" in the log.
_WORKER_COMMAND = "import sys; from appliance.workers import main; main(sys.argv)"
REPORT_SECONDS = 1.0
MAX_WORKERS = 64
STOP_SECONDS = 10.0

# Reads that touch nothing but the store's read side and the request's token.
# /readyz writes a probe, /metrics and /api/v1/keys/status read the main
# process's memory, /api/v1/audit/* audit themselves, and the agent's
# jobs/next claims a job: all of those, and anything added later, go to the
# main process, because forwarding is the default and a local read the exception.
LOCAL_READS = frozenset(
    {
        "/healthz",
        "/api/v1/openapi.json",
        "/api/v1/auth/whoami",
        "/api/v1/users",
        "/api/v1/tokens",
        "/api/v1/enrolment/expected",
        "/api/v1/machines",
        "/api/v1/machines/{machine_id}",
        "/api/v1/machines/{machine_id}/conflicts",
        "/api/v1/machines/{machine_id}/inventory",
        "/api/v1/machines/{machine_id}/inventory/history",
        "/api/v1/events",
        "/api/v1/jobs",
        "/api/v1/jobs/{job_id}",
        "/api/v1/jobs/{job_id}/log",
    }
)
# With api.audit_reads on, reading machines and jobs writes an audit record.
AUDITED_WHEN_ASKED = frozenset(
    pattern for pattern in LOCAL_READS if pattern.startswith(("/api/v1/machines", "/api/v1/jobs"))
)


class WorkerError(StartupError):
    """The worker processes cannot start; the message says why."""


def local_reads(settings):
    if settings.api.audit_reads:
        return LOCAL_READS - AUDITED_WHEN_ASKED
    return LOCAL_READS


# -- main process ------------------------------------------------------------------


class WorkerPool:
    """The main process's side: the forwarding socket, the worker processes, /metrics.

    serve.py makes one, passes `reuse_port` and `main_stats` to its HTTPS
    server, and runs `run(api_router)` in its nursery once HTTPS listens.
    """

    def __init__(self, settings):
        from appliance.http import HttpStats

        count = settings.http.workers
        if not isinstance(count, int) or not 1 <= count <= MAX_WORKERS:
            raise WorkerError(f"http.workers must be 1-{MAX_WORKERS}, got {count!r}")
        self.settings = settings
        self.count = count
        self.main_stats = HttpStats()
        self.reports = {}
        self.restarts = dict.fromkeys(range(1, count), 0)

    @property
    def reuse_port(self):
        return self.count > 1

    async def run(self, api_router, certificate, address, *, task_status=trio.TASK_STATUS_IGNORED):
        """Serve the forwarding socket, start the workers; started() once all listen."""
        collector = _register_collector(self)
        try:
            if self.count == 1:
                task_status.started()
                await trio.sleep_forever()
            async with trio.open_nursery() as nursery:
                socket_path = await nursery.start(self._serve_forwarded, api_router)
                message = self._start_message(socket_path, certificate, address)
                for index in range(1, self.count):
                    await nursery.start(self._supervise, index, message)
                logger.info("HTTPS served by this process and %d workers", self.count - 1)
                task_status.started()
        finally:
            _unregister_collector(collector)

    async def _serve_forwarded(self, api_router, *, task_status):
        from appliance.http import serve_listeners
        from appliance.http.forward import ForwardedRouter

        path = Path(self.settings.server.data_dir) / FORWARD_SOCKET
        listener = await _unix_listener(path)
        try:
            await serve_listeners(
                ForwardedRouter(api_router),
                [listener],
                self.settings.http,
                task_status=_StartedWith(task_status, path),
            )
        finally:
            path.unlink(missing_ok=True)

    def _start_message(self, socket_path, certificate, address):
        document = {
            "settings": dataclasses.asdict(self.settings),
            "socket": str(socket_path),
            "certificate": [str(part) for part in certificate],
            "address": address,
        }
        return json.dumps(document).encode() + b"\n"

    async def _supervise(self, index, message, *, task_status):
        delay = 0.5
        first = True
        while True:
            started = trio.current_time()
            on_ready = task_status.started if first else _ignore
            with log.context(worker=index):
                code, was_ready = await self._run_once(index, message, on_ready)
            if not was_ready and first:
                raise WorkerError(
                    f"HTTPS worker {index} exited during start (status {code}); "
                    "its log lines above say why"
                )
            first = False

            self.restarts[index] += 1
            self.reports.pop(index, None)
            # A worker that keeps dying at once is restarted ever more slowly (to 30 s).
            delay = 0.5 if trio.current_time() - started > 10 else min(30.0, delay * 2)
            logger.warning(
                "HTTPS worker %d exited with status %s; starting a new one in %.1f s",
                index,
                code,
                delay,
            )
            await trio.sleep(delay)

    async def _run_once(self, index, message, on_ready):
        process = await trio.lowlevel.open_process(
            [sys.executable, "-c", _WORKER_COMMAND, str(index)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=_child_env(),
        )
        ready = False
        try:
            await process.stdin.send_all(message)
            async for line in _lines(process.stdout):
                report = _parse_report(line)
                if report is None:
                    continue
                if not ready:
                    ready = True
                    logger.info("HTTPS worker %d started (pid %d)", index, process.pid)
                    on_ready()
                _merge_api_requests(self.reports.get(index), report)
                self.reports[index] = report
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            with trio.CancelScope(shield=True):
                code = await _stop(process)
        return code, ready

    def snapshots(self):
        """[(process label, counters)] for /metrics: the main process, then each worker."""
        main = vars(self.main_stats)
        rows = [("main", {**main, "forwarded": 0})]
        for index in sorted(self.reports):
            rows.append((f"worker-{index}", self.reports[index]))
        return rows


class _StartedWith:
    """A task_status whose started() reports `value` instead of the listeners."""

    def __init__(self, task_status, value):
        self.task_status = task_status
        self.value = value

    def started(self, _listeners=None):
        self.task_status.started(self.value)


def _ignore():
    pass


async def _unix_listener(path):
    # A socket left by a main process that was killed would make bind() fail.
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # Created 0600 from the start (umask), not chmod-ed after: no moment when
    # another local user could connect and name any peer address it likes. The
    # umask is the whole process's, so it is set and restored with no await between.
    previous = os.umask(0o177)
    try:
        sock.bind(str(path))
        sock.listen(socket.SOMAXCONN)
    except BaseException:
        sock.close()
        raise
    finally:
        os.umask(previous)
    return trio.SocketListener(trio.socket.from_stdlib_socket(sock))


async def _lines(stream, limit=65536):
    buffer = b""
    while True:
        data = await stream.receive_some(65536)
        if not data:
            return
        buffer += data
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            yield line
        if len(buffer) > limit:
            buffer = b""


def _parse_report(line):
    try:
        report = json.loads(line)
    except ValueError:
        return None
    return report if isinstance(report, dict) else None


async def _stop(process):
    """Close the worker's stdin (it exits on that), then SIGTERM, then SIGKILL."""
    await trio.aclose_forcefully(process.stdin)
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    with trio.move_on_after(STOP_SECONDS):
        await process.wait()
    if process.returncode is None:
        logger.warning("HTTPS worker pid %d ignored SIGTERM; killing it", process.pid)
        process.kill()
        await process.wait()
    await trio.aclose_forcefully(process.stdout)
    return process.returncode


def _child_env():
    from keys import hygiene

    # Workers hold no key: secrets in the environment stay with the main process.
    env = hygiene.scrub_env(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


def api_request_counts():
    """This process's cloudboot_api_requests_total, as {"METHOD route status": count}."""
    from appliance.api._accounting import REQUESTS

    counts = {}
    for metric in REQUESTS.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                labels = sample.labels
                key = f"{labels['method']} {labels['route']} {labels['status']}"
                counts[key] = sample.value
    return counts


def _merge_api_requests(previous, report):
    """Add what a worker counted since its last report to the main process's counter.

    So cloudboot_api_requests_total on /metrics counts every process's requests
    by route, and an operator sums nothing. A restarted worker starts from zero
    (its previous report was dropped), so its whole count is new.
    """
    from appliance.api._accounting import REQUESTS

    counts = report.get("api_requests")
    if not isinstance(counts, dict):
        return
    before = (previous or {}).get("api_requests") or {}
    for key, value in counts.items():
        parts = key.split(" ") if isinstance(key, str) else []
        delta = value - before.get(key, 0) if isinstance(value, (int, float)) else 0
        if len(parts) == 3 and delta > 0:
            REQUESTS.labels(*parts).inc(delta)


def _register_collector(pool):
    from prometheus_client import REGISTRY

    collector = _HttpsCollector(pool)
    REGISTRY.register(collector)
    return collector


def _unregister_collector(collector):
    from prometheus_client import REGISTRY

    REGISTRY.unregister(collector)


class _HttpsCollector:
    """HTTPS counters of every serving process, labelled process="main" or "worker-N".

    A worker's figures are at most REPORT_SECONDS old, and start again from
    zero when the worker is restarted (Prometheus treats that as a counter reset).
    """

    FIELDS = (
        ("requests", "HTTPS requests received"),
        ("connections", "HTTPS connections accepted"),
        ("server_errors", "HTTPS answers with status 500 and above"),
        ("forwarded", "requests a worker passed to the main process"),
    )

    def __init__(self, pool):
        self.pool = pool

    def collect(self):
        from prometheus_client.core import CounterMetricFamily

        rows = self.pool.snapshots()
        for field, text in self.FIELDS:
            family = CounterMetricFamily(f"cloudboot_https_{field}", text, labels=["process"])
            for label, counters in rows:
                family.add_metric([label], float(counters.get(field, 0)))
            yield family

        restarts = CounterMetricFamily(
            "cloudboot_https_worker_restarts",
            "HTTPS worker processes restarted",
            labels=["process"],
        )
        for index, count in sorted(self.pool.restarts.items()):
            restarts.add_metric([f"worker-{index}"], float(count))
        yield restarts


# -- worker process ----------------------------------------------------------------


class WorkerRouter:
    """Local handlers for LOCAL_READS (GET and HEAD); every other request is forwarded."""

    def __init__(self, local, forwarder):
        self.local = local
        self.forwarder = forwarder

    def resolve(self, method, path):
        from appliance.http import HttpError

        if method in ("GET", "HEAD"):
            try:
                handler, params = self.local.resolve(method, path)
            except HttpError:
                pass
            else:
                return self._refusals_to_main(handler), params
        # Unknown paths too: the main process gives the one 404 / 405 answer.
        return self.forwarder, {}

    def _refusals_to_main(self, handler):
        from appliance.http import HttpError

        async def local_or_main(request):
            try:
                return await handler(request)
            except HttpError as e:
                if e.status not in (401, 403):
                    raise
            # A refused request is audited, and only the main process writes: it
            # answers the same read again (reads change nothing) and records the refusal.
            return await self.forwarder(request)

        return local_or_main


class _LocalRoutes:
    """Passed to api.register_routes in a worker: keeps only the local reads."""

    def __init__(self, router, patterns):
        self.router = router
        self.patterns = patterns

    def add(self, method, pattern, handler):
        if method == "GET" and pattern in self.patterns:
            self.router.add(method, pattern, handler)


def build_router(app, forwarder):
    from appliance import api
    from appliance.http import Router

    local = Router()
    filtered = _LocalRoutes(local, local_reads(app.settings))

    def not_asked():
        # /readyz is forwarded, so this is never called in a worker.
        return {}

    api.register_routes(filtered, app, not_asked)
    return WorkerRouter(local, forwarder)


def settings_from(document):
    from appliance.config import Settings

    settings = Settings()
    for section, values in document.items():
        target = getattr(settings, section)
        for key, value in values.items():
            setattr(target, key, value)
    return settings


async def worker_main(index, start, report_out, main_gone):
    """Serve HTTPS until the main process goes away or SIGTERM arrives."""
    from appliance.core.app import App
    from appliance.http import HttpStats, certificate_fingerprint
    from appliance.http.forward import Forwarder
    from appliance.store import ReadOnlyStore

    settings = settings_from(start["settings"])
    certificate, private_key = start["certificate"]
    store = await ReadOnlyStore.open(settings.data_path / "cloudboot.db", settings.store)
    app = App(store=store, settings=settings)
    app.fingerprint = certificate_fingerprint(certificate)
    app.address = start["address"]
    forwarder = Forwarder(start["socket"])
    router = build_router(app, forwarder)
    stats = HttpStats()

    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(
                _serve_https, router, start["address"], settings, certificate, private_key, stats
            )
            nursery.start_soon(_report_forever, report_out, stats, forwarder, nursery.cancel_scope)
            nursery.start_soon(_cancel_on_eof, main_gone, nursery.cancel_scope)
            nursery.start_soon(_cancel_on_signal, nursery.cancel_scope)
    finally:
        with trio.CancelScope(shield=True):
            await forwarder.aclose()
            await store.close()


async def _serve_https(router, address, settings, certificate, private_key, stats, *, task_status):
    from appliance.http import make_ssl_context
    from appliance.http import serve as serve_http

    await serve_http(
        router,
        address,
        settings.server.https_port,
        settings.http,
        ssl_context=make_ssl_context(certificate, private_key),
        reuse_port=True,
        stats=stats,
        task_status=task_status,
    )


async def _report_forever(report_out, stats, forwarder, cancel_scope):
    try:
        while True:
            report = {
                **vars(stats),
                "forwarded": forwarder.forwarded,
                "pid": os.getpid(),
                "api_requests": api_request_counts(),
            }
            await report_out.send_all(json.dumps(report).encode() + b"\n")
            await trio.sleep(REPORT_SECONDS)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        logger.info("main process gone (its pipe closed); stopping")
        cancel_scope.cancel()


async def _cancel_on_eof(stream, cancel_scope):
    while await stream.receive_some(4096):
        pass
    logger.info("main process gone (standard input closed); stopping")
    cancel_scope.cancel()


async def _cancel_on_signal(cancel_scope):
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            cancel_scope.cancel()
            return


def _read_start_message():
    line = sys.stdin.buffer.readline()
    if not line:
        raise SystemExit("appliance.workers: no start message on standard input")
    return json.loads(line)


def main(argv):
    from keys import hygiene

    # Set up before anything can go wrong, so the operator reads why in the same log.
    index = int(argv[1]) if len(argv) > 1 else 0
    start = _read_start_message()
    settings = settings_from(start["settings"])
    log.setup(settings.log.level, settings.log.format)
    # The worker holds the TLS private key: no core dumps, no ptrace by others.
    hygiene.harden_process()

    async def run():
        report_out = trio.lowlevel.FdStream(os.dup(1))
        main_gone = trio.lowlevel.FdStream(os.dup(0))
        with log.context(worker=index):
            await worker_main(index, start, report_out, main_gone)

    trio.run(run)


if __name__ == "__main__":
    main(sys.argv)
