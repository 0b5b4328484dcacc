"""The job engine: hands jobs to agents, keeps their leases, ends overdue jobs.

Three things live here:

- a registry of one trio.Event per machine, set when a job is queued for it,
  so an agent's long poll wakes at once instead of polling the database;
- the agent-side service functions the agent routes call
  (next_job_for_machine, append_job_events, report_job_result);
- the background task (run_engine) that fails jobs whose lease or timeout ran
  out.

A job is never handed out twice: handing out happens in one write
transaction that moves it from queued to running. A running job holds a lease
that the agent's events renew. After an appliance restart the new engine run
gives every running job one more lease period for its agent to report; a job
whose agent stays silent is failed with a reason that says so. This module
never decides what an operator may do (appliance/core/jobs.py does).
"""

import datetime
import logging
import secrets
import weakref

import trio

from appliance import log as applog
from appliance.config import JobSettings
from appliance.core import _jobsql as sql
from appliance.core import audit, machines
from appliance.core._jobsql import JobError
from appliance.proto.inventory import InventoryError

log = logging.getLogger(__name__)

# How often the engine looks for jobs whose lease or timeout ran out.
SWEEP_SECONDS = 2.0

MAX_LINES_PER_POST = 1000
MAX_LINE_CHARS = 4096

RESTART_MESSAGE = "appliance restarted while the job ran; lease expired"
SILENT_AGENT_MESSAGE = "the agent stopped reporting; lease expired"


class Wakeups:
    """One trio.Event per machine; set (and replaced) when work arrives for it.

    `run_id` names this engine run: leases granted by an earlier run (before a
    restart) are told apart by it.
    """

    def __init__(self):
        self.run_id = secrets.token_hex(8)
        self.job_settings = JobSettings()
        self._events = {}

    def event(self, machine_id):
        event = self._events.get(machine_id)
        if event is None:
            event = self._events[machine_id] = trio.Event()
        return event

    def wake(self, machine_id):
        event = self._events.pop(machine_id, None)
        if event is not None:
            event.set()


# Keyed by the store object, so each opened store (each appliance run, each
# test) has its own registry and nothing needs resetting.
_registries = weakref.WeakKeyDictionary()


def wakeups(store):
    registry = _registries.get(store)
    if registry is None:
        registry = _registries[store] = Wakeups()
    return registry


def wake(store, machine_id):
    """Wake the long poll of `machine_id`, if one is waiting."""
    wakeups(store).wake(machine_id)


# -- agent side ------------------------------------------------------------------


async def next_job_for_machine(store, machine_id, wait_seconds):
    """The next job for this machine as the agent sees it, or None after wait_seconds.

    Only an approved, not retired machine gets jobs, one at a time, in the
    order they were created.
    """
    registry = wakeups(store)
    deadline = trio.current_time() + max(0.0, float(wait_seconds))

    while True:
        # Take the event before looking, so a job queued while we look still wakes us.
        event = registry.event(machine_id)
        job, retry_at = await _try_claim(store, machine_id, registry.run_id)
        if job is not None:
            with applog.context(machine_id=machine_id, job_id=job["id"]):
                log.info("job handed to agent: %s attempt %d", job["kind"], job["attempt"])
            return sql.agent_view(job)

        remaining = deadline - trio.current_time()
        if remaining <= 0:
            return None
        if retry_at is not None:
            remaining = min(remaining, max(0.05, _seconds_until(retry_at)))
        with trio.move_on_after(remaining):
            await event.wait()


async def _try_claim(store, machine_id, run_id):
    # Most polls find nothing: look on a read connection first and take the
    # single writer only when there is something to hand out or to clean up.
    if not await store.read(_claim_possible, machine_id, sql.now()):
        retry_at = await store.read(_next_retry_at, machine_id)
        return None, retry_at
    lease_seconds = wakeups(store).job_settings.lease_seconds
    return await store.write(_claim, machine_id, run_id, lease_seconds)


def _claim_possible(conn, machine_id, at):
    row = conn.execute(
        "SELECT 1 FROM jobs WHERE machine_id = ? AND ("
        " state = 'running' OR (state = 'queued' AND not_before <= ?))"
        f" AND kind NOT IN {sql.APPLIANCE_KINDS_SQL} LIMIT 1",
        (machine_id, at),
    ).fetchone()
    return row is not None


