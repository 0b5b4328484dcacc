"""The job service: what operators do with jobs (create, list, cancel, retry, read logs).

Rules decided here:

- a job names one machine and one kind (see _jobsql.KINDS); destructive kinds
  (raid, wipe, install) on a deployed machine need "confirm": true;
- no job is created for a retired or unknown machine;
- a client-supplied idempotency key makes creation safe to repeat: the same key
  with the same body gives back the same job, with another body a conflict;
- cancelling a queued job ends it; cancelling a running one asks the agent to
  stop (it learns on its next events post, see appliance/core/engine.py).

Every change commits together with its audit record. This module never talks
HTTP: errors are JobError with the status the API answers. The agent-side
functions live in engine.py and are re-exported here.
"""

import hashlib
import json
import logging
import re

from appliance import log as applog
from appliance.config import JobSettings
from appliance.core import _jobsql as sql
from appliance.core import audit, bmc
from appliance.core._jobsql import DESTRUCTIVE, FINISHED, KINDS, STATES, JobError
from appliance.core.engine import (
    append_job_events,
    next_job_for_machine,
    report_job_result,
    wake,
)

__all__ = [
    "DESTRUCTIVE",
    "FINISHED",
    "KINDS",
    "STATES",
    "JobError",
    "append_job_events",
    "cancel_job",
    "cancel_machine_jobs",
    "create_job",
    "decode_cursor",
    "encode_cursor",
    "get_job",
    "list_jobs",
    "next_job_for_machine",
    "read_job_log",
    "report_job_result",
    "retry_job",
]

log = logging.getLogger(__name__)

# A week: longer than any install, short enough to catch a forgotten wait job.
MAX_TIMEOUT_SECONDS = 7 * 24 * 3600
MAX_IDEMPOTENCY_KEY = 200
MAX_PAGE = 500

_CREATE_FIELDS = {"machine_id", "kind", "params", "timeout_seconds", "confirm"}


def parse_create_request(body, job_settings=None):
    """Check a create request body; return the normalised fields or raise JobError(400)."""
    job_settings = job_settings or JobSettings()
    if not isinstance(body, dict):
        raise JobError(400, "invalid_request", f"expected a JSON object, got {_kind(body)}")
    unknown = sorted(set(body) - _CREATE_FIELDS)
    if unknown:
        raise JobError(400, "invalid_request", f"unknown field(s) {unknown}")

    machine_id = body.get("machine_id")
    if not isinstance(machine_id, str) or not 0 < len(machine_id) <= 100:
        raise JobError(400, "invalid_request", f"machine_id must be a string, got {machine_id!r}")
    kind = body.get("kind")
    if kind not in KINDS:
        raise JobError(400, "invalid_request", f"kind must be one of {list(KINDS)}, got {kind!r}")

    params = body.get("params", {})
    if not isinstance(params, dict):
        raise JobError(400, "invalid_request", f"params must be an object, got {_kind(params)}")
    if kind in sql.APPLIANCE_KINDS:
        # The runner checks them again with the same function before it runs the job.
        try:
            bmc.job_steps(kind, params)
        except bmc.BmcError as e:
            raise JobError(e.status, e.code, e.message) from None
    timeout = body.get("timeout_seconds", job_settings.default_timeout_seconds)
    # JSON has one number type: 600.0 is the whole number 600 (JSON Schema agrees).
    if isinstance(timeout, float) and timeout.is_integer():
        timeout = int(timeout)
    if isinstance(timeout, bool) or not isinstance(timeout, int):
        raise JobError(400, "invalid_request", f"timeout_seconds must be whole, got {timeout!r}")
    if not 0 < timeout <= MAX_TIMEOUT_SECONDS:
        raise JobError(
            400,
            "invalid_request",
            f"timeout_seconds must be 1-{MAX_TIMEOUT_SECONDS}, got {timeout}",
        )
    confirm = body.get("confirm", False)
    if not isinstance(confirm, bool):
        raise JobError(400, "invalid_request", f"confirm must be true or false, got {confirm!r}")

    return {
        "machine_id": machine_id,
        "kind": kind,
        "params": params,
        "timeout_seconds": timeout,
        "confirm": confirm,
    }


def _kind(value):
    return type(value).__name__ if value is not None else "null"


def request_hash(fields):
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


async def create_job(
    store,
    actor,
    body,
    idempotency_key=None,
    job_settings=None,
    trace_id=None,
    source="api",
    data_dir=None,
):
    """Create a job from a request body. Returns (job, created).

    `created` is False when an earlier request with the same idempotency key
    and the same body made the job. A raid job's provider must be built in or
    imported into `data_dir` (None: nothing is imported).
    """
    job_settings = job_settings or JobSettings()
    fields = parse_create_request(body, job_settings)
    if fields["kind"] == "raid":
        from appliance.core import _agent_packages

        _agent_packages.check_provider_named(fields["params"], data_dir)
    if idempotency_key is not None and not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
        raise JobError(
            400,
            "invalid_idempotency_key",
            f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} characters",
        )

    job, created = await store.write(
        _create, fields, actor, idempotency_key, job_settings.max_retries, trace_id, source
    )
    if created:
        with applog.context(machine_id=job["machine_id"], job_id=job["id"]):
            log.info("job created: %s by %s", job["kind"], actor)
        _wake(store, job)
    return sql.public(job), created


