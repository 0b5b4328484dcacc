"""The job service and engine against a real store: hand-out, leases, retries, restarts."""

import json

import pytest
import trio

from appliance.config import JobSettings
from appliance.core import engine, jobs
from appliance.core._jobsql import now
from tests.jobs_support import (
    add_machine,
    open_store,
    query,
    set_job_columns,
    set_machine_columns,
)


@pytest.fixture
async def store(tmp_path):
    opened = await open_store(tmp_path)
    yield opened
    await opened.close()


async def create(store, machine_id, kind="wait", key=None, **extra):
    body = {"machine_id": machine_id, "kind": kind, **extra}
    job, _ = await jobs.create_job(store, "alice", body, key)
    return job


async def test_job_is_handed_to_its_approved_machine_once(store):
    machine = await add_machine(store, state="ready")
    job = await create(store, machine, "install", params={"image": "debian-12"})

    handed = await jobs.next_job_for_machine(store, machine, 0)
    running = await jobs.get_job(store, job["id"])
    machine_state = await query(store, "SELECT state FROM machines WHERE id = ?", machine)

    assert handed == {
        "id": job["id"],
        "kind": "install",
        "params": {"image": "debian-12"},
        "timeout_seconds": 3600,
        "attempt": 1,
    }
    assert running["state"] == "running"
    assert machine_state == [("installing",)]


async def test_agent_asking_again_ends_its_lost_job_instead_of_running_it_twice(store):
    machine = await add_machine(store)
    job = await create(store, machine)
    await jobs.next_job_for_machine(store, machine, 0)

    again = await jobs.next_job_for_machine(store, machine, 0)

    assert again is None
    lost = await jobs.get_job(store, job["id"])
    assert lost["state"] == "failed"
    assert "asked for new work" in lost["message"]


async def test_unapproved_machine_gets_nothing_until_approved(store):
    machine = await add_machine(store, approved=False)
    await create(store, machine)

    assert await jobs.next_job_for_machine(store, machine, 0.2) is None

    await set_machine_columns(store, machine, approved=1)
    assert (await jobs.next_job_for_machine(store, machine, 0))["kind"] == "wait"


async def test_long_poll_wakes_when_a_job_is_queued(store):
    machine = await add_machine(store)
    got = []

    async def poll():
        got.append(await jobs.next_job_for_machine(store, machine, 30))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(poll)
            await trio.sleep(0.2)
            assert got == []
            job = await create(store, machine, "reboot")

    assert got[0]["id"] == job["id"]


async def test_destructive_job_on_deployed_machine_needs_confirm(store):
    machine = await add_machine(store, state="deployed")

    with pytest.raises(jobs.JobError) as refused:
        await create(store, machine, "wipe")
    job = await create(store, machine, "wipe", confirm=True)

    assert refused.value.status == 409
    assert refused.value.code == "confirmation_required"
    assert '"confirm": true' in refused.value.message
    assert job["confirmed"] is True


async def test_no_job_for_retired_or_unknown_machine(store):
    machine = await add_machine(store, state="retired")

    with pytest.raises(jobs.JobError) as retired:
        await create(store, machine)
    with pytest.raises(jobs.JobError) as unknown:
        await create(store, "m-nosuchmachine")

    assert (retired.value.status, retired.value.code) == (409, "machine_retired")
    assert (unknown.value.status, unknown.value.code) == (404, "machine_not_found")


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"machine_id": "m-1"},
        {"machine_id": "m-1", "kind": "format"},
        {"machine_id": "m-1", "kind": "wait", "params": []},
        {"machine_id": "m-1", "kind": "wait", "timeout_seconds": 0},
        {"machine_id": "m-1", "kind": "wait", "timeout_seconds": True},
        {"machine_id": "m-1", "kind": "wait", "confirm": "yes"},
        {"machine_id": "m-1", "kind": "wait", "colour": "blue"},
    ],
)
async def test_bad_create_request_is_refused_with_a_reason(store, body):
    with pytest.raises(jobs.JobError) as refused:
        await jobs.create_job(store, "alice", body)
    assert refused.value.status == 400
    assert refused.value.message


