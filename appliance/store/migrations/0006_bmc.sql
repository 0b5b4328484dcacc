-- BMC jobs run on the appliance (appliance/core/bmc.py): per-machine BMC settings, and the
-- job kinds "power" and "boot_pxe". Numbered two above the highest when written (0004) so a
-- parallel migration can take 0005.

CREATE TABLE machine_bmc (
    machine_id TEXT PRIMARY KEY REFERENCES machines (id),
    protocol TEXT NOT NULL CHECK (protocol IN ('redfish', 'ipmi')),
    address TEXT NOT NULL,
    port INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
    username TEXT NOT NULL,
    -- The password sealed with the keyring's "bmc-secrets" data key (keys/envelope.py),
    -- its AAD naming the machine, so a blob copied to another machine's row does not open.
    password_sealed BLOB NOT NULL,
    scheme TEXT NOT NULL DEFAULT 'https' CHECK (scheme IN ('https', 'http')),
    verify_tls INTEGER NOT NULL DEFAULT 1,
    tls_fingerprint_sha256 TEXT,
    updated_at TEXT NOT NULL,
    updated_by TEXT NOT NULL
);

-- SQLite cannot change a CHECK constraint in place: the jobs table is rebuilt with the new
-- kinds. job_log references jobs with ON DELETE CASCADE and foreign keys are on (they cannot
-- be turned off inside the migration's transaction), so its rows are set aside first:
-- dropping jobs while job_log still pointed at it would delete every log line.
CREATE TABLE jobs_new (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    machine_id TEXT NOT NULL REFERENCES machines (id),
    kind TEXT NOT NULL CHECK (kind IN (
        'inventory', 'raid', 'wipe', 'install', 'reboot', 'poweroff', 'wait',
        'power', 'boot_pxe')),
    params TEXT NOT NULL DEFAULT '{}',
    state TEXT NOT NULL DEFAULT 'queued' CHECK (state IN (
        'queued', 'running', 'succeeded', 'failed', 'cancelled', 'timed_out')),
    timeout_seconds INTEGER NOT NULL CHECK (timeout_seconds > 0),
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
    not_before TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    lease_expires_at TEXT,
    lease_owner TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
INSERT INTO jobs_new SELECT * FROM jobs;

CREATE TABLE job_log_kept AS SELECT * FROM job_log;
DROP TABLE job_log;
DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;

CREATE TABLE job_log (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    at TEXT NOT NULL,
    line TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);
INSERT INTO job_log SELECT * FROM job_log_kept;
DROP TABLE job_log_kept;

CREATE INDEX jobs_machine_state ON jobs (machine_id, state, seq);
CREATE INDEX jobs_state ON jobs (state, seq);
CREATE UNIQUE INDEX jobs_idempotency ON jobs (created_by, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

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
