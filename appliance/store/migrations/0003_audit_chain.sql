-- The audit log becomes tamper-evident (appliance/core/audit.py, audit_chain.py):
-- each event carries the hash of the event before it and of its own content;
-- signed heads pin the chain at intervals and where retention cut it; the
-- schema refuses UPDATE always and DELETE except inside a retention grant.
-- Events written before this migration have no hash yet; the next record()
-- seals them once, in id order (the only change the UPDATE trigger allows).

ALTER TABLE audit_events ADD COLUMN prev_hash TEXT;
ALTER TABLE audit_events ADD COLUMN hash TEXT;

CREATE INDEX audit_events_actor ON audit_events (actor, id);
CREATE INDEX audit_events_action ON audit_events (action, id);
CREATE INDEX audit_events_at ON audit_events (at);

-- A signed statement "event <event_id> has hash <event_hash>". kind 'head' is
-- the periodic signature of the newest event; kind 'prune' marks where the
-- retention job cut the chain (the last pruned event) and names the archive.
CREATE TABLE audit_heads (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('head', 'prune')),
    signed_at TEXT NOT NULL,
    event_id INTEGER NOT NULL,
    event_hash TEXT NOT NULL,
    verify_key TEXT NOT NULL,
    signature TEXT NOT NULL,
    archive TEXT
);

CREATE INDEX audit_heads_event ON audit_heads (event_id);

-- Present only inside the retention job's transaction: deleting audit events
-- is allowed for ids up to upto_id that are older than cutoff, nothing else.
CREATE TABLE audit_prune_grant (
    upto_id INTEGER NOT NULL,
    cutoff TEXT NOT NULL
);

CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
WHEN old.hash IS NOT NULL
    OR new.id IS NOT old.id OR new.at IS NOT old.at OR new.actor IS NOT old.actor
    OR new.action IS NOT old.action OR new.resource_type IS NOT old.resource_type
    OR new.resource_id IS NOT old.resource_id OR new.result IS NOT old.result
    OR new.trace_id IS NOT old.trace_id OR new.source IS NOT old.source
    OR new.details IS NOT old.details
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only: an audit event is never changed');
END;

CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
WHEN NOT EXISTS (
    SELECT 1 FROM audit_prune_grant g WHERE old.id <= g.upto_id AND old.at < g.cutoff
)
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only: only the retention job deletes, '
        || 'and only archived events older than the retention');
END;

-- The floor of 180 days is the regulator's minimum; the schema holds it too,
-- so no setting and no code path can prune younger events.
CREATE TRIGGER audit_prune_grant_floor BEFORE INSERT ON audit_prune_grant
WHEN new.cutoff > strftime('%Y-%m-%dT%H:%M:%f', 'now', '-180 days') || '000Z'
BEGIN
    SELECT RAISE(ABORT, 'audit events younger than 180 days are never pruned');
END;

CREATE TRIGGER audit_heads_no_update BEFORE UPDATE ON audit_heads
BEGIN
    SELECT RAISE(ABORT, 'audit_heads is append-only');
END;

CREATE TRIGGER audit_heads_no_delete BEFORE DELETE ON audit_heads
BEGIN
    SELECT RAISE(ABORT, 'audit_heads is append-only');
END;
