-- Jobs, their log lines, and the event feed of machine and job state changes.
-- Times are UTC text "YYYY-MM-DDTHH:MM:SS.ffffffZ", like the base schema.

CREATE TABLE jobs (
    -- seq orders jobs (creation order) and backs the opaque paging cursor.
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    machine_id TEXT NOT NULL REFERENCES machines (id),
    kind TEXT NOT NULL CHECK (kind IN (
        'inventory', 'raid', 'wipe', 'install', 'reboot', 'poweroff', 'wait')),
    params TEXT NOT NULL DEFAULT '{}',
    state TEXT NOT NULL DEFAULT 'queued' CHECK (state IN (
        'queued', 'running', 'succeeded', 'failed', 'cancelled', 'timed_out')),
    timeout_seconds INTEGER NOT NULL CHECK (timeout_seconds > 0),
    -- attempt counts hand-outs to the agent; automatic retries stop at max_attempts.
    attempt INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL DEFAULT 1,
    progress INTEGER CHECK (progress IS NULL OR progress BETWEEN 0 AND 100),
    message TEXT NOT NULL DEFAULT '',
    result TEXT,
    confirmed INTEGER NOT NULL DEFAULT 0,
    created_by TEXT NOT NULL,
    idempotency_key TEXT,
    request_hash TEXT,
    retry_of TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    -- A queued job is not handed out before this time (retry backoff).
    not_before TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    -- A running job's lease: renewed by the agent's events; lease_owner is the
    -- engine run (one per appliance start) that granted it.
    lease_expires_at TEXT,
    lease_owner TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX jobs_machine_state ON jobs (machine_id, state, seq);
CREATE INDEX jobs_state ON jobs (state, seq);
CREATE UNIQUE INDEX jobs_idempotency ON jobs (created_by, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE job_log (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    at TEXT NOT NULL,
    line TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);

-- State changes of machines and jobs, in commit order. Triggers fill it so
-- that no writer, in any module, can change a state without a record.
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    type TEXT NOT NULL CHECK (type IN ('machine.state', 'job.state')),
    machine_id TEXT,
    job_id TEXT,
    from_state TEXT,
    to_state TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT ''
);

CREATE INDEX events_machine ON events (machine_id, seq);

CREATE TRIGGER events_machine_insert AFTER INSERT ON machines
BEGIN
    INSERT INTO events (at, type, machine_id, from_state, to_state)
    VALUES (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z', 'machine.state',
            new.id, NULL, new.state);
END;

CREATE TRIGGER events_machine_state AFTER UPDATE OF state ON machines
WHEN old.state IS NOT new.state
BEGIN
    INSERT INTO events (at, type, machine_id, from_state, to_state)
    VALUES (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z', 'machine.state',
            new.id, old.state, new.state);
END;

CREATE TRIGGER events_job_insert AFTER INSERT ON jobs
BEGIN
    INSERT INTO events (at, type, machine_id, job_id, from_state, to_state, message)
    VALUES (new.created_at, 'job.state', new.machine_id, new.id, NULL, new.state,
            new.kind);
END;

CREATE TRIGGER events_job_state AFTER UPDATE OF state ON jobs
WHEN old.state IS NOT new.state
BEGIN
    INSERT INTO events (at, type, machine_id, job_id, from_state, to_state, message)
    VALUES (new.updated_at, 'job.state', new.machine_id, new.id, old.state, new.state,
            new.message);
END;