async def test_idempotency_key_gives_the_same_job_or_a_conflict(store):
    machine = await add_machine(store)
    body = {"machine_id": machine, "kind": "wait", "params": {"seconds": 5}}

    first, created = await jobs.create_job(store, "alice", body, "key-1")
    second, created_again = await jobs.create_job(store, "alice", dict(body), "key-1")
    with pytest.raises(jobs.JobError) as conflict:
        await jobs.create_job(store, "alice", {**body, "params": {"seconds": 6}}, "key-1")
    other_user, _ = await jobs.create_job(store, "bob", body, "key-1")

    assert (created, created_again) == (True, False)
    assert second["id"] == first["id"]
    assert (conflict.value.status, conflict.value.code) == (409, "idempotency_key_reused")
    assert other_user["id"] != first["id"]
    assert await query(store, "SELECT COUNT(*) FROM jobs") == [(2,)]


async def test_concurrent_creations_with_one_key_make_one_job(store):
    machine = await add_machine(store)
    body = {"machine_id": machine, "kind": "wait"}
    ids = []

    async def create_once():
        job, _ = await jobs.create_job(store, "alice", body, "same-key")
        ids.append(job["id"])

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(create_once)

    assert len(set(ids)) == 1
    assert await query(store, "SELECT COUNT(*) FROM jobs") == [(1,)]


async def test_cancel_queued_job_ends_it(store):
    machine = await add_machine(store)
    job = await create(store, machine)

    cancelled = await jobs.cancel_job(store, "bob", job["id"])

    assert cancelled["state"] == "cancelled"
    assert "bob" in cancelled["message"]
    assert await jobs.next_job_for_machine(store, machine, 0) is None
    with pytest.raises(jobs.JobError) as again:
        await jobs.cancel_job(store, "bob", job["id"])
    assert again.value.code == "job_finished"


async def test_cancel_reaches_the_running_step_on_its_next_report(store):
    machine = await add_machine(store, state="ready")
    job = await create(store, machine, "wipe")
    await jobs.next_job_for_machine(store, machine, 0)
    await jobs.append_job_events(store, machine, job["id"], 10, ["wiping /dev/vda"])

    requested = await jobs.cancel_job(store, "bob", job["id"])
    with pytest.raises(jobs.JobError) as stop:
        await jobs.append_job_events(store, machine, job["id"], 20, ["pass 1 done"])
    ended = await jobs.get_job(store, job["id"])
    lines, _ = await jobs.read_job_log(store, job["id"])

    assert requested["state"] == "running" and requested["cancel_requested"] is True
    assert (stop.value.status, stop.value.code) == (409, "job_cancelled")
    assert ended["state"] == "cancelled"
    assert [entry["line"] for entry in lines] == ["wiping /dev/vda", "pass 1 done"]
    assert await query(store, "SELECT state FROM machines WHERE id = ?", machine) == [("failed",)]


async def test_events_for_another_machines_job_or_a_finished_job_are_refused(store):
    machine = await add_machine(store)
    other = await add_machine(store)
    job = await create(store, machine)
    await jobs.next_job_for_machine(store, machine, 0)

    with pytest.raises(jobs.JobError) as not_yours:
        await jobs.append_job_events(store, other, job["id"], None, ["x"])
    await jobs.report_job_result(store, machine, job["id"], "succeeded", "slept", {})
    await jobs.report_job_result(store, machine, job["id"], "succeeded", "slept", {})
    with pytest.raises(jobs.JobError) as finished:
        await jobs.append_job_events(store, machine, job["id"], None, ["late"])
    with pytest.raises(jobs.JobError) as unknown:
        await jobs.append_job_events(store, machine, "job_nosuch", None, [])

    assert (not_yours.value.status, not_yours.value.code) == (403, "job_not_yours")
    assert (finished.value.status, finished.value.code) == (409, "job_finished")
    assert unknown.value.status == 404
    assert (await jobs.get_job(store, job["id"]))["state"] == "succeeded"


