"""An appliance in-process for the BMC job tests: store, key-file master key, the API on
127.0.0.1, the job engine and the BMC runner, and a world-traversable sandbox runtime root.

The master key's events go to the store's audit table through the appliance's own
recorder (appliance/key_audit.py), as in `cloudboot serve`.
"""

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path

import trio

from appliance import key_audit
from appliance.api import bmc as bmc_api
from appliance.config import Settings
from appliance.core import bmc, engine
from appliance.core.app import App
from keys.envelope import Keyring
from keys.master import KeyFileMaster
from tests.api_support import Api, build_router, make_tokens
from tests.http_support import start_server
from tests.jobs_support import add_machine, open_store

FINISHED = ("succeeded", "failed", "cancelled", "timed_out")


@dataclasses.dataclass
class Appliance:
    api: Api
    data: Path
    runtime: Path

    @property
    def store(self):
        return self.api.store

    async def machine(self):
        return await add_machine(self.store)

    async def job(self, machine_id, kind, params, **extra):
        body = {"machine_id": machine_id, "kind": kind, "params": params, **extra}
        status, _, job = await self.api.call("POST", "/api/v1/jobs", body, role="operator")
        assert status == 201, job
        return job

    async def wait(self, job_id, states=FINISHED, bound_seconds=180):
        """The job once its state is one of `states` (a bound, not a timing assertion)."""
        with trio.move_on_after(bound_seconds):
            while True:
                _, _, job = await self.api.call("GET", f"/api/v1/jobs/{job_id}", role="viewer")
                if job["state"] in states:
                    return job
                await trio.sleep(0.2)
        raise AssertionError(f"job still {job['state']} after {bound_seconds} s: {job}")

    async def provider_gone(self, bound_seconds=60):
        """Until no provider run is left (the runner removes its work directory last)."""
        with trio.move_on_after(bound_seconds):
            while any(self.runtime.iterdir()):
                await trio.sleep(0.1)
            return
        raise AssertionError(f"a provider run is still there: {list(self.runtime.iterdir())}")

    async def log_lines(self, job_id):
        _, _, body = await self.api.call("GET", f"/api/v1/jobs/{job_id}/log", role="viewer")
        return [line["line"] for line in body["lines"]]


def runtime_root():
    """A sandbox runtime root the provider's uid can reach (pytest's tmp_path is 0700)."""
    root = Path(tempfile.mkdtemp(prefix="cloudboot-bmc-"))
    os.chmod(root, 0o711)
    return root


async def start_appliance(nursery, folder, master="key-file", run_bmc=True, licensee=""):
    """The appliance; `master` is "key-file", None (no key), or a ready master source.

    Its data directory is `folder`/data, kept if a test prepared it (imported providers).
    """
    data = Path(folder) / "data"
    data.mkdir(mode=0o700, exist_ok=True)
    runtime = runtime_root()
    settings = Settings()
    settings.server.data_dir = str(data)
    settings.server.licensee = licensee
    settings.jobs.bmc_runtime_root = str(runtime)
    # The tests' BMC simulators (sushy-tools, ipmi_sim) listen on loopback.
    settings.jobs.bmc_allow_this_host = True
    store = await open_store(data)
    app = App(store=store, settings=settings)
    key_events = key_audit.ApplianceKeyAudit(data)
    await nursery.start(key_events.run, store)
    if master == "key-file":
        holder = Path(folder) / "keyholder"
        holder.mkdir(mode=0o700)
        master = KeyFileMaster.create(holder / "master.key", key_events, data)
    app.master = master
    app.keyring = Keyring(data, master, key_events, actor="appliance") if master else None

    router = build_router(app)
    bmc_api.register_routes(router, app)
    port = await start_server(nursery, router)
    await nursery.start(engine.run, app)
    if run_bmc:
        await nursery.start(bmc.run, app)
    api = Api(store, app, f"http://127.0.0.1:{port}", await make_tokens(store))
    return Appliance(api, data, runtime)


def remove_runtime(appliance):
    shutil.rmtree(appliance.runtime, ignore_errors=True)


def files_holding(folder, secret):
    """Files under `folder` whose bytes contain `secret` (database, WAL, logs, keyring)."""
    found = []
    for path in Path(folder).rglob("*"):
        if path.is_file() and secret.encode() in path.read_bytes():
            found.append(path)
    return found


def audit_rows(conn, action):
    return conn.execute(
        "SELECT actor, action, resource_id, result, details FROM audit_events WHERE action = ?",
        (action,),
    ).fetchall()
