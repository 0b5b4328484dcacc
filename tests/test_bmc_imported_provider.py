"""BMC jobs that name an imported provider package ("provider": NAME) instead of the built-in.

Issue 6: the package is checked again before every run. The package here is made the way a
vendor makes one (`cloudboot provider pack`, `vendor keygen|sign|stamp`, as the real
command) and imported with `cloudboot provider import`; then the appliance runs jobs with
it. A package whose stored bytes changed, whose vendor key was revoked, or whose watermark
names another licensee never runs: the job fails with the reason, the refusal is in the
audit log, and the BMC password is never opened. The stand-in provider contacts nothing:
the BMC's address is 127.0.0.1 on a port nobody listens on.
"""

import json
import sys

import pytest

from tests.bmc_support import remove_runtime, start_appliance
from tests.conftest import REPO
from tests.ipmi_support import free_udp_port

NAME = "acme-bmc"
VENDOR = "Acme BMC"
LICENSEE = "Bank"
PROVIDER_CODE = """\
import json, sys
request = json.loads(sys.stdin.readline())
params = request["params"]
data = {"by": "acme-bmc", "action": request["action"], "password_given": bool(params["password"])}
print(json.dumps({"type": "result", "status": "succeeded", "message": "acme read the BMC",
                  "data": data}), flush=True)
"""
MANIFEST = {
    "schema": "cloudboot.provider/1",
    "name": NAME,
    "version": "1.0.0",
    "vendor": VENDOR,
    "kind": "bmc",
    "entry": "provider.py",
    "interpreter": "python3",
    "protocol": [1],
    "capabilities": {"network": [{"from_job": True}]},
}


