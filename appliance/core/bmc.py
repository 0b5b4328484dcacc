"""BMC jobs on the appliance: per-machine BMC settings, and the runner of power/boot jobs.

A machine's BMC (protocol, address, port, user, password, TLS pin) is kept in the
machine_bmc table; the password only sealed with the keyring's "bmc-secrets" data key,
its AAD naming the machine. Without a master key, or while it is sealed, nothing is
stored and nothing runs (KeysUnavailable, answered 503).

The runner claims queued jobs of the kinds in _jobsql.APPLIANCE_KINDS under the same
rules as agent jobs (one transaction moves a job from queued to running with the next
attempt number and a lease of this engine run; the engine's sweep ends jobs whose lease or
timeout ran out, and after a restart gives them the restart as reason). For each job it
opens the password (a key use, audited with the job named as actor), and runs the built-in
provider (providers/redfish or providers/ipmi), or the imported package the job names once
it passed its checks again (_bmc_imported.py), in the sandbox, in a worker thread, with a
network grant of exactly the machine's BMC address and port. Creating a BMC job wakes the
runner (wake_runner); a slow poll is the fallback.

This module must never write the password to the store, a log, a job line or an audit
record, never pass it to a provider other than in its request on stdin, and never hand a
BMC job to an agent.
"""

import contextlib
import logging
import queue
import threading
import weakref
from pathlib import Path

import trio

from appliance import log as applog
from appliance.core import _bmc_imported as imported
from appliance.core import _jobsql as sql
from appliance.core import audit, engine
from appliance.core._bmc_settings import (  # noqa: F401 (the API uses them from here)
    DEFAULT_PORTS,
    MAX_TEXT,
    POWER_ACTIONS,
    BmcError,
    KeysUnavailable,
    job_steps,
    parse_settings,
    provider_name,
    refuse_appliance_itself,
)
from providers import manifest, protocol
from providers.sandbox import runner

log = logging.getLogger(__name__)

PURPOSE = "bmc-secrets"
PROVIDERS = Path(__file__).resolve().parents[2] / "providers"
# A fallback only: a job queued in this process wakes the runner (wake_runner), and so does
# the end of a job (its machine or a concurrency slot is free again). The poll finds what
# nothing announced: a job whose retry time came, or one the sweep put back in the queue.
POLL_SECONDS = 10.0
FLUSH_SECONDS = 0.5
MIN_SCRUB_CHARS = 6


def keyring_of(app):
    """The appliance's Keyring, or KeysUnavailable (503) saying why there is none."""
    master = getattr(app, "master", None)
    keyring = getattr(app, "keyring", None)
    if master is None or keyring is None:
        raise KeysUnavailable(
            503,
            "no_master_key",
            "no master key is configured (`cloudboot keys init`); BMC passwords are stored"
            " only encrypted",
        )
    if master.is_sealed():
        raise KeysUnavailable(
            503, "keys_sealed", "the master key is sealed; officers must unseal it first"
        )
    return keyring


async def set_settings(app, machine_id, body, actor, trace_id=None, source=None):
    """Store a machine's BMC settings, the password sealed; returns the public view.

    `trace_id` and `source` (the client's address) go into the audit record.
    """
    await app.store.read(_machine_or_raise, machine_id)
    settings = parse_settings(body)
    refuse_appliance_itself(settings["address"], settings["port"], app.settings)
    keyring = keyring_of(app)
    password = settings.pop("password").encode()
    sealed = await trio.to_thread.run_sync(_seal, keyring, password, machine_id)
    del password
    row = await app.store.write(_put, machine_id, settings, sealed, actor, (trace_id, source))
    with applog.context(machine_id=machine_id):
        log.info("BMC settings set by %s: %s %s", actor, settings["protocol"], settings["address"])
    return row


def _seal(keyring, password, machine_id):
    from keys import KeysError

    try:
        return keyring.seal(PURPOSE, password, aad=_aad(machine_id), actor="bmc-settings")
    except KeysError as e:
        raise KeysUnavailable(503, "keys_sealed", f"the password cannot be sealed: {e}") from None


