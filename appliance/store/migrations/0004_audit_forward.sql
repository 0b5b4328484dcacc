-- Forwarding of audit events to the bank's syslog collector
-- (appliance/core/audit_forward.py). The audit log itself is the queue: an
-- event's id is its sequence number, and this table keeps, per collector, the
-- id of the last event the collector's TCP stack acknowledged. Everything
-- after it is sent (again) on the next connection: at-least-once delivery.

CREATE TABLE audit_forward_cursor (
    target TEXT PRIMARY KEY,
    last_sent_id INTEGER NOT NULL,
    updated_at TEXT NOT NULL
);