def _next_retry_at(conn, machine_id):
    row = conn.execute(
        "SELECT MIN(not_before) FROM jobs WHERE machine_id = ? AND state = 'queued'"
        f" AND kind NOT IN {sql.APPLIANCE_KINDS_SQL}",
        (machine_id,),
    ).fetchone()
    return row[0]


def _claim(conn, machine_id, run_id, lease_seconds):
    machine = sql.load_machine(conn, machine_id)
    if machine is None or not machine["approved"] or machine["state"] == "retired":
        return None, None

    # The agent asks for work only when it runs none; a job still running for
    # this machine was lost on the machine's side (the agent restarted).
    # BMC jobs (sql.APPLIANCE_KINDS) run on the appliance, never on the agent: they are
    # neither handed out here nor ended by the agent's asking.
    for row in conn.execute(
        f"{sql.SELECT} WHERE machine_id = ? AND state = 'running'"
        f" AND kind NOT IN {sql.APPLIANCE_KINDS_SQL}",
        (machine_id,),
    ).fetchall():
        job = sql.row_to_job(row)
        sql.finish(conn, job, "failed", "the agent asked for new work while this job ran")

    at = sql.now()
    row = conn.execute(
        f"{sql.SELECT} WHERE machine_id = ? AND state = 'queued' AND not_before <= ?"
        f" AND kind NOT IN {sql.APPLIANCE_KINDS_SQL} ORDER BY seq LIMIT 1",
        (machine_id, at),
    ).fetchone()
    if row is None:
        return None, _next_retry_at(conn, machine_id)

    job = sql.row_to_job(row)
    if job["kind"] in sql.MACHINE_ON_START:
        sql.set_machine_state(conn, machine_id, sql.MACHINE_ON_START[job["kind"]])
    claimed = sql.hand_out(conn, job, at, lease_seconds, run_id, "handed to the agent")
    return claimed, None


async def append_job_events(store, machine_id, job_id, progress, lines):
    """Record progress and log lines the agent sent for its running job.

    Raises JobError: 404 unknown job, 403 another machine's job, 409 when the
    job is not running. A job an operator cancelled is ended here and the agent
    gets 409 "job_cancelled", which tells it to stop the step.
    """
    lines = _check_events(progress, lines)
    registry = wakeups(store)
    lease_seconds = registry.job_settings.lease_seconds
    outcome = await store.write(
        _append, machine_id, job_id, progress, lines, registry.run_id, lease_seconds
    )

    if outcome == "cancelled":
        with applog.context(machine_id=machine_id, job_id=job_id):
            log.info("job cancelled; the agent was told to stop")
        raise JobError(409, "job_cancelled", f"job {job_id} was cancelled; stop running it")


def _check_events(progress, lines):
    if progress is not None and (
        isinstance(progress, bool) or not isinstance(progress, int) or not 0 <= progress <= 100
    ):
        raise JobError(
            400, "invalid_progress", f"progress must be 0-100 or null, got {progress!r}"
        )
    if lines is None:
        return []
    if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
        raise JobError(400, "invalid_lines", "lines must be a list of strings")
    if len(lines) > MAX_LINES_PER_POST:
        raise JobError(
            400,
            "too_many_lines",
            f"at most {MAX_LINES_PER_POST} lines per post, got {len(lines)}",
        )
    return [line[:MAX_LINE_CHARS] for line in lines]


def _running_job_of(conn, machine_id, job_id):
    job = sql.load_or_raise(conn, job_id)
    if job["machine_id"] != machine_id:
        raise JobError(403, "job_not_yours", f"job {job_id} belongs to another machine")
    if job["kind"] in sql.APPLIANCE_KINDS:
        raise JobError(403, "job_not_yours", f"job {job_id} runs on the appliance, not the agent")
    if job["state"] == "queued":
        raise JobError(409, "job_not_running", f"job {job_id} has not been handed out yet")
    return job