def _aad(machine_id):
    return f"cloudboot.bmc-password/1 {machine_id}".encode()


def _machine_exists(conn, machine_id):
    # Reading or forgetting the BMC of a retired machine is fine; only setting one is not.
    if sql.load_machine(conn, machine_id) is None:
        raise BmcError(404, "machine_not_found", f"no machine with id {machine_id!r}")


def _machine_or_raise(conn, machine_id):
    machine = sql.load_machine(conn, machine_id)
    if machine is None:
        raise BmcError(404, "machine_not_found", f"no machine with id {machine_id!r}")
    if machine["state"] == "retired":
        raise BmcError(409, "machine_retired", f"machine {machine_id} is retired")
    return machine


def _put(conn, machine_id, settings, sealed, actor, origin):
    _machine_or_raise(conn, machine_id)
    conn.execute(
        "INSERT OR REPLACE INTO machine_bmc (machine_id, protocol, address, port, username,"
        " password_sealed, scheme, verify_tls, tls_fingerprint_sha256, updated_at, updated_by)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            machine_id,
            settings["protocol"],
            settings["address"],
            settings["port"],
            settings["username"],
            sealed,
            settings["scheme"],
            int(settings["verify_tls"]),
            settings["tls_fingerprint_sha256"],
            sql.now(),
            actor,
        ),
    )
    view = _load(conn, machine_id)
    details = {k: v for k, v in view.items() if k not in ("machine_id", "updated_at")}
    _audit(conn, actor, "machine.bmc.set", machine_id, origin, details)
    return view


_SELECT = (
    "SELECT machine_id, protocol, address, port, username, password_sealed, scheme,"
    " verify_tls, tls_fingerprint_sha256, updated_at, updated_by FROM machine_bmc"
)


def _row(conn, machine_id):
    return conn.execute(f"{_SELECT} WHERE machine_id = ?", (machine_id,)).fetchone()


def _load(conn, machine_id, with_secret=False):
    row = _row(conn, machine_id)
    if row is None:
        return None
    names = ("machine_id", "protocol", "address", "port", "username", "password_sealed")
    view = dict(zip(names, row[:6], strict=True))
    sealed = view.pop("password_sealed")
    view.update(scheme=row[6], verify_tls=bool(row[7]), tls_fingerprint_sha256=row[8])
    view.update(updated_at=row[9], updated_by=row[10], password_set=bool(sealed))
    if with_secret:
        view["password_sealed"] = bytes(sealed)
    return view


async def get_settings(store, machine_id):
    """The public view (no password, `password_set` instead); 404 when none are set."""
    view = await store.read(_load, machine_id)
    if view is None:
        await _not_set(store, machine_id)
    return view


async def read_settings(store, machine_id, actor, trace_id=None, source=None):
    """get_settings for a person: the view names the BMC's address and login, so who
    read it is audited (machine.bmc.read) in the same transaction."""
    view = await store.write(_read, machine_id, actor, (trace_id, source))
    if view is None:
        await _not_set(store, machine_id)
    return view


def _read(conn, machine_id, actor, origin):
    view = _load(conn, machine_id)
    if view is not None:
        _audit(conn, actor, "machine.bmc.read", machine_id, origin, {})
    return view


async def _not_set(store, machine_id):
    await store.read(_machine_exists, machine_id)
    raise BmcError(404, "bmc_not_set", f"machine {machine_id} has no BMC settings")


async def delete_settings(store, machine_id, actor, trace_id=None, source=None):
    if not await store.write(_delete, machine_id, actor, (trace_id, source)):
        await _not_set(store, machine_id)


def _delete(conn, machine_id, actor, origin):
    conn.execute("DELETE FROM machine_bmc WHERE machine_id = ?", (machine_id,))
    if not conn.changes():
        return False
    _audit(conn, actor, "machine.bmc.delete", machine_id, origin, {})
    return True


def configured(conn, machine_id):
    """True when the machine has BMC settings (a BMC job for it can run)."""
    return _row(conn, machine_id) is not None


