"""The agent runs a raid job naming an imported vendor package: download, check, sandbox.

The real agent (bootos.agent: pinned HTTPS client, Runtime, RaidRunner) against the real
appliance API over TLS on 127.0.0.1, with a package made, signed, stamped and imported
with the real commands (tests/agent_packages_support.py). The provider runs in the real
sandbox, so these tests need root. A download whose bytes do not hash to the SHA-256 the
appliance sent is refused before anything runs; a package the appliance refuses fails the
job with the appliance's reason.
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import trio

from appliance.core import jobs, machines
from bootos.agent import raid
from bootos.agent.client import AgentClient
from bootos.agent.runtime import EXIT_STOPPED, Runtime
from providers.sandbox import runner
from tests.agent_packages_support import (
    LICENSEE,
    NAME,
    VERSION,
    copy_data_dir,
    provider_runs,
    registration,
    start_appliance,
    vendor_data_dir,
)
from tests.hostile.support import require_sandbox
from tests.identity_support import inventory

MAC = "52:54:00:5b:00:01"
# CAP_SYS_ADMIN, and the CAP_MKNOD the sandbox adds to it (providers/sandbox/launcher.py).
ADMIN_ONLY = f"{1 << 21 | 1 << 27:016x}"


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vendor")
    vendor_data_dir(folder)
    return folder


@pytest.fixture
def bootos_dirs():
    """An empty providers directory (nothing shipped) and a runtime root, outside /tmp
    like BootOS's /run (see tests/test_agent_raid.py)."""
    require_sandbox()
    root = Path(tempfile.mkdtemp(prefix="cloudboot-pkg-", dir="/var/tmp"))
    os.chmod(root, 0o755)
    (root / "shipped").mkdir(mode=0o755)
    (root / "runtime").mkdir(mode=0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def raid_runner(bootos_dirs, fetch):
    settings = runner.SandboxSettings(runtime_root=str(bootos_dirs / "runtime"))
    return raid.RaidRunner(str(bootos_dirs / "shipped"), settings, fetch=fetch)


def raid_body(machine, capabilities=("CAP_SYS_ADMIN",)):
    params = {
        "provider": NAME,
        "request": {"action": "create", "params": {"level": 1}},
        "allow": {"capabilities": list(capabilities), "devices": []},
    }
    return {"machine_id": machine, "kind": "raid", "params": params}


class Host:
    def __init__(self, net_dir):
        self.lines = []
        self.net_dir = net_dir
        (net_dir / "eth0").mkdir(parents=True)
        (net_dir / "eth0" / "address").write_text(MAC + "\n")

    def run(self, argv, timeout=None):
        return 0, ""


async def test_the_agent_runs_an_imported_package_and_reports_its_data(
    nursery, template, tmp_path, bootos_dirs
):
    appliance = await start_appliance(nursery, copy_data_dir(template, tmp_path))
    host = Host(tmp_path / "net")
    client = AgentClient(appliance.tls_url, appliance.pin, timeout=30)
    runtime = Runtime(
        {"url": appliance.tls_url, "fp": appliance.pin, "mac": MAC, "proto": 1},
        client,
        inventory=lambda: inventory(system_serial="SN-PKG-AGENT", nics=[MAC]),
        run=host.run,
        sleep=lambda seconds: None,
        console=host.lines.append,
        net_dir=host.net_dir,
        poll_wait=1,
        raid=raid_runner(bootos_dirs, client.provider_package),
    )

    async with trio.open_nursery() as session:
        outcome = {}

        async def agent():
            outcome["exit"] = await trio.to_thread.run_sync(runtime.run)

        session.start_soon(agent)
        machine = await _registered(host)
        job, _ = await jobs.create_job(
            appliance.store,
            "alice",
            raid_body(machine),
            data_dir=appliance.app.settings.server.data_dir,
        )
        await jobs.create_job(appliance.store, "alice", {"machine_id": machine, "kind": "reboot"})
        await machines.approve(appliance.store, machine, "olga")

    assert outcome["exit"] == EXIT_STOPPED
    job = await jobs.get_job(appliance.store, job["id"])
    assert job["state"] == "succeeded", job
    result = job["result"]
    assert (result["by"], result["action"], result["params"]) == (NAME, "create", {"level": 1})
    assert result["effective"] == ADMIN_ONLY
    assert result["sandbox"]["capabilities"] == ["CAP_SYS_ADMIN"]
    lines, _ = await jobs.read_job_log(appliance.store, job["id"])
    assert any(f"provider {NAME} {VERSION}: create" in str(line) for line in lines), lines
    [(actor, resource, outcome_, details, _)] = await appliance.store.read(provider_runs)
    assert (actor, resource, outcome_) == (f"machine:{machine}", f"{NAME}/{VERSION}", "ok")
    assert details["job_id"] == job["id"]
    # The unpacked copy it ran from is gone with the run.
    assert os.listdir(bootos_dirs / "runtime") == []


async def _registered(host):
    with trio.fail_after(60):
        while True:
            for line in host.lines:
                if line.startswith("registered with "):
                    return line.split(" as machine ")[1].split()[0]
            await trio.sleep(0.1)


async def running_job(appliance, client, capabilities=("CAP_SYS_ADMIN",)):
    """Register through the client, approve, create the raid job and take it."""
    answer = await trio.to_thread.run_sync(
        lambda: client.register(MAC, None, registration(MAC, "SN-PKG-X")["inventory"])
    )
    await machines.approve(appliance.store, answer["machine_id"], "olga")
    data_dir = appliance.app.settings.server.data_dir
    await jobs.create_job(
        appliance.store, "alice", raid_body(answer["machine_id"], capabilities), data_dir=data_dir
    )
    return await trio.to_thread.run_sync(lambda: client.next_job(wait=1))


async def test_a_download_that_does_not_match_its_sha256_never_runs(
    nursery, template, tmp_path, bootos_dirs
):
    appliance = await start_appliance(nursery, copy_data_dir(template, tmp_path))
    client = AgentClient(appliance.tls_url, appliance.pin, timeout=30)
    job = await running_job(appliance, client)
    fetched = []

    def changed_on_the_way(job_id):
        blob, sha256 = client.provider_package(job_id)
        fetched.append(sha256)
        changed = bytearray(blob)
        changed[changed.index(b"acme array built")] ^= 0x20
        return bytes(changed), sha256

    posted = []
    runner_ = raid_runner(bootos_dirs, changed_on_the_way)
    with pytest.raises(raid.RaidJobError, match="refusing to run it") as refused:
        await trio.to_thread.run_sync(
            lambda: runner_.run(job, lambda lines, p: posted.append(lines), 30)
        )

    assert fetched and fetched[0] in str(refused.value)
    assert posted == []  # not even the "provider ... : create" line: nothing started
    assert os.listdir(bootos_dirs / "runtime") == []


async def test_a_package_the_appliance_refuses_fails_the_job_with_its_reason(
    nursery, template, tmp_path, bootos_dirs
):
    data = copy_data_dir(template, tmp_path)
    appliance = await start_appliance(nursery, data, licensee=f"Not {LICENSEE}")
    client = AgentClient(appliance.tls_url, appliance.pin, timeout=30)
    job = await running_job(appliance, client)

    runner_ = raid_runner(bootos_dirs, client.provider_package)
    with pytest.raises(raid.RaidJobError) as refused:
        await trio.to_thread.run_sync(lambda: runner_.run(job, lambda *a: None, 30))

    message = str(refused.value)
    assert "403 provider_refused" in message and message.endswith("(watermark_violation)")
    assert os.listdir(bootos_dirs / "runtime") == []


async def test_an_imported_package_gets_no_capability_the_job_does_not_grant(
    nursery, template, tmp_path, bootos_dirs
):
    appliance = await start_appliance(nursery, copy_data_dir(template, tmp_path))
    client = AgentClient(appliance.tls_url, appliance.pin, timeout=30)
    job = await running_job(appliance, client, capabilities=())
    posted = []

    runner_ = raid_runner(bootos_dirs, client.provider_package)
    with pytest.raises(raid.RaidJobError, match="capability not granted: CAP_SYS_ADMIN"):
        await trio.to_thread.run_sync(
            lambda: runner_.run(job, lambda lines, p: posted.append(lines), 30)
        )
    assert posted == []
    assert os.listdir(bootos_dirs / "runtime") == []


def test_the_bootos_agent_archive_carries_what_the_download_needs(tmp_path):
    from bootos.build import zipapp

    agent = tmp_path / "cloudboot-agent"
    zipapp.write_agent(agent, 1_700_000_000)
    # Isolated, without site-packages (-I -S): only the archive can supply the modules.
    code = "import bootos.agent.raid as r; print(r.packages.__name__, r.IMPORTED_POLICY)"
    done = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            f"import sys; sys.path.insert(0, {str(agent)!r}); {code}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("providers.package ")
