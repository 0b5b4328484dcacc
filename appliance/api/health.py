"""/healthz (the process answers) and /readyz (it can do its work), for load balancers.

Neither needs a token: a probe has none, and the answers name only services
and whether they are up. /readyz writes to the store, so a full disk or a
stuck writer shows as not ready; it must never block longer than its timeout.
"""

import logging

import trio

from appliance.http import Response
from appliance.store import now

log = logging.getLogger(__name__)

# A probe that waits longer than a load balancer's own timeout tells it nothing.
STORE_PROBE_SECONDS = 2.0


def register_routes(router, app, services_ready):
    """Add /healthz and /readyz.

    `services_ready()` returns {"dhcp": True, "tftp": False, ...} for the background services.
    """

    probe = _StoreProbe(app.store)

    async def healthz(request):
        return Response.json({"status": "alive"})

    async def readyz(request):
        checks = {"store": await probe.writable()}
        checks.update(_services(services_ready))
        ready = all(checks.values())
        body = {"status": "ready" if ready else "not_ready", "checks": checks}
        return Response.json(body, status=200 if ready else 503)

    router.add("GET", "/healthz", healthz)
    router.add("GET", "/readyz", readyz)


class _StoreProbe:
    """One write at a time, waited for at most STORE_PROBE_SECONDS.

    store.write cannot be cancelled once handed over (it commits anyway), so
    the write runs in a task of its own and the probe stops waiting instead.
    While a write is still pending the store counts as not ready and no second
    one is queued behind it.
    """

    def __init__(self, store):
        self.store = store
        self.pending = None

    async def writable(self):
        if self.pending is None:
            self.pending = _Pending()
            trio.lowlevel.spawn_system_task(self._write, self.pending)
        pending = self.pending

        with trio.move_on_after(STORE_PROBE_SECONDS):
            await pending.done.wait()
        if not pending.done.is_set():
            log.warning("readiness: the store did not commit within %.1f s", STORE_PROBE_SECONDS)
            return False
        return pending.ok

    async def _write(self, pending):
        try:
            await self.store.write(_touch_probe, now())
            pending.ok = True
        except Exception as e:
            log.warning("readiness: the store refused a write: %s", e)
        finally:
            pending.done.set()
            self.pending = None


class _Pending:
    def __init__(self):
        self.done = trio.Event()
        self.ok = False


def _touch_probe(conn, at):
    # A real write: the writer task, the write lock and the disk all take part.
    conn.execute(
        "INSERT INTO settings (key, value) VALUES ('readiness_probe_at', ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (at,),
    )


def _services(services_ready):
    try:
        states = services_ready()
    except Exception:
        log.exception("readiness: services_ready() failed")
        return {"services": False}
    return {str(name): bool(up) for name, up in states.items()}