def cloudboot(*args):
    import subprocess

    cmd = [sys.executable, "-m", "appliance.cli", *map(str, args)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def vendor_package(folder, data):
    """Make, sign, stamp and import the package into `data`; returns the vendor's key files."""
    source = folder / "src"
    source.mkdir()
    (source / "provider.json").write_text(json.dumps(MANIFEST))
    (source / "provider.py").write_text(PROVIDER_CODE)
    vendor = json.loads(cloudboot("vendor", "keygen", "--vendor", VENDOR, "--out-dir",
                                  folder / "vendor", "--not-after", "2031-01-01"))  # fmt: skip
    cloudboot("vendor", "trust", "add", "--data-dir", data,
              "--public-key-file", vendor["public_key_file"])  # fmt: skip
    appliance_id = (data / "appliance-id").read_text().strip()
    packed, signed, stamped = (folder / f"{n}.cbp" for n in ("packed", "signed", "stamped"))
    cloudboot("provider", "pack", source, "--output", packed)
    key = vendor["secret_key_file"]
    cloudboot("vendor", "sign", "--key-file", key, "--package", packed, "--output", signed)
    cloudboot("vendor", "stamp", "--key-file", key, "--package", signed, "--provider", NAME,
              "--licensee", LICENSEE, "--downloader-id", "dl-77", "--appliance-ids",
              appliance_id, "--expires", "2030-01-01", "--output", stamped)  # fmt: skip
    config = folder / "cloudboot.toml"
    config.write_text(f'[server]\nlicensee = "{LICENSEE}"\n')
    cloudboot("provider", "import", stamped, "--data-dir", data, "--config", config)
    return vendor


def flip_a_byte(data):
    stored = data / "providers" / NAME / "1.0.0" / "package.cbp"
    blob = bytearray(stored.read_bytes())
    blob[blob.index(b"acme read the BMC")] ^= 0x20
    stored.write_bytes(bytes(blob))


def revoke(data, vendor):
    cloudboot("vendor", "trust", "revoke", "--data-dir", data, "--key-id", vendor["key_id"],
              "--reason", "key leaked")  # fmt: skip


async def appliance_with_package(nursery, folder, spoil=None, licensee=LICENSEE):
    data = folder / "data"
    vendor = vendor_package(folder, data)
    if spoil is not None:
        spoil(data, vendor)
    appliance = await start_appliance(nursery, folder, licensee=licensee)
    machine = await appliance.machine()
    body = {"protocol": "ipmi", "address": "127.0.0.1", "port": free_udp_port(),
            "username": "cbadmin", "password": "acme-pass-31"}  # fmt: skip
    status, _, view = await appliance.api.call(
        "PUT", f"/api/v1/machines/{machine}/bmc", body, role="operator"
    )
    assert status == 200, view
    return appliance, machine


def run_events(conn):
    rows = conn.execute(
        "SELECT actor, resource_id, result, details FROM audit_events"
        " WHERE action = 'provider.run' ORDER BY id"
    ).fetchall()
    return [
        (actor, resource, result, json.loads(details)) for actor, resource, result, details in rows
    ]


def unwraps_by(conn, actor):
    return conn.execute(
        "SELECT count(*) FROM audit_events WHERE action = 'key.unwrap' AND actor = ?", (actor,)
    ).fetchone()[0]


@pytest.mark.netns
async def test_an_imported_bmc_provider_runs_after_its_checks(nursery, tmp_path):
    from tests.hostile.support import require_sandbox

    require_sandbox()
    appliance, machine = await appliance_with_package(nursery, tmp_path)

    job = await appliance.job(machine, "power", {"action": "status", "provider": NAME})
    job = await appliance.wait(job["id"])

    assert job["state"] == "succeeded", job
    assert job["result"]["power_state"] == {
        "by": NAME,
        "action": "power_state",
        "password_given": True,
    }
    [(actor, resource, result, details)] = await appliance.store.read(run_events)
    assert (actor, resource, result) == (f"bmc-runner job {job['id']}", NAME, "ok")
    assert details["job_id"] == job["id"]
    # The fresh copy it ran from is gone with the run.
    await appliance.provider_gone()
    remove_runtime(appliance)


SPOILED = {
    "changed byte": (lambda data, vendor: flip_a_byte(data), LICENSEE, "digest_mismatch"),
    "revoked vendor": (revoke, LICENSEE, "revoked_key"),
    "foreign licensee": (None, "Other Bank", "watermark_violation"),
}


@pytest.mark.parametrize("case", list(SPOILED))
async def test_a_package_failing_its_checks_never_runs(nursery, tmp_path, case):
    spoil, licensee, reason = SPOILED[case]
    appliance, machine = await appliance_with_package(nursery, tmp_path, spoil, licensee)

    job = await appliance.job(machine, "power", {"action": "on", "provider": NAME})
    job = await appliance.wait(job["id"])

    assert job["state"] == "failed", job
    assert job["message"].startswith(f"power_on: provider {NAME} refused: "), job["message"]
    assert job["message"].endswith(f"({reason})"), job["message"]
    events = await appliance.store.read(run_events)
    assert [(e[0], e[2], e[3]["reason"]) for e in events] == [
        (f"bmc-runner job {job['id']}", "denied", reason)
    ]
    assert await appliance.store.read(unwraps_by, f"bmc-runner job {job['id']}") == 0
    assert list(appliance.runtime.iterdir()) == []
    remove_runtime(appliance)


async def test_a_provider_not_imported_fails_the_job_clearly(nursery, tmp_path):
    appliance, machine = await appliance_with_package(nursery, tmp_path)

    job = await appliance.job(machine, "boot_pxe", {"provider": "nobody-bmc"})
    job = await appliance.wait(job["id"])

    assert job["state"] == "failed", job
    assert "provider nobody-bmc is not imported" in job["message"]
    assert job["message"].endswith("(not_imported)")
    [(_, resource, result, details)] = await appliance.store.read(run_events)
    assert (resource, result, details["reason"]) == ("nobody-bmc", "denied", "not_imported")
    remove_runtime(appliance)
