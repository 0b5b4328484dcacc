-- Base schema: machines and their identity, inventory history, users and
-- tokens, settings, audit events and the expected-machine list.
-- Times are UTC text "YYYY-MM-DDTHH:MM:SS.ffffffZ" (appliance.store.now()),
-- so they sort and compare as text.

CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE machines (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL DEFAULT 'discovered' CHECK (state IN (
        'discovered', 'inventoried', 'ready', 'configuring', 'installing',
        'deployed', 'failed', 'retired')),
    approved INTEGER NOT NULL DEFAULT 0 CHECK (approved IN (0, 1)),
    approved_by TEXT,
    approved_at TEXT,
    -- How it came to be approved: 'operator' or 'expected' (matched the imported list).
    approved_via TEXT,
    boot_mac TEXT,
    pxe_guid TEXT,
    -- 1 when pxe_guid equals the SMBIOS UUID in either byte order, 0 when it differs,
    -- NULL when one of the two is missing.
    pxe_guid_matches INTEGER,
    smbios_uuid TEXT,
    uuid_trusted INTEGER NOT NULL DEFAULT 0,
    system_serial TEXT,
    manufacturer TEXT,
    product TEXT,
    labels TEXT NOT NULL DEFAULT '{}',
    source_address TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    last_seen_at TEXT,
    retired_at TEXT,
    registrations INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX machines_state ON machines (state);

-- Every identity signal a machine has reported (see appliance/core/identity.py).
CREATE TABLE machine_identifiers (
    machine_id TEXT NOT NULL REFERENCES machines (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    first_seen_at TEXT NOT NULL,
    last_seen_at TEXT NOT NULL,
    PRIMARY KEY (machine_id, kind, value)
);

CREATE INDEX machine_identifiers_value ON machine_identifiers (kind, value);

-- History is kept: a new snapshot per report, never an update in place.
CREATE TABLE inventory_snapshots (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    machine_id TEXT NOT NULL REFERENCES machines (id) ON DELETE CASCADE,
    taken_at TEXT NOT NULL,
    schema TEXT NOT NULL,
    document TEXT NOT NULL
);

CREATE INDEX inventory_snapshots_machine ON inventory_snapshots (machine_id, id);

CREATE TABLE users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    created_at TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1))
);

-- Only the SHA-256 of a token is kept (appliance/core/auth.py says why).
-- A user token belongs to a user; an agent token to exactly one machine.
CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    token_hash BLOB NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('user', 'agent')),
    user_name TEXT REFERENCES users (name),
    machine_id TEXT REFERENCES machines (id) ON DELETE CASCADE,
    description TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    revoked_at TEXT,
    CHECK ((kind = 'user' AND user_name IS NOT NULL AND machine_id IS NULL)
        OR (kind = 'agent' AND machine_id IS NOT NULL AND user_name IS NULL))
);

CREATE INDEX api_tokens_user ON api_tokens (user_name);
CREATE INDEX api_tokens_machine ON api_tokens (machine_id);

CREATE TABLE audit_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_id TEXT,
    result TEXT NOT NULL,
    trace_id TEXT,
    source TEXT,
    details TEXT NOT NULL DEFAULT '{}'
);

CREATE INDEX audit_events_resource ON audit_events (resource_type, resource_id);

-- Serials and MACs the operator imported: a machine reporting one is approved
-- on registration without waiting for an operator.
CREATE TABLE expected_machines (
    kind TEXT NOT NULL CHECK (kind IN ('serial', 'mac')),
    value TEXT NOT NULL,
    imported_by TEXT NOT NULL,
    imported_at TEXT NOT NULL,
    matched_machine_id TEXT REFERENCES machines (id) ON DELETE SET NULL,
    matched_at TEXT,
    PRIMARY KEY (kind, value)
);
