"""Job rows in SQL: the job model shared by the job service and the job engine.

Every function here takes an apsw connection and runs inside a store read or
write function, so it must do no I/O other than SQL and be safe to run again
after a rollback. It never sleeps, never wakes anyone and never logs: the
callers in appliance/core/jobs.py and appliance/core/engine.py do that after
the commit.
"""

import datetime
import json
import secrets

KINDS = ("inventory", "raid", "wipe", "install", "reboot", "poweroff", "wait", "power", "boot_pxe")

# Kinds the appliance runs itself through the machine's BMC (appliance/core/bmc.py); an
# agent never receives them. Not retry-safe: a repeated reset is a second reboot.
APPLIANCE_KINDS = frozenset({"power", "boot_pxe"})
# For SQL: "kind NOT IN (...)" keeps these jobs away from the agent's claim.
APPLIANCE_KINDS_SQL = "(" + ", ".join(f"'{kind}'" for kind in sorted(APPLIANCE_KINDS)) + ")"

# These change what is on the disks; on a deployed machine they need "confirm": true.
DESTRUCTIVE = frozenset({"raid", "wipe", "install"})

# Kinds the engine hands out again by itself after the agent reports a failure.
# A half-done wipe or install is never repeated without an operator deciding so.
RETRY_SAFE = frozenset({"inventory", "reboot", "poweroff", "wait"})

STATES = ("queued", "running", "succeeded", "failed", "cancelled", "timed_out")
FINISHED = frozenset({"succeeded", "failed", "cancelled", "timed_out"})

# The machine state a job moves its machine to when it starts, succeeds or fails.
MACHINE_ON_START = {"raid": "configuring", "wipe": "configuring", "install": "installing"}
MACHINE_ON_SUCCESS = {"raid": "ready", "wipe": "ready", "install": "deployed"}
MACHINE_ON_FAILURE = {"raid": "failed", "wipe": "failed", "install": "failed"}

_COLUMNS = (
    "seq",
    "id",
    "machine_id",
    "kind",
    "params",
    "state",
    "timeout_seconds",
    "attempt",
    "max_attempts",
    "progress",
    "message",
    "result",
    "confirmed",
    "created_by",
    "idempotency_key",
    "request_hash",
    "retry_of",
    "created_at",
    "updated_at",
    "not_before",
    "started_at",
    "finished_at",
    "lease_expires_at",
    "lease_owner",
    "cancel_requested",
)
SELECT = f"SELECT {', '.join(_COLUMNS)} FROM jobs"

# Internal bookkeeping a client never sees.
_PRIVATE = frozenset({"seq", "request_hash", "lease_owner"})


class JobError(Exception):
    """A job request that cannot be done, with the HTTP status and code it maps to.

    The API layer turns it into the one JSON error shape; the status is here so
    that the agent routes and the operator routes answer the same case alike.
    """

    def __init__(self, status, code, message):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def __repr__(self):
        return f"JobError({self.status}, {self.code!r}, {self.message!r})"


def now(offset_seconds=0.0):
    """UTC time as the sortable text the store keeps ("...T16:10:24.123456Z")."""
    moment = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=offset_seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_job_id():
    return "job_" + secrets.token_hex(10)


def row_to_job(row):
    job = dict(zip(_COLUMNS, row, strict=True))
    job["params"] = json.loads(job["params"])
    job["result"] = json.loads(job["result"]) if job["result"] is not None else None
    job["confirmed"] = bool(job["confirmed"])
    job["cancel_requested"] = bool(job["cancel_requested"])
    return job


def public(job):
    """The job as the API shows it."""
    return {k: v for k, v in job.items() if k not in _PRIVATE}


def agent_view(job):
    """The job as handed to the agent (docs/architecture.md, agent protocol)."""
    return {
        "id": job["id"],
        "kind": job["kind"],
        "params": job["params"],
        "timeout_seconds": job["timeout_seconds"],
        "attempt": job["attempt"],
    }


def load(conn, job_id):
    row = conn.execute(f"{SELECT} WHERE id = ?", (job_id,)).fetchone()
    return row_to_job(row) if row else None


def load_or_raise(conn, job_id):
    job = load(conn, job_id)
    if job is None:
        raise JobError(404, "job_not_found", f"no job with id {job_id!r}")
    return job


def load_machine(conn, machine_id):
    row = conn.execute(
        "SELECT id, state, approved FROM machines WHERE id = ?", (machine_id,)
    ).fetchone()
    if row is None:
        return None
    return {"id": row[0], "state": row[1], "approved": bool(row[2])}


def insert(conn, job):
    names = [c for c in _COLUMNS if c != "seq" and c in job]
    values = [_column_value(name, job[name]) for name in names]
    marks = ", ".join("?" for _ in names)
    conn.execute(f"INSERT INTO jobs ({', '.join(names)}) VALUES ({marks})", values)
    return load(conn, job["id"])


def hand_out(conn, job, at, lease_seconds, owner, message):
    """Move a queued job to running for one more attempt, leased to `owner`.

    The agent engine and the BMC runner hand jobs out the same way, so a
    restart's lease adoption and expiry treat both alike.
    """
    return update(
        conn,
        job["id"],
        state="running",
        attempt=job["attempt"] + 1,
        started_at=at,
        progress=None,
        message=message,
        lease_expires_at=now(lease_seconds),
        lease_owner=owner,
    )


def update(conn, job_id, **changes):
    changes.setdefault("updated_at", now())
    assignments = ", ".join(f"{name} = ?" for name in changes)
    values = [_column_value(name, value) for name, value in changes.items()]
    conn.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", (*values, job_id))
    return load(conn, job_id)


def _column_value(name, value):
    if name in ("params", "result") and value is not None:
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    if isinstance(value, bool):
        return int(value)
    return value


def set_machine_state(conn, machine_id, state):
    # A retired machine stays retired whatever a late job result says.
    conn.execute(
        "UPDATE machines SET state = ?, updated_at = ? WHERE id = ? AND state != 'retired'",
        (state, now(), machine_id),
    )


def finish(conn, job, state, message, result=None):
    """Move a job to a final state and its machine to where that leaves it."""
    finished = update(
        conn,
        job["id"],
        state=state,
        message=message,
        result=result,
        finished_at=now(),
        lease_expires_at=None,
    )

    if state == "succeeded" and job["kind"] in MACHINE_ON_SUCCESS:
        set_machine_state(conn, job["machine_id"], MACHINE_ON_SUCCESS[job["kind"]])
    elif state != "succeeded" and job["kind"] in MACHINE_ON_FAILURE and job["started_at"]:
        set_machine_state(conn, job["machine_id"], MACHINE_ON_FAILURE[job["kind"]])
    return finished


def add_log_lines(conn, job, lines):
    """Append lines to the job log, numbered after the last one."""
    if not lines:
        return
    last = conn.execute(
        "SELECT COALESCE(MAX(seq), 0) FROM job_log WHERE job_id = ?", (job["id"],)
    ).fetchone()[0]
    at = now()
    conn.executemany(
        "INSERT INTO job_log (job_id, seq, attempt, at, line) VALUES (?, ?, ?, ?, ?)",
        [(job["id"], last + i, job["attempt"], at, line) for i, line in enumerate(lines, 1)],
    )