def _audit(conn, actor, action, machine_id, origin, details, result="ok"):
    """One audit record; `origin` is (trace id, source: the client's address or "bmc")."""
    trace_id, source = origin
    audit.record(
        conn,
        actor=actor,
        action=action,
        resource_type="machine",
        resource_id=machine_id,
        result=result,
        trace_id=trace_id,
        source=source,
        details=details,
    )


# -- the runner -------------------------------------------------------------------------


async def run(app, *, task_status=trio.TASK_STATUS_IGNORED):
    """Claim and run BMC jobs until cancelled (serve.py starts it beside the job engine)."""
    jobs = app.settings.jobs
    limiter = trio.CapacityLimiter(max(1, jobs.bmc_concurrency))
    runtime_root = jobs.bmc_runtime_root or runner.DEFAULT_RUNTIME_ROOT
    sandbox = runner.SandboxSettings(runtime_root=runtime_root)
    run_id = engine.wakeups(app.store).run_id
    async with trio.open_nursery() as nursery:
        task_status.started()
        while True:
            # Taken before looking, so a job queued while we look still wakes us.
            wakeup = _wakeup(app.store)
            job = None
            if limiter.available_tokens and await app.store.read(_claim_possible, sql.now()):
                job = await app.store.write(_claim, run_id, jobs.lease_seconds)
            if job is None:
                with trio.move_on_after(POLL_SECONDS):
                    await wakeup.wait()
                continue
            await limiter.acquire_on_behalf_of(job["id"])
            nursery.start_soon(_run_and_release, app, job, sandbox, limiter)


async def _run_and_release(app, job, sandbox, limiter):
    try:
        with applog.context(machine_id=job["machine_id"], job_id=job["id"]):
            await run_job(app, job, sandbox)
    except Exception:
        # A fault in one job must not stop the runner (and with it the appliance).
        log.exception("BMC job %s: the runner failed", job["id"])
        message = "the BMC runner failed; see the appliance log"
        await _finish(app.store, job, "failed", message, None)
    finally:
        limiter.release_on_behalf_of(job["id"])
        wake_runner(app.store)


# One trio.Event per opened store (each appliance run, each test), replaced once set.
_wakeups = weakref.WeakKeyDictionary()


def _wakeup(store):
    event = _wakeups.get(store)
    if event is None:
        event = _wakeups[store] = trio.Event()
    return event


def wake_runner(store):
    """Tell the BMC runner of `store` to look for work now (a BMC job was queued)."""
    event = _wakeups.pop(store, None)
    if event is not None:
        event.set()


_KINDS_SQL = sql.APPLIANCE_KINDS_SQL


def _claim_possible(conn, at):
    row = conn.execute(
        f"SELECT 1 FROM jobs WHERE state = 'queued' AND kind IN {_KINDS_SQL} AND not_before <= ?"
        " LIMIT 1",
        (at,),
    ).fetchone()
    return row is not None


def _claim(conn, run_id, lease_seconds):
    # One BMC job per machine at a time: a power-off racing a boot override helps nobody.
    at = sql.now()
    row = conn.execute(
        f"{sql.SELECT} WHERE state = 'queued' AND kind IN {_KINDS_SQL} AND not_before <= ?"
        " AND machine_id NOT IN (SELECT machine_id FROM jobs WHERE state = 'running'"
        f" AND kind IN {_KINDS_SQL}) ORDER BY seq LIMIT 1",
        (at,),
    ).fetchone()
    if row is None:
        return None
    job = sql.row_to_job(row)
    return sql.hand_out(conn, job, at, lease_seconds, run_id, "handed to the BMC runner")


async def run_job(app, job, sandbox):
    """Run one claimed job to its end; every outcome is recorded on the job."""
    try:
        steps = job_steps(job["kind"], job["params"])
        bmc = await app.store.read(_load, job["machine_id"], True)
        if bmc is None:
            raise ValueError(
                f"machine {job['machine_id']} has no BMC settings"
                f" (PUT /api/v1/machines/{job['machine_id']}/bmc)"
            )
        # Again here: the row may predate the check, or the appliance's ports changed.
        refuse_appliance_itself(bmc["address"], bmc["port"], app.settings)
        keyring = keyring_of(app)
    except (ValueError, BmcError) as e:
        await _finish(app.store, job, "failed", str(e), None)
        return
    await _Run(app, job, sandbox, bmc, keyring).steps(steps)


