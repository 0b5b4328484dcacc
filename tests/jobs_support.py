"""Helpers for the job and API tests: a store in a temporary folder and machines in it."""

import secrets

from appliance.core import identifiers, identity
from appliance.store import Store, now


async def open_store(folder):
    return await Store.open(folder / "cloudboot.db")


def _insert_machine(conn, machine_id, state, approved, serial, mac):
    at = now()
    conn.execute(
        "INSERT INTO machines (id, state, approved, boot_mac, system_serial, created_at,"
        " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (machine_id, state, int(approved), mac, serial, at, at),
    )
    if mac:
        identifiers.record(conn, machine_id, [identity.Signal("mac", mac)], at)


async def add_machine(store, state="discovered", approved=True, serial=None, mac=None):
    """A machine row as enrolment would leave it; returns its id."""
    machine_id = "m-" + secrets.token_hex(6)
    await store.write(_insert_machine, machine_id, state, approved, serial, mac)
    return machine_id


def _set_columns(conn, table, row_id, changes):
    assignments = ", ".join(f"{name} = ?" for name in changes)
    conn.execute(f"UPDATE {table} SET {assignments} WHERE id = ?", (*changes.values(), row_id))


async def set_job_columns(store, job_id, **changes):
    """Move a job's clock-driven columns (lease, start) into the past for a test."""
    await store.write(_set_columns, "jobs", job_id, changes)


async def set_machine_columns(store, machine_id, **changes):
    await store.write(_set_columns, "machines", machine_id, changes)


def _one(conn, query, args):
    return conn.execute(query, args).fetchall()


async def query(store, text, *args):
    return await store.read(_one, text, args)
