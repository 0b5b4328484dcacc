"""The job lease is the setting jobs.lease_seconds: bounds at load, and used by the engine."""

import datetime

import pytest
import trio

from appliance import config
from appliance.config import JobSettings
from appliance.core import engine, jobs
from appliance.core._jobsql import now
from tests.jobs_support import add_machine, open_store


@pytest.fixture
async def store(tmp_path):
    opened = await open_store(tmp_path)
    yield opened
    await opened.close()


def seconds_between(earlier, later):
    parse = datetime.datetime.fromisoformat
    return (parse(later.replace("Z", "+00:00")) - parse(earlier.replace("Z", "+00:00"))).seconds


def test_default_is_two_minutes():
    assert config.load().jobs.lease_seconds == 120


@pytest.mark.parametrize("value", [0, 59, 86_401, -5])
def test_out_of_range_lease_is_refused_with_the_name(tmp_path, value):
    path = tmp_path / "c.toml"
    path.write_text(f"[jobs]\nlease_seconds = {value}\n")

    with pytest.raises(
        config.ConfigError, match="jobs.lease_seconds must be between 60 and 86400"
    ):
        config.load(path)


def test_lease_from_file_and_command_line(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[jobs]\nlease_seconds = 600\n")

    assert config.load(path).jobs.lease_seconds == 600
    assert config.load(path, {"jobs.lease_seconds": 90}).jobs.lease_seconds == 90
    with pytest.raises(config.ConfigError, match="must be a whole number"):
        config.load(path, {"jobs.lease_seconds": "90"})


async def test_handed_out_job_holds_the_configured_lease(store, nursery):
    await nursery.start(engine.run_engine, store, JobSettings(lease_seconds=900))
    machine = await add_machine(store)
    job, _ = await jobs.create_job(store, "alice", {"machine_id": machine, "kind": "wait"})

    await jobs.next_job_for_machine(store, machine, 0)
    running = await jobs.get_job(store, job["id"])
    await jobs.append_job_events(store, machine, job["id"], 10, [])
    renewed = await jobs.get_job(store, job["id"])

    # Stamps are to the microsecond; whole seconds between start and expiry is the lease.
    assert seconds_between(running["started_at"], running["lease_expires_at"]) in (899, 900)
    assert renewed["lease_expires_at"] >= running["lease_expires_at"]
    assert seconds_between(running["started_at"], renewed["lease_expires_at"]) >= 899


async def test_short_lease_expires_a_silent_job(store):
    # A lease this short is below the file's floor; code may still set it, as a test does.
    engine.wakeups(store).job_settings = JobSettings(lease_seconds=1)
    machine = await add_machine(store)
    job, _ = await jobs.create_job(store, "alice", {"machine_id": machine, "kind": "wait"})
    await jobs.next_job_for_machine(store, machine, 0)
    running = await jobs.get_job(store, job["id"])

    # The agent stays silent; the real clock passes the lease (sweeps before that end nothing).
    ended = []
    with trio.fail_after(60):
        while not ended:
            ended = await engine.sweep(store)
            await trio.sleep(0.2)

    final = await jobs.get_job(store, job["id"])
    assert [j["id"] for j in ended] == [job["id"]]
    assert (final["state"], final["message"]) == ("failed", engine.SILENT_AGENT_MESSAGE)
    assert final["finished_at"] > running["lease_expires_at"]
    assert now() > running["lease_expires_at"]