class _Run:
    """One job's provider runs: the worker thread, and the trio side that records them."""

    def __init__(self, app, job, sandbox, bmc, keyring):
        self.store = app.store
        self.settings = app.settings
        self.lease_seconds = app.settings.jobs.lease_seconds
        self.job = job
        self.sandbox = sandbox
        self.bmc = bmc
        self.keyring = keyring
        self.cancel = threading.Event()
        self.events = queue.SimpleQueue()
        self.package = PROVIDERS / bmc["protocol"]
        self.imported = provider_name(job["params"])
        self.actor = f"bmc-runner job {job['id']}"
        self.findings = imported.Findings()

    async def steps(self, steps):
        data, messages = {}, []
        for number, (action, extra) in enumerate(steps, 1):
            await _log(self.store, self.job, [f"step {number}/{len(steps)}: {action}"])
            result = await self._one(action, extra)
            await self.store.write(_record_all, self.findings.take())
            await self._record_refusals(result)
            if self.cancel.is_set():
                # Cancelled by an operator, or ended by the sweep (timeout, lease): only
                # the cancel is still ours to record.
                await _finish(self.store, self.job, "failed", result.message, None)
                return
            if result.status != "succeeded":
                message = f"{action}: {result.message} ({result.reason}){_relay_errors(result)}"
                await _finish(self.store, self.job, "failed", message, {"steps": data})
                return
            data[action] = result.data
            messages.append(result.message)
        await _finish(self.store, self.job, "succeeded", "; ".join(messages), data)

    async def _one(self, action, extra):
        done = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch, done)
            try:
                return await trio.to_thread.run_sync(self._blocking_run, action, extra)
            finally:
                done.set()

    def _blocking_run(self, action, extra):
        """In a worker thread: check the provider package, open the password (an audited
        key use), run the provider."""
        from keys import KeysError

        try:
            with self._provider() as (directory, found):
                password = self.keyring.open(
                    self.bmc["password_sealed"], aad=_aad(self.job["machine_id"]), actor=self.actor
                ).decode()
                result = self._run_provider(directory, found, action, extra, password)
        except imported.Refused as e:
            return runner.RunResult("failed", e.reason, str(e))
        except KeysError as e:
            return runner.RunResult("failed", "keys_unavailable", f"cannot open the password: {e}")
        if self.imported:
            details = {"job_id": self.job["id"], "machine_id": self.job["machine_id"]}
            imported.ran(self.findings, self.actor, self.imported, result, details)
        return result

    def _provider(self):
        """The built-in provider for the BMC's protocol, or the checked imported package."""
        if self.imported is None:
            return contextlib.nullcontext((self.package, manifest.load(self.package)))
        root = self.sandbox.runtime_root
        return imported.package_for_run(
            self.settings, self.imported, self.actor, self.findings, root
        )

    def _run_provider(self, directory, found, action, extra, password):
        request = protocol.make_request(action, {**self._params(), **extra}, self.job["id"])
        request["params"]["password"] = password
        grant = {"host": self.bmc["address"], "port": self.bmc["port"]}
        grant["protocol"] = "udp" if self.bmc["protocol"] == "ipmi" else "tcp"
        result = runner.run(
            directory,
            found,
            request,
            {"destinations": [grant]},
            self.sandbox,
            on_event=lambda event: self.events.put(_scrub(event, password)),
            cancel=self.cancel,
        )
        # Whatever the provider said goes into the job and the audit log: a password it
        # echoed is masked there (the built-in providers never echo it).
        result.message = _scrub(result.message, password)
        result.data = _scrub(result.data, password)
        result.events, result.stderr = [], ""
        return result

    def _params(self):
        bmc = self.bmc
        params = {"host": bmc["address"], "port": bmc["port"], "username": bmc["username"]}
        if bmc["protocol"] == "redfish":
            params["scheme"] = bmc["scheme"]
            if bmc["tls_fingerprint_sha256"]:
                params["tls_fingerprint_sha256"] = bmc["tls_fingerprint_sha256"]
            elif not bmc["verify_tls"]:
                params["insecure"] = True
        return params

    async def _watch(self, done):
        """Until the thread is done: progress into the job log, lease renewed, cancel seen."""
        try:
            while True:
                with trio.move_on_after(FLUSH_SECONDS):
                    await done.wait()
                lines, progress = _drain(self.events)
                still = await self.store.write(
                    _progress, self.job, lines, progress, self.lease_seconds
                )
                if not still:
                    self.cancel.set()
                if done.is_set():
                    return
        except trio.Cancelled:
            # The appliance is stopping: the provider's tree is killed, the thread returns.
            self.cancel.set()
            raise

    async def _record_refusals(self, result):
        if not result.refusals:
            return
        lines = [f"refused by the sandbox: {_refusal_text(r)}" for r in result.refusals]
        await self.store.write(_refusals, self.job, lines, result.refusals)


