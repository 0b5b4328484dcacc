"""A small appliance API server for tests and benchmarks that need a separate process.

    python -m tests.api_server DATA_DIR READY_FILE [--machines N] [--tls] [--log-level warning]

Serves the whole REST API (appliance.api.register_routes) with the job
engine on 127.0.0.1 at a free port, plain HTTP (or HTTPS with a self-signed
certificate with --tls, as the appliance serves the API). On first start in DATA_DIR it
makes one user per role and N approved machines, and keeps their tokens and
ids in DATA_DIR/seed.json. When listening it writes {"port", "pid", tokens,
machines} to READY_FILE (atomically), so a test knows where to connect.
Tests SIGKILL it on purpose; it must keep nothing that a restart needs
outside the store and seed.json.
"""

import argparse
import functools
import json
import os
from pathlib import Path

import trio

from appliance import api, log
from appliance.config import Settings
from appliance.core import auth, engine, machines
from appliance.core.app import App
from appliance.http import HttpStats, Router, ensure_self_signed, make_ssl_context, serve
from appliance.proto import inventory
from appliance.proto.agent import validate_registration
from appliance.store import Store

ROLES = ("viewer", "operator", "admin")


def _users(conn, minted):
    for role in ROLES:
        auth.create_user(conn, f"{role}-user", role, actor="seed")
        auth.issue_user_token(conn, f"{role}-user", 30, "seed", minted[role])


async def seed(store, count):
    minted = {role: auth.new_token() for role in ROLES}
    await store.write(_users, minted)

    machine_ids = []
    for index in range(count):
        mac = f"52:54:00:{index >> 16 & 0xFF:02x}:{index >> 8 & 0xFF:02x}:{index & 0xFF:02x}"
        document = {
            "schema": inventory.SCHEMA,
            "system": {
                "manufacturer": "QEMU",
                "product": "Standard PC",
                "serial": f"SN{index:06d}",
            },
            "nics": [{"name": "ens3", "mac": mac, "permanent_mac": mac}],
        }
        registration = validate_registration(
            {"protocol": 1, "boot_mac": mac, "pxe_guid": None, "inventory": document}
        )
        outcome = await machines.register(store, registration, "127.0.0.1", 30)
        await machines.approve(store, outcome["machine_id"], "seed")
        machine_ids.append(outcome["machine_id"])
    return {"tokens": {role: minted[role][0] for role in ROLES}, "machines": machine_ids}


def write_atomically(path, text):
    temporary = Path(f"{path}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


async def main(data_dir, ready_file, machine_count, tls=False):
    settings = Settings()
    settings.server.data_dir = str(data_dir)
    store = await Store.open(Path(data_dir) / "cloudboot.db", settings.store)
    seed_file = Path(data_dir) / "seed.json"
    if not seed_file.exists():
        write_atomically(seed_file, json.dumps(await seed(store, machine_count)))
    seeded = json.loads(seed_file.read_text())

    app = App(store=store, settings=settings)
    router = Router()
    api.register_routes(router, app, lambda: {"jobs": True})

    ssl_context = None
    if tls:
        ssl_context = make_ssl_context(*ensure_self_signed(data_dir, ["localhost"], ["127.0.0.1"]))

    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run, app)
        listeners = await nursery.start(
            functools.partial(
                serve,
                router,
                "127.0.0.1",
                0,
                settings.http,
                ssl_context=ssl_context,
                stats=HttpStats(),
            )
        )
        port = listeners[0].socket.getsockname()[1]
        scheme = "https" if tls else "http"
        ready = {"port": port, "scheme": scheme, "pid": os.getpid(), **seeded}
        write_atomically(ready_file, json.dumps(ready))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("data_dir")
    parser.add_argument("ready_file")
    parser.add_argument("--machines", type=int, default=3)
    parser.add_argument("--tls", action="store_true")
    parser.add_argument("--log-level", default="warning")
    arguments = parser.parse_args()
    log.setup(arguments.log_level)
    trio.run(main, arguments.data_dir, arguments.ready_file, arguments.machines, arguments.tls)