def _wake(store, job):
    """Wake whoever runs the new job: the BMC runner, or the machine's agent long poll."""
    if job["kind"] in sql.APPLIANCE_KINDS:
        bmc.wake_runner(store)
    else:
        wake(store, job["machine_id"])


def _create(conn, fields, actor, key, max_retries, trace_id, source="api"):
    digest = request_hash(fields)
    if key is not None:
        row = conn.execute(
            f"{sql.SELECT} WHERE created_by = ? AND idempotency_key = ?", (actor, key)
        ).fetchone()
        if row is not None:
            return _replay(sql.row_to_job(row), digest, key), False

    _check_machine_accepts(conn, fields["machine_id"], fields["kind"], fields["confirm"])
    at = sql.now()
    job = sql.insert(
        conn,
        {
            "id": sql.new_job_id(),
            "machine_id": fields["machine_id"],
            "kind": fields["kind"],
            "params": fields["params"],
            "state": "queued",
            "timeout_seconds": fields["timeout_seconds"],
            "max_attempts": 1 + max_retries if fields["kind"] in sql.RETRY_SAFE else 1,
            "confirmed": fields["confirm"],
            "created_by": actor,
            "idempotency_key": key,
            "request_hash": digest,
            "created_at": at,
            "updated_at": at,
            "not_before": at,
            "message": "queued",
        },
    )
    _audit(conn, actor, "job.create", job, trace_id, {"kind": job["kind"]}, source)
    return job, True


def _replay(job, digest, key):
    if job["request_hash"] != digest:
        raise JobError(
            409,
            "idempotency_key_reused",
            f"Idempotency-Key {key!r} was used for job {job['id']} with a different body",
        )
    return job


def _check_machine_accepts(conn, machine_id, kind, confirm):
    machine = sql.load_machine(conn, machine_id)
    if machine is None:
        raise JobError(404, "machine_not_found", f"no machine with id {machine_id!r}")
    if machine["state"] == "retired":
        raise JobError(409, "machine_retired", f"machine {machine_id} is retired; it runs no jobs")
    if kind in DESTRUCTIVE and machine["state"] == "deployed" and not confirm:
        raise JobError(
            409,
            "confirmation_required",
            f"machine {machine_id} is deployed and a {kind} job would overwrite its disks;"
            ' send "confirm": true to go ahead',
        )
    if kind in sql.APPLIANCE_KINDS and not bmc.configured(conn, machine_id):
        raise JobError(
            409,
            "bmc_not_set",
            f"machine {machine_id} has no BMC settings; a {kind} job needs them:"
            f" PUT /api/v1/machines/{machine_id}/bmc first",
        )


def _audit(conn, actor, action, job, trace_id, details, source="api"):
    audit.record(
        conn,
        actor=actor,
        action=action,
        resource_type="job",
        resource_id=job["id"],
        result="ok",
        trace_id=trace_id,
        source=source,
        details={"machine_id": job["machine_id"], **details},
    )


async def get_job(store, job_id):
    job = await store.read(sql.load_or_raise, job_id)
    return sql.public(job)


async def list_jobs(store, machine_id=None, state=None, kind=None, limit=50, cursor=None):
    """Jobs newest first, filtered; returns (jobs, next_cursor or None)."""
    if state is not None and state not in STATES:
        raise JobError(
            400, "invalid_filter", f"state must be one of {list(STATES)}, got {state!r}"
        )
    if kind is not None and kind not in KINDS:
        raise JobError(400, "invalid_filter", f"kind must be one of {list(KINDS)}, got {kind!r}")
    before = decode_cursor(cursor, "jobs") if cursor is not None else None

    rows = await store.read(_list, machine_id, state, kind, limit + 1, before)
    jobs = [sql.row_to_job(row) for row in rows]
    next_cursor = encode_cursor("jobs", jobs[limit - 1]["seq"]) if len(jobs) > limit else None
    return [sql.public(job) for job in jobs[:limit]], next_cursor


def _list(conn, machine_id, state, kind, limit, before):
    clauses, args = [], []
    for column, value in (("machine_id", machine_id), ("state", state), ("kind", kind)):
        if value is not None:
            clauses.append(f"{column} = ?")
            args.append(value)
    if before is not None:
        clauses.append("seq < ?")
        args.append(before)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    return conn.execute(
        f"{sql.SELECT}{where} ORDER BY seq DESC LIMIT ?", (*args, limit)
    ).fetchall()


# A cursor is a letter naming its list and a base-36 position. Clients must
# treat it as opaque (hand back what they were given); it is kept this plain
# so that the OpenAPI document can state its exact form.
CURSOR_PREFIX = {"jobs": "j", "machines": "m", "inventory": "i", "events": "e"}
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"
_CURSOR = re.compile(r"[a-z][0-9a-z]{1,12}")