def _append(conn, machine_id, job_id, progress, lines, run_id, lease_seconds):
    job = _running_job_of(conn, machine_id, job_id)
    if job["state"] in sql.FINISHED:
        if job["state"] == "cancelled":
            return "cancelled"
        raise JobError(
            409, "job_finished", f"job {job_id} already ended ({job['state']}): {job['message']}"
        )

    sql.add_log_lines(conn, job, lines)
    if job["cancel_requested"]:
        sql.finish(conn, job, "cancelled", "cancelled by an operator; the agent was told to stop")
        return "cancelled"

    changes = {"lease_expires_at": sql.now(lease_seconds), "lease_owner": run_id}
    if progress is not None:
        changes["progress"] = progress
    sql.update(conn, job_id, **changes)
    return "running"


async def report_job_result(
    store, machine_id, job_id, status, message, data, trace_id=None, source=None
):
    """Record the agent's final word on a job.

    A failed retry-safe job goes back to the queue with backoff while attempts
    remain. A succeeded inventory job with data {"inventory": {...}} stores a
    new inventory snapshot. Reporting the same result twice is harmless.
    """
    if status not in ("succeeded", "failed"):
        raise JobError(
            400, "invalid_status", f"status must be 'succeeded' or 'failed', got {status!r}"
        )
    if data is not None and not isinstance(data, dict):
        raise JobError(400, "invalid_data", f"data must be an object, got {type(data).__name__}")

    backoff = wakeups(store).job_settings.retry_backoff_seconds
    job = await store.write(
        _report_audited,
        machine_id,
        job_id,
        status,
        str(message or ""),
        data or {},
        backoff,
        (trace_id, source),
    )

    with applog.context(machine_id=machine_id, job_id=job_id):
        log.info("job result %s: now %s (%s)", status, job["state"], job["message"])
    if job["state"] == "queued":
        wake(store, machine_id)


def _report_audited(conn, machine_id, job_id, status, message, data, backoff, where):
    """_report and its audit record, in one transaction (a job change is audited)."""
    job = _report(conn, machine_id, job_id, status, message, data, backoff)
    trace_id, source = where
    audit.record(
        conn,
        actor=f"machine:{machine_id}",
        action="job.result",
        resource_type="job",
        resource_id=job_id,
        result="ok",
        trace_id=trace_id,
        source=source,
        details={"reported": status, "state": job["state"], "message": message[:200]},
    )
    _audit_sandbox_refusals(conn, machine_id, job_id, data, where)
    return job


def _audit_sandbox_refusals(conn, machine_id, job_id, data, where):
    """What the provider sandbox refused in BootOS (bootos/agent/raid.py reports it
    under data["sandbox"]["refusals"]) becomes one audit event, as on the appliance."""
    sandbox = data.get("sandbox") if isinstance(data, dict) else None
    refusals = sandbox.get("refusals") if isinstance(sandbox, dict) else None
    if not isinstance(refusals, list) or not refusals:
        return
    trace_id, source = where
    audit.record(
        conn,
        actor=f"machine:{machine_id}",
        action="provider.refusal",
        resource_type="job",
        resource_id=job_id,
        result="denied",
        trace_id=trace_id,
        source=source,
        details={"job_id": job_id, "refusals": refusals[:50]},
    )


def _report(conn, machine_id, job_id, status, message, data, backoff):
    job = _running_job_of(conn, machine_id, job_id)
    if job["state"] == status:
        return job
    if job["state"] in sql.FINISHED:
        raise JobError(
            409, "job_finished", f"job {job_id} already ended ({job['state']}): {job['message']}"
        )

    if status == "succeeded":
        rejected = _store_inventory(conn, job, data)
        if rejected:
            return sql.finish(conn, job, "failed", rejected)
        return sql.finish(conn, job, "succeeded", message or "done", result=data)

    if job["cancel_requested"]:
        return sql.finish(conn, job, "cancelled", f"cancelled by an operator; agent: {message}")
    if job["kind"] in sql.RETRY_SAFE and job["attempt"] < job["max_attempts"]:
        return _requeue(conn, job, message, backoff)
    return sql.finish(conn, job, "failed", message or "the agent reported a failure", result=data)


def _requeue(conn, job, message, backoff):
    # Exponential backoff: base, 2x base, 4x base ... (settings.jobs.retry_backoff_seconds).
    delay = backoff * (2 ** (job["attempt"] - 1))
    retry_at = sql.now(delay)
    return sql.update(
        conn,
        job["id"],
        state="queued",
        not_before=retry_at,
        lease_expires_at=None,
        message=f"attempt {job['attempt']} failed: {message}; retrying after {retry_at}",
    )


