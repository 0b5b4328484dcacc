"""Apply the numbered schema migrations to a connection, in order.

Runs once, on the writer connection, before the store answers anything. It
must never skip a number it has not applied, and never run against a
database whose schema is newer than this software knows.
"""

import logging

from appliance.store import migrations as _migrations

log = logging.getLogger(__name__)


class SchemaError(Exception):
    """The database schema cannot be brought to this software's version."""


_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TEXT NOT NULL
)
"""


def applied_versions(conn):
    return {row[0]: row[1] for row in conn.execute("SELECT version, name FROM schema_version")}


def migrate(conn, now, available=None):
    """Apply every migration newer than the database; return the numbers applied."""
    available = _migrations.load() if available is None else available
    conn.execute(_VERSION_TABLE)
    done = applied_versions(conn)

    known = {m.number for m in available}
    unknown = sorted(set(done) - known)
    if unknown:
        raise SchemaError(
            f"database has schema versions {unknown} that this software does not know "
            f"(it knows up to {max(known, default=0)}); was it written by a newer release?"
        )

    applied = []
    for migration in available:
        if migration.number in done:
            continue
        _apply(conn, migration, now)
        applied.append(migration.number)

    return applied


def _apply(conn, migration, now):
    # The migration and its schema_version row commit together: a crash in
    # between leaves the database at the previous version, never half-way.
    conn.execute("BEGIN IMMEDIATE")
    # Another process (`cloudboot token issue` beside a starting appliance) may
    # have applied it between our look and our lock.
    if migration.number in applied_versions(conn):
        conn.execute("COMMIT")
        return
    try:
        if migration.upgrade is not None:
            migration.upgrade(conn)
        else:
            conn.execute(migration.sql)
        conn.execute(
            "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
            (migration.number, migration.name, now),
        )
    except Exception as e:
        conn.execute("ROLLBACK")
        raise SchemaError(f"migration {migration.number:04d}_{migration.name} failed: {e}") from e
    conn.execute("COMMIT")
    log.info("applied schema migration %04d_%s", migration.number, migration.name)