def cursor_pattern(scope):
    return f"^{CURSOR_PREFIX[scope]}[0-9a-z]{{1,12}}$"


def encode_cursor(scope, position):
    """An opaque paging cursor for `position` in list `scope`."""
    digits = ""
    while True:
        position, digit = divmod(position, 36)
        digits = _BASE36[digit] + digits
        if position == 0:
            break
    return CURSOR_PREFIX[scope] + digits


def decode_cursor(cursor, scope):
    if not _CURSOR.fullmatch(cursor) or cursor[0] != CURSOR_PREFIX[scope]:
        raise JobError(
            400, "invalid_cursor", f"cursor {cursor[:64]!r} is not one this list gave out"
        )
    return int(cursor[1:], 36)


async def cancel_job(store, actor, job_id, trace_id=None, source="api"):
    job = await store.write(_cancel, actor, job_id, trace_id, source)
    with applog.context(machine_id=job["machine_id"], job_id=job_id):
        log.info("job cancel by %s: now %s", actor, job["state"])
    return sql.public(job)


def _cancel(conn, actor, job_id, trace_id, source="api"):
    job = sql.load_or_raise(conn, job_id)
    if job["state"] in FINISHED:
        raise JobError(409, "job_finished", f"job {job_id} already ended ({job['state']})")

    if job["state"] == "queued":
        job = sql.finish(conn, job, "cancelled", f"cancelled by {actor} before it started")
    elif not job["cancel_requested"]:
        job = sql.update(
            conn,
            job_id,
            cancel_requested=True,
            message=f"cancel requested by {actor}; the agent stops on its next report",
        )
    _audit(conn, actor, "job.cancel", job, trace_id, {"state": job["state"]}, source)
    return job


async def cancel_machine_jobs(store, machine_id, actor, trace_id=None, source="api"):
    """Cancel every unfinished job of a machine (it was retired); returns how many."""
    count = await store.write(_cancel_machine_jobs, machine_id, actor, trace_id, source)
    if count:
        with applog.context(machine_id=machine_id):
            log.info("%d unfinished job(s) cancelled by %s", count, actor)
    return count


def _cancel_machine_jobs(conn, machine_id, actor, trace_id, source="api"):
    rows = conn.execute(
        "SELECT id FROM jobs WHERE machine_id = ? AND state IN ('queued', 'running')",
        (machine_id,),
    ).fetchall()
    for (job_id,) in rows:
        _cancel(conn, actor, job_id, trace_id, source)
    return len(rows)


async def retry_job(store, actor, job_id, confirm=False, trace_id=None, source="api"):
    """Queue a new job like a failed, cancelled or timed-out one. Returns the new job."""
    job = await store.write(_retry, actor, job_id, confirm, trace_id, source)
    _wake(store, job)
    with applog.context(machine_id=job["machine_id"], job_id=job["id"]):
        log.info("job %s retried by %s", job_id, actor)
    return sql.public(job)


def _retry(conn, actor, job_id, confirm, trace_id, source="api"):
    old = sql.load_or_raise(conn, job_id)
    if old["state"] not in ("failed", "cancelled", "timed_out"):
        raise JobError(
            409,
            "job_not_retryable",
            f"job {job_id} is {old['state']};"
            " only failed, cancelled or timed-out jobs are retried",
        )
    newer = conn.execute("SELECT id FROM jobs WHERE retry_of = ?", (job_id,)).fetchone()
    if newer is not None:
        raise JobError(
            409, "job_already_retried", f"job {job_id} was already retried as {newer[0]}"
        )

    confirm = confirm or old["confirmed"]
    _check_machine_accepts(conn, old["machine_id"], old["kind"], confirm)
    at = sql.now()
    job = sql.insert(
        conn,
        {
            "id": sql.new_job_id(),
            "machine_id": old["machine_id"],
            "kind": old["kind"],
            "params": old["params"],
            "state": "queued",
            "timeout_seconds": old["timeout_seconds"],
            "max_attempts": old["max_attempts"],
            "confirmed": confirm,
            "created_by": actor,
            "retry_of": job_id,
            "created_at": at,
            "updated_at": at,
            "not_before": at,
            "message": f"queued as a retry of {job_id}",
        },
    )
    _audit(conn, actor, "job.retry", job, trace_id, {"retry_of": job_id}, source)
    return job


async def read_job_log(store, job_id, after=0, limit=500):
    """Log lines after line number `after`; returns (lines, next_after)."""
    return await store.read(_read_log, job_id, after, limit)


def _read_log(conn, job_id, after, limit):
    sql.load_or_raise(conn, job_id)
    rows = conn.execute(
        "SELECT seq, attempt, at, line FROM job_log WHERE job_id = ? AND seq > ?"
        " ORDER BY seq LIMIT ?",
        (job_id, after, limit),
    ).fetchall()
    lines = [{"seq": s, "attempt": a, "at": at, "line": line} for s, a, at, line in rows]
    return lines, (lines[-1]["seq"] if lines else after)
