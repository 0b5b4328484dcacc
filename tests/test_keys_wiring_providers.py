"""`cloudboot provider import|verify|list|remove|run` on packages made by the vendor commands.

Every package here is made the way a vendor makes one: `provider pack`, `vendor keygen`,
`vendor sign` and `vendor stamp`, run as the real `cloudboot` command. Refusals are checked
as an operator meets them (one line, exit status 2, nothing stored) and as the bank's
auditor does (`cloudboot audit query`).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from providers import package as package_module
from tests.conftest import REPO

PROVIDER = "raid-acme"
VENDOR = "Acme Storage"
PROVIDER_CODE = """\
import json, sys
request = json.loads(sys.stdin.readline())
print(json.dumps({"type": "result", "status": "succeeded", "message": "hello",
                  "data": {"action": request["action"]}}), flush=True)
"""


def cloudboot(*args, stdin=""):
    cmd = [sys.executable, "-m", "appliance.cli", *map(str, args)]
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, cwd=REPO, timeout=120)


def ok(*args, stdin=""):
    result = cloudboot(*args, stdin=stdin)
    assert result.returncode == 0, result.stderr
    return result


class Lab:
    """A vendor (keys, a provider folder) and an appliance (data dir, config, runtime root)."""

    def __init__(self, root: Path):
        self.root = root
        # The sandboxed run has its own uid: it must be able to reach the runtime root.
        os.chmod(root, 0o711)
        self.data = root / "data"
        self.runtime = root / "runtime"
        self.config = root / "cloudboot.toml"
        self.config.write_text('[server]\nlicensee = "Bank"\n')
        self.source = root / "src"
        (self.source / "bin").mkdir(parents=True)
        (self.source / "bin" / "provider.py").write_text(PROVIDER_CODE)
        manifest = {
            "schema": "cloudboot.provider/1",
            "name": PROVIDER,
            "version": "1.0.0",
            "vendor": VENDOR,
            "kind": "raid",
            "entry": "bin/provider.py",
            "interpreter": "python3",
        }
        (self.source / "provider.json").write_text(json.dumps(manifest))
        self.vendor = self.keygen("trusted")
        # Trusting the vendor opens the store, which makes the appliance id.
        ok("vendor", "trust", "add", "--data-dir", self.data,
           "--public-key-file", self.vendor["public_key_file"])  # fmt: skip
        self.appliance_id = (self.data / "appliance-id").read_text().strip()

    def keygen(self, folder):
        made = ok("vendor", "keygen", "--vendor", VENDOR, "--out-dir", self.root / folder,
                  "--not-after", "2031-01-01")  # fmt: skip
        return json.loads(made.stdout)

    def package(self, name="good", *, sign_with=None, sign=True, licensee="Bank",
                appliance_ids=None):  # fmt: skip
        """A package file made with the vendor commands; returns its path."""
        packed = self.root / f"{name}.packed.cbp"
        ok("provider", "pack", self.source, "--output", packed)
        key = (sign_with or self.vendor)["secret_key_file"]
        signed = self.root / f"{name}.signed.cbp"
        if sign:
            ok("vendor", "sign", "--key-file", key, "--package", packed, "--output", signed)
        else:
            shutil.copy(packed, signed)
        out = self.root / f"{name}.cbp"
        ok("vendor", "stamp", "--key-file", key, "--package", signed, "--provider", PROVIDER,
           "--licensee", licensee, "--downloader-id", "dl-4711",
           "--appliance-ids", ",".join(appliance_ids or [self.appliance_id]),
           "--expires", "2030-01-01", "--output", out)  # fmt: skip
        return out

    def provider(self, action, *args, stdin=""):
        return cloudboot("provider", action, *args, "--data-dir", self.data,
                         "--config", self.config, stdin=stdin)  # fmt: skip

    def audit(self, action):
        found = ok("audit", "query", "--data-dir", self.data, "--action", action, "--json")
        return [json.loads(line) for line in found.stdout.splitlines()]

    def stored(self):
        folder = self.data / "providers"
        return (
            sorted(str(p.relative_to(folder)) for p in folder.iterdir()) if folder.exists() else []
        )


@pytest.fixture
def lab():
    root = Path(tempfile.mkdtemp(prefix="cloudboot-provider-import-"))
    try:
        yield Lab(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def assert_refused(result, reason):
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"cloudboot: error: refused ({reason}): "), lines[0]
    return lines[0]


def test_a_good_package_imports_and_is_listed_with_its_vendor(lab):
    good = lab.package()

    verified = json.loads(lab.provider("verify", good).stdout)
    assert verified["vendor"] == VENDOR
    assert lab.stored() == []  # verify stores nothing

    imported = lab.provider("import", good)
    assert imported.returncode == 0, imported.stderr
    folder = lab.data / "providers" / PROVIDER / "1.0.0"
    assert (folder / "package.cbp").read_bytes() == good.read_bytes()
    assert (folder / "unpacked" / "bin" / "provider.py").read_text() == PROVIDER_CODE
    assert lab.stored() == [PROVIDER]

    listed = json.loads(lab.provider("list").stdout)
    [entry] = listed["providers"]
    assert (entry["name"], entry["vendor"], entry["licence"]) == (PROVIDER, VENDOR, "ok")
    assert entry["downloader_id"] == "dl-4711"
    assert listed["active_violations"] == []

    [event] = lab.audit("provider.import")
    assert (event["result"], event["resource_id"]) == ("ok", f"{PROVIDER}/1.0.0")
    assert event["details"]["vendor"] == VENDOR

    again = lab.provider("import", good)
    assert_refused(again, "already_imported")


def test_an_imported_package_runs_in_the_sandbox(lab):
    from tests.hostile.support import require_sandbox

    require_sandbox()
    lab.provider("import", lab.package())
    ran = lab.provider(
        "run", PROVIDER, "--runtime-root", lab.runtime, stdin='{"action": "inventory"}'
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    lines = [json.loads(line) for line in ran.stdout.splitlines()]
    assert lines[0]["data"] == {"action": "inventory"}
    assert lines[-1]["status"] == "succeeded"
    # The run used a fresh copy under the runtime root, removed afterwards.
    assert not list(lab.runtime.glob("pkg-*"))
    [event] = lab.audit("provider.run")
    assert event["result"] == "ok"


def _resign_with_bad_signature(path):
    found = package_module.read(path)
    record = json.loads(found.signature)
    signature = bytearray(record["signature"].encode())
    signature[5] = ord("A") if signature[5] != ord("A") else ord("B")
    record["signature"] = signature.decode()
    blob = package_module.encode(
        found.manifest_bytes, found.files, json.dumps(record).encode(), found.watermark
    )
    path.write_bytes(blob)
    return path


def _flip_a_byte_of_the_provider(path):
    blob = bytearray(path.read_bytes())
    blob[blob.index(b"hello")] ^= 0x20
    path.write_bytes(bytes(blob))
    return path


REFUSALS = {
    "unsigned": (lambda lab: lab.package(sign=False), "unsigned"),
    "wrong signature": (lambda lab: _resign_with_bad_signature(lab.package()), "bad_signature"),
    "unknown vendor": (
        lambda lab: lab.package(sign_with=lab.keygen("untrusted")),
        "unknown_vendor",
    ),
    "changed byte": (lambda lab: _flip_a_byte_of_the_provider(lab.package()), "digest_mismatch"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_bad_package_is_refused_stored_nowhere_and_audited(lab, case):
    make, reason = REFUSALS[case]
    bad = make(lab)

    line = assert_refused(lab.provider("import", bad), reason)
    assert lab.stored() == []

    [event] = lab.audit("provider.import")
    assert event["result"] == "denied"
    assert event["details"]["reason"] == reason
    assert event["details"]["message"] in line
    assert event["details"]["file"] == str(bad)


@pytest.mark.parametrize(
    "stamp, why",
    [
        ({"licensee": "Other Bank"}, "foreign licensee"),
        ({"appliance_ids": ["another-appliance"]}, "appliance not listed"),
    ],
)
def test_a_foreign_watermark_is_a_violation_until_removed(lab, stamp, why):
    foreign = lab.package(**stamp)

    line = assert_refused(lab.provider("import", foreign), "watermark_violation")
    assert "will not run" in line
    assert lab.stored() == []

    [violation] = json.loads(lab.provider("list").stdout)["active_violations"]
    assert (violation["provider"], violation["downloader_id"]) == (PROVIDER, "dl-4711")
    assert violation["reason"] == why

    [denied] = lab.audit("provider.import")
    assert denied["result"] == "denied"
    assert denied["details"]["violation_id"] == violation["id"]
    [seen] = lab.audit("key.watermark-violation")
    assert seen["details"]["downloader_id"] == "dl-4711"

    removed = json.loads(lab.provider("remove", PROVIDER).stdout)
    assert removed["violations_resolved"] == [violation["id"]]
    assert json.loads(lab.provider("list").stdout)["active_violations"] == []
    assert [e["result"] for e in lab.audit("key.watermark-violation-resolved")] == ["ok"]


def test_every_run_checks_again_a_revoked_vendor_stops_it(lab):
    lab.provider("import", lab.package())
    ok("vendor", "trust", "revoke", "--data-dir", lab.data,
       "--key-id", lab.vendor["key_id"], "--reason", "key leaked")  # fmt: skip

    ran = lab.provider("run", PROVIDER, "--runtime-root", lab.runtime, stdin="{}")
    assert_refused(ran, "revoked_key")
    [event] = lab.audit("provider.run")
    assert (event["result"], event["details"]["reason"]) == ("denied", "revoked_key")


def test_every_run_checks_again_a_changed_stored_package_stops_it(lab):
    lab.provider("import", lab.package())
    _flip_a_byte_of_the_provider(lab.data / "providers" / PROVIDER / "1.0.0" / "package.cbp")

    ran = lab.provider("run", PROVIDER, "--runtime-root", lab.runtime, stdin="{}")
    assert_refused(ran, "digest_mismatch")
    assert not lab.runtime.exists() or not list(lab.runtime.iterdir())


def test_remove_takes_the_provider_away_and_is_audited(lab):
    lab.provider("import", lab.package())
    removed = json.loads(lab.provider("remove", PROVIDER, "--version", "1.0.0").stdout)
    assert removed["removed"] == [f"{PROVIDER}/1.0.0"]
    assert json.loads(lab.provider("list").stdout)["providers"] == []
    assert lab.audit("provider.remove")[0]["resource_id"] == f"{PROVIDER}/1.0.0"

    gone = lab.provider("remove", PROVIDER)
    assert gone.returncode == 2
    assert gone.stderr.strip() == f"cloudboot: error: provider {PROVIDER} is not imported"


def test_no_licensee_configured_refuses_with_the_setting_named(lab):
    lab.config.write_text("")
    refused = lab.provider("import", lab.package())
    assert "server.licensee is not set" in assert_refused(refused, "no_licensee")


def test_a_vendor_licence_ends_the_violation_and_lets_the_package_in(lab):
    foreign = lab.package(licensee="Other Bank")
    assert_refused(lab.provider("import", foreign), "watermark_violation")

    licence = lab.root / "licence.json"
    ok("vendor", "licence", "--key-file", lab.vendor["secret_key_file"], "--licensee", "Bank",
       "--appliance-ids", lab.appliance_id, "--providers", PROVIDER,
       "--expires", "2030-01-01", "--output", licence)  # fmt: skip
    kept = json.loads(lab.provider("licence", licence).stdout)
    assert len(kept["resolved"]) == 1
    assert json.loads(lab.provider("list").stdout)["active_violations"] == []
    assert lab.audit("provider.licence-import")[0]["result"] == "ok"

    assert lab.provider("import", foreign).returncode == 0


def test_a_licence_for_another_appliance_is_refused_and_audited(lab):
    licence = lab.root / "licence.json"
    ok("vendor", "licence", "--key-file", lab.vendor["secret_key_file"], "--licensee", "Bank",
       "--appliance-ids", "another-appliance", "--providers", PROVIDER,
       "--expires", "2030-01-01", "--output", licence)  # fmt: skip
    assert_refused(lab.provider("licence", licence), "bad_licence")
    assert lab.audit("provider.licence-import")[0]["result"] == "denied"


def test_a_watermark_from_another_trusted_vendor_is_refused(lab):
    made = ok("vendor", "keygen", "--vendor", "Other Vendor", "--out-dir", lab.root / "other",
              "--not-after", "2031-01-01")  # fmt: skip
    other = json.loads(made.stdout)
    ok("vendor", "trust", "add", "--data-dir", lab.data,
       "--public-key-file", other["public_key_file"])  # fmt: skip
    signed = lab.root / "signed.cbp"
    ok("provider", "pack", lab.source, "--output", signed)
    ok("vendor", "sign", "--key-file", lab.vendor["secret_key_file"], "--package", signed,
       "--output", signed)  # fmt: skip
    stamped = lab.root / "stamped.cbp"
    ok("vendor", "stamp", "--key-file", other["secret_key_file"], "--package", signed,
       "--provider", PROVIDER, "--licensee", "Bank", "--downloader-id", "dl-1",
       "--appliance-ids", lab.appliance_id, "--expires", "2030-01-01",
       "--output", stamped)  # fmt: skip

    line = assert_refused(lab.provider("import", stamped), "bad_signature")
    assert "watermarked by 'Other Vendor'" in line
    assert lab.stored() == []