def _store_inventory(conn, job, data):
    inventory = data.get("inventory")
    if job["kind"] != "inventory" or not isinstance(inventory, dict):
        return None
    try:
        machines.store_inventory(conn, job["machine_id"], inventory)
    except InventoryError as e:
        return f"the appliance rejected the inventory: {e}"
    return None


# -- background task --------------------------------------------------------------


async def run_engine(store, job_settings=None, *, task_status=trio.TASK_STATUS_IGNORED):
    """Fail jobs whose lease or timeout ran out, every SWEEP_SECONDS, until cancelled.

    `job_settings` (settings.jobs) gives the lease and the retry backoff used for agent
    results.
    """
    registry = wakeups(store)
    if job_settings is not None:
        registry.job_settings = job_settings
    adopted = await store.write(
        _adopt_leases, registry.run_id, registry.job_settings.lease_seconds
    )
    if adopted:
        log.info("%d running job(s) from before the restart wait for their agents", adopted)
    task_status.started()

    while True:
        await sweep(store)
        await trio.sleep(SWEEP_SECONDS)


async def run(app, *, task_status=trio.TASK_STATUS_IGNORED):
    """run_engine for serve.py: the App gives the store and settings.jobs."""
    await run_engine(app.store, app.settings.jobs, task_status=task_status)


async def sweep(store):
    """One pass: end jobs whose lease or timeout ran out. Returns the jobs ended."""
    registry = wakeups(store)
    at = sql.now()
    if not await store.read(_anything_due, at):
        return []

    ended = await store.write(_expire, registry.run_id)
    for job in ended:
        with applog.context(machine_id=job["machine_id"], job_id=job["id"]):
            log.warning("job %s: %s", job["state"], job["message"])
    return ended


def _adopt_leases(conn, run_id, lease_seconds):
    # Give agents of jobs that ran before the restart one lease period to
    # report again; lease_owner keeps naming the old run so that a silent
    # agent's job is failed with the restart as its reason.
    lease = sql.now(lease_seconds)
    conn.execute(
        "UPDATE jobs SET lease_expires_at = ? WHERE state = 'running' AND lease_owner != ?"
        " AND (lease_expires_at IS NULL OR lease_expires_at < ?)",
        (lease, run_id, lease),
    )
    return conn.changes()


def _anything_due(conn, at):
    row = conn.execute(
        "SELECT 1 FROM jobs WHERE state = 'running' AND lease_expires_at < ? LIMIT 1", (at,)
    ).fetchone()
    if row is not None:
        return True
    for started_at, timeout in conn.execute(
        "SELECT started_at, timeout_seconds FROM jobs WHERE state = 'running'"
    ):
        if _deadline(started_at, timeout) < at:
            return True
    return False


def _expire(conn, run_id):
    at = sql.now()
    ended = []
    for row in conn.execute(f"{sql.SELECT} WHERE state = 'running'").fetchall():
        job = sql.row_to_job(row)
        if _deadline(job["started_at"], job["timeout_seconds"]) < at:
            message = f"no result within timeout_seconds={job['timeout_seconds']}"
            ended.append(sql.finish(conn, job, "timed_out", message))
        elif job["lease_expires_at"] is not None and job["lease_expires_at"] < at:
            ended.append(_lease_expired(conn, job, run_id))
    return ended


def _lease_expired(conn, job, run_id):
    if job["cancel_requested"]:
        return sql.finish(conn, job, "cancelled", "cancelled; the agent stopped reporting")
    reason = RESTART_MESSAGE if job["lease_owner"] != run_id else SILENT_AGENT_MESSAGE
    return sql.finish(conn, job, "failed", reason)


def _deadline(started_at, timeout_seconds):
    started = datetime.datetime.strptime(started_at, "%Y-%m-%dT%H:%M:%S.%fZ")
    deadline = started + datetime.timedelta(seconds=timeout_seconds)
    return deadline.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _seconds_until(stamp):
    moment = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ")
    moment = moment.replace(tzinfo=datetime.UTC)
    return (moment - datetime.datetime.now(datetime.UTC)).total_seconds()
