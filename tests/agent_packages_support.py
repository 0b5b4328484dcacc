"""Helpers for tests/test_agent_packages*.py: a vendor's signed RAID package, imported into
an appliance data directory, and that appliance's API (jobs, machines, agent routes) served
on 127.0.0.1, over plain HTTP and over TLS for the real agent client.

The package is made the way a vendor makes one, with the real commands (`cloudboot
provider pack`, `vendor keygen|sign|stamp`) and imported with `cloudboot provider import`.
Nothing here talks to any address but loopback.
"""

import functools
import json
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass

import requests
import trio

from appliance.api import agent as agent_api
from appliance.api import auth as auth_api
from appliance.config import Settings
from appliance.core.app import App
from appliance.http import certificate_fingerprint, ensure_self_signed, make_ssl_context
from appliance.proto import inventory
from tests.api_support import build_router, make_tokens
from tests.audit_support import open_store
from tests.conftest import REPO
from tests.http_support import start_server

NAME = "acme-raid"
VERSION = "2.1.0"
VENDOR = "Acme RAID"
LICENSEE = "Bank"
AGENT = {"X-CloudBoot-Agent-Protocol": "1"}
# The provider reports what it was asked and the capabilities it holds, then succeeds.
PROVIDER_CODE = """\
import json, sys
request = json.loads(sys.stdin.readline())
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
print(json.dumps({"type": "progress", "percent": 40, "message": "acme controller found"}),
      flush=True)
data = {"by": "acme-raid", "action": request["action"], "params": request["params"],
        "effective": status["CapEff"].strip()}
print(json.dumps({"type": "result", "status": "succeeded", "message": "acme array built",
                  "data": data}), flush=True)
"""
MANIFEST = {
    "schema": "cloudboot.provider/1",
    "name": NAME,
    "version": VERSION,
    "vendor": VENDOR,
    "kind": "raid",
    "entry": "provider.py",
    "interpreter": "python3",
    "protocol": [1],
    "capabilities": {"linux_capabilities": ["CAP_SYS_ADMIN"], "paths": {"read": ["/proc"]}},
}