def _drain(events):
    lines, progress = [], None
    while True:
        try:
            event = events.get_nowait()
        except queue.Empty:
            return lines, progress
        message = str(event.get("message", ""))[: engine.MAX_LINE_CHARS]
        if event.get("type") == "progress":
            if isinstance(event.get("percent"), int):
                progress = event["percent"]
            lines.append(message)
        else:
            lines.append(f"{event.get('level', 'info')}: {message}")


def _refusal_text(refusal):
    if refusal.get("syscall"):
        return f"{refusal.get('by')} {refusal['syscall']}"
    return f"{refusal.get('by')}: {refusal.get('note', '')}"


def _relay_errors(result):
    """What the relay met on the way to the BMC (refused, unreachable), for the job message."""
    errors = [c for c in result.connections if c.get("error")]
    return "".join(
        f"; the BMC at {c['host']}:{c['port']}/{c.get('protocol', 'tcp')} answered: {c['error']}"
        for c in errors[:1]
    )


def _scrub(value, secret):
    """`value` (text, or JSON-like) with every occurrence of `secret` masked.

    A password of a few characters is left alone: masking "p" would mangle every message
    and hide nothing worth hiding.
    """
    if len(secret) < MIN_SCRUB_CHARS:
        return value
    if isinstance(value, str):
        return value.replace(secret, "********")
    if isinstance(value, dict):
        return {_scrub(k, secret): _scrub(v, secret) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(item, secret) for item in value]
    return value


def _progress(conn, job, lines, progress, lease_seconds):
    """Log lines and progress of a running job; False when it is no longer ours to run."""
    current = sql.load(conn, job["id"])
    if (
        current is None
        or current["state"] != "running"
        or current["attempt"] != job["attempt"]
        or current["cancel_requested"]
    ):
        return False
    sql.add_log_lines(conn, current, lines)
    changes = {"lease_expires_at": sql.now(lease_seconds)}
    if progress is not None and 0 <= progress <= 100:
        changes["progress"] = progress
    sql.update(conn, job["id"], **changes)
    return True


def _record_all(conn, records):
    for fields in records:
        audit.record(conn, **fields)


def _refusals(conn, job, lines, refusals):
    sql.add_log_lines(conn, job, lines)
    details = {"job_id": job["id"], "refusals": refusals[:50]}
    origin = (None, "bmc")
    _audit(conn, "bmc-runner", "provider.refusal", job["machine_id"], origin, details, "denied")


async def _log(store, job, lines):
    await store.write(sql.add_log_lines, job, lines)


async def _finish(store, job, state, message, result):
    ended = await store.write(_finish_if_ours, job, state, message, result)
    if ended is not None:
        log.info("BMC job %s %s: %s", job["kind"], ended["state"], ended["message"])


def _finish_if_ours(conn, job, state, message, result):
    current = sql.load(conn, job["id"])
    if current is None or current["state"] != "running" or current["attempt"] != job["attempt"]:
        return None  # ended meanwhile by the sweep (timeout) or an operator
    if current["cancel_requested"]:
        return sql.finish(conn, current, "cancelled", "cancelled by an operator; provider stopped")
    return sql.finish(conn, current, state, message, result)