async def test_failed_safe_job_is_retried_with_backoff_then_fails(store):
    engine.wakeups(store).job_settings = JobSettings(max_retries=1, retry_backoff_seconds=0.3)
    machine = await add_machine(store)
    body = {"machine_id": machine, "kind": "inventory"}
    job, _ = await jobs.create_job(
        store, "alice", body, job_settings=engine.wakeups(store).job_settings
    )

    await jobs.next_job_for_machine(store, machine, 0)
    await jobs.report_job_result(store, machine, job["id"], "failed", "dmidecode crashed", {})
    requeued = await jobs.get_job(store, job["id"])
    too_early = await jobs.next_job_for_machine(store, machine, 0)
    second = await jobs.next_job_for_machine(store, machine, 10)
    await jobs.report_job_result(store, machine, job["id"], "failed", "crashed again", {})
    final = await jobs.get_job(store, job["id"])

    assert requeued["state"] == "queued" and "attempt 1 failed" in requeued["message"]
    assert too_early is None
    assert second["attempt"] == 2
    assert (final["state"], final["message"], final["attempt"]) == ("failed", "crashed again", 2)


async def test_destructive_job_is_not_retried_by_itself(store):
    machine = await add_machine(store, state="ready")
    job = await create(store, machine, "raid")
    await jobs.next_job_for_machine(store, machine, 0)

    await jobs.report_job_result(store, machine, job["id"], "failed", "mdadm: no disks", {})

    assert (await jobs.get_job(store, job["id"]))["state"] == "failed"


async def test_sandbox_refusals_reported_by_the_agent_are_audited(store):
    machine = await add_machine(store, state="ready")
    job = await create(store, machine, "raid")
    await jobs.next_job_for_machine(store, machine, 0)
    # What bootos/agent/raid.py reports when the sandbox refused a system call.
    refusal = {"by": "seccomp", "syscall": "mount", "args": [0, 0, 0, 0, 0, 0]}
    data = {"sandbox": {"reason": None, "refusals": [refusal], "exit_code": 0}}

    await jobs.report_job_result(store, machine, job["id"], "succeeded", "array made", data)

    found = await query(
        store,
        "SELECT actor, result, details FROM audit_events"
        " WHERE action = 'provider.refusal' AND resource_id = ?",
        job["id"],
    )
    assert len(found) == 1
    actor, result, details = found[0]
    assert (actor, result) == (f"machine:{machine}", "denied")
    assert json.loads(details)["refusals"] == [refusal]


async def test_a_result_without_refusals_writes_no_refusal_event(store):
    machine = await add_machine(store, state="ready")
    job = await create(store, machine, "raid")
    await jobs.next_job_for_machine(store, machine, 0)
    data = {"sandbox": {"reason": None, "refusals": [], "exit_code": 0}}

    await jobs.report_job_result(store, machine, job["id"], "succeeded", "array made", data)

    sql = "SELECT COUNT(*) FROM audit_events WHERE action = 'provider.refusal'"
    assert await query(store, sql) == [(0,)]


async def test_timeout_ends_a_running_job(store):
    machine = await add_machine(store)
    job = await create(store, machine, timeout_seconds=30)
    await jobs.next_job_for_machine(store, machine, 0)
    await set_job_columns(store, job["id"], started_at="2000-01-01T00:00:00.000000Z")

    ended = await engine.sweep(store)

    assert [j["id"] for j in ended] == [job["id"]]
    final = await jobs.get_job(store, job["id"])
    assert final["state"] == "timed_out"
    assert "timeout_seconds=30" in final["message"]