def cloudboot(*args):
    cmd = [sys.executable, "-m", "appliance.cli", *map(str, args)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def vendor_data_dir(folder):
    """`folder`/data with the vendor trusted and the stamped package imported; returns
    the vendor's key record (key_id, key files)."""
    data = folder / "data"
    vendor = json.loads(cloudboot("vendor", "keygen", "--vendor", VENDOR, "--out-dir",
                                  folder / "vendor", "--not-after", "2031-01-01"))  # fmt: skip
    cloudboot("vendor", "trust", "add", "--data-dir", data,
              "--public-key-file", vendor["public_key_file"])  # fmt: skip
    import_package(folder / "src", data, vendor, MANIFEST, PROVIDER_CODE)
    return vendor


def import_package(source, data, vendor, manifest, code):
    """Pack, sign and stamp a package for this appliance as the vendor, then import it."""
    source.mkdir()
    (source / "provider.json").write_text(json.dumps(manifest))
    (source / "provider.py").write_text(code)
    appliance_id = (data / "appliance-id").read_text().strip()
    name, work = manifest["name"], source.parent
    packed, signed, stamped = (work / f"{name}-{n}.cbp" for n in ("packed", "signed", "stamped"))
    cloudboot("provider", "pack", source, "--output", packed)
    key = vendor["secret_key_file"]
    cloudboot("vendor", "sign", "--key-file", key, "--package", packed, "--output", signed)
    cloudboot("vendor", "stamp", "--key-file", key, "--package", signed, "--provider", name,
              "--licensee", LICENSEE, "--downloader-id", "dl-31", "--appliance-ids",
              appliance_id, "--expires", "2030-01-01", "--output", stamped)  # fmt: skip
    config = work / "cloudboot.toml"
    config.write_text(f'[server]\nlicensee = "{LICENSEE}"\n')
    cloudboot("provider", "import", stamped, "--data-dir", data, "--config", config)


def copy_data_dir(template, folder):
    """A test's own copy of the template's data directory (each test may spoil its copy)."""
    shutil.copytree(template / "data", folder / "data")
    return folder / "data"


def stored_package(data):
    return data / "providers" / NAME / VERSION / "package.cbp"


def flip_a_byte(data):
    path = stored_package(data)
    blob = bytearray(path.read_bytes())
    blob[blob.index(b"acme array built")] ^= 0x20
    path.write_bytes(bytes(blob))


def revoke(data, vendor):
    cloudboot("vendor", "trust", "revoke", "--data-dir", data, "--key-id", vendor["key_id"],
              "--reason", "key leaked")  # fmt: skip


@dataclass
class Appliance:
    store: object
    app: App
    base: str
    tokens: dict
    tls_url: str
    pin: str
    session: requests.Session

    async def request(self, method, path, body=None, token=None, role=None):
        """The requests.Response of one call; `token` an agent's, `role` a user's."""
        headers = {**AGENT, "X-Request-ID": f"pkg-{uuid.uuid4().hex[:12]}"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if role is not None:
            headers["Authorization"] = f"Bearer {self.tokens[role]}"
        data = None if body is None else json.dumps(body)
        if data is not None:
            headers["Content-Type"] = "application/json"
        call = functools.partial(
            self.session.request, method, self.base + path, data=data, headers=headers, timeout=60
        )
        return await trio.to_thread.run_sync(call)

    async def machine(self, mac, serial):
        """Register and approve a machine; returns (machine id, agent token)."""
        answer = await self.request("POST", "/api/v1/agent/register", registration(mac, serial))
        assert answer.status_code == 200, answer.text
        machine, token = answer.json()["machine_id"], answer.json()["token"]
        answer = await self.request("POST", f"/api/v1/machines/{machine}/approve", role="admin")
        assert answer.status_code == 200, answer.text
        return machine, token

    async def raid_job(self, machine, provider=NAME):
        params = {
            "provider": provider,
            "request": {"action": "create", "params": {"level": 1}},
            "allow": {"capabilities": ["CAP_SYS_ADMIN"], "devices": []},
        }
        body = {"machine_id": machine, "kind": "raid", "params": params}
        return await self.request("POST", "/api/v1/jobs", body, role="operator")

    async def hand_out(self, token):
        answer = await self.request("GET", "/api/v1/agent/jobs/next?wait=1", token=token)
        assert answer.status_code == 200, answer.text
        return answer.json()["job"]


def registration(mac, serial):
    document = {
        "schema": inventory.SCHEMA,
        "system": {"manufacturer": "QEMU", "product": "Standard PC", "serial": serial},
        "nics": [{"name": "ens3", "mac": mac, "permanent_mac": mac}],
    }
    return {"protocol": 1, "boot_mac": mac, "pxe_guid": None, "inventory": document}


async def start_appliance(nursery, data, licensee=LICENSEE):
    """The jobs, machines and agent routes on `data`, over HTTP and over TLS."""
    settings = Settings()
    settings.server.data_dir = str(data)
    settings.server.licensee = licensee
    store = await open_store(data)
    app = App(store=store, settings=settings)
    router = build_router(app)
    agent_api.register_routes(router, app)
    auth_api.register_routes(router, app)
    port = await start_server(nursery, router)
    cert, key = ensure_self_signed(data, ["cloudboot"], ["127.0.0.1"])
    tls_port = await start_server(nursery, router, ssl_context=make_ssl_context(cert, key))
    tokens = await make_tokens(store)
    return Appliance(
        store,
        app,
        f"http://127.0.0.1:{port}",
        tokens,
        f"https://127.0.0.1:{tls_port}",
        certificate_fingerprint(cert),
        requests.Session(),
    )


def provider_runs(conn):
    rows = conn.execute(
        "SELECT actor, resource_id, result, details, source FROM audit_events"
        " WHERE action = 'provider.run' ORDER BY id"
    ).fetchall()
    return [(actor, resource, result, json.loads(details), source)
            for actor, resource, result, details, source in rows]  # fmt: skip