async def test_silent_agent_loses_its_lease(store):
    machine = await add_machine(store)
    job = await create(store, machine)
    await jobs.next_job_for_machine(store, machine, 0)
    await set_job_columns(store, job["id"], lease_expires_at="2000-01-01T00:00:00.000000Z")

    await engine.sweep(store)

    final = await jobs.get_job(store, job["id"])
    assert (final["state"], final["message"]) == ("failed", engine.SILENT_AGENT_MESSAGE)


async def test_retry_queues_a_new_job_once(store):
    machine = await add_machine(store)
    job = await create(store, machine, "reboot")
    await jobs.cancel_job(store, "bob", job["id"])

    retried = await jobs.retry_job(store, "bob", job["id"])
    with pytest.raises(jobs.JobError) as twice:
        await jobs.retry_job(store, "bob", job["id"])
    with pytest.raises(jobs.JobError) as not_finished:
        await jobs.retry_job(store, "bob", retried["id"])

    assert retried["retry_of"] == job["id"] and retried["state"] == "queued"
    assert twice.value.code == "job_already_retried"
    assert not_finished.value.code == "job_not_retryable"


async def test_list_pages_with_an_opaque_cursor(store):
    machine = await add_machine(store)
    created = [await create(store, machine) for _ in range(5)]

    first, cursor = await jobs.list_jobs(store, machine_id=machine, limit=2)
    second, cursor2 = await jobs.list_jobs(store, machine_id=machine, limit=2, cursor=cursor)
    third, cursor3 = await jobs.list_jobs(store, machine_id=machine, limit=2, cursor=cursor2)
    with pytest.raises(jobs.JobError) as bad:
        await jobs.list_jobs(store, cursor="not-a-cursor")

    seen = [j["id"] for j in first + second + third]
    assert seen == [j["id"] for j in reversed(created)]
    assert cursor3 is None
    assert bad.value.code == "invalid_cursor"


async def test_state_changes_land_in_the_event_feed(store):
    machine = await add_machine(store, state="ready")
    job = await create(store, machine, "install")
    await jobs.next_job_for_machine(store, machine, 0)
    await jobs.report_job_result(store, machine, job["id"], "succeeded", "installed", {})

    rows = await query(
        store,
        "SELECT type, from_state, to_state FROM events WHERE machine_id = ? ORDER BY seq",
        machine,
    )

    assert rows == [
        ("machine.state", None, "ready"),
        ("job.state", None, "queued"),
        ("machine.state", "ready", "installing"),
        ("job.state", "queued", "running"),
        ("job.state", "running", "succeeded"),
        ("machine.state", "installing", "deployed"),
    ]


async def test_restart_keeps_queued_jobs_and_lets_reporting_agents_continue(tmp_path):
    store = await open_store(tmp_path)
    machine = await add_machine(store)
    silent = await create(store, machine, params={"n": 1})
    await jobs.next_job_for_machine(store, machine, 0)
    other = await add_machine(store)
    reporting = await create(store, other)
    await jobs.next_job_for_machine(store, other, 0)
    waiting = await create(store, machine, params={"n": 2})
    await store.close()

    store = await open_store(tmp_path)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.run_engine, store)
            await jobs.append_job_events(store, other, reporting["id"], 50, ["still here"])
            # The silent agent's adopted lease runs out without a report.
            await set_job_columns(store, silent["id"], lease_expires_at=now(-1))
            await engine.sweep(store)
            nursery.cancel_scope.cancel()

        states = {j: (await jobs.get_job(store, j))["state"] for j in (silent["id"],)}
        silent_job = await jobs.get_job(store, silent["id"])
        assert states[silent["id"]] == "failed"
        assert silent_job["message"] == engine.RESTART_MESSAGE
        assert (await jobs.get_job(store, reporting["id"]))["state"] == "running"
        assert (await jobs.get_job(store, waiting["id"]))["state"] == "queued"
        assert (await jobs.next_job_for_machine(store, machine, 0))["id"] == waiting["id"]
    finally:
        await store.close()
