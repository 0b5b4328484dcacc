"""Key use by `cloudboot keys|vendor` lands in the appliance's audit log (`audit query`).

When the store cannot be opened the events go to <data_dir>/keys/access.log instead,
and the key command still works.
"""

import json
import subprocess
import sys

from keys.audit import AccessLog
from keys.envelope import Keyring
from keys.master import load_master
from tests.conftest import REPO
from tests.test_cli_keys import cloudboot
from tests.test_keys_wiring_readyz import init_dual_control


def ok(*args, stdin=None):
    result = cloudboot(*map(str, args)) if stdin is None else _with_stdin(args, stdin)
    assert result.returncode == 0, result.stderr
    return result


def _with_stdin(args, stdin):
    cmd = [sys.executable, "-m", "appliance.cli", *map(str, args)]
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, cwd=REPO, timeout=60)


def audit_events(data, action):
    found = ok("audit", "query", "--data-dir", data, "--action", action, "--json")
    return [json.loads(line) for line in found.stdout.splitlines()]


def test_init_rotate_and_every_rewrap_are_in_the_audit_log(tmp_path):
    data = tmp_path / "data"
    ok("keys", "init", "--data-dir", data, "--source", "key-file",
       "--key-file", tmp_path / "master.key")  # fmt: skip
    # A data key to re-wrap, made the way the appliance makes one.
    Keyring(data, load_master(data)).seal("backups", b"payload", b"aad", actor="test")
    before = len(AccessLog(data).read())

    ok("keys", "rotate", "--data-dir", data)

    [init] = audit_events(data, "key.init")
    assert init["actor"].startswith("cli:") and init["resource_type"] == "key"
    [rotate] = audit_events(data, "key.rotate")
    assert rotate["details"]["version"] == 2
    assert rotate["resource_id"] == init["resource_id"]  # the master key id
    unwraps = audit_events(data, "key.unwrap")
    assert unwraps and all(e["result"] == "ok" for e in unwraps)
    assert [e["details"]["version"] for e in audit_events(data, "key.wrap")] == [2]
    # The CLI's events went to the store, not to access.log.
    assert len(AccessLog(data).read()) == before


def test_vendor_trust_changes_are_audited_with_the_administrator(tmp_path):
    data, out = tmp_path / "data", tmp_path / "vendor"
    made = json.loads(
        ok("vendor", "keygen", "--vendor", "Inspur", "--out-dir", out,
           "--not-after", "2031-01-01").stdout
    )  # fmt: skip
    ok("vendor", "trust", "add", "--data-dir", data, "--public-key-file", made["public_key_file"])
    ok("vendor", "trust", "revoke", "--data-dir", data, "--key-id", made["key_id"],
       "--reason", "rotated out")  # fmt: skip

    [added] = audit_events(data, "key.vendor-trust-add")
    [revoked] = audit_events(data, "key.vendor-trust-revoke")
    assert added["resource_id"] == revoked["resource_id"] == made["key_id"]
    assert revoked["details"]["reason"] == "rotated out"
    assert revoked["actor"].startswith("cli:")


def test_a_wrong_officer_passphrase_is_a_denied_audit_event(tmp_path):
    data = tmp_path / "data"
    init_dual_control(data)

    # No terminal here: getpass reads the passphrase from stdin.
    refused = _with_stdin(
        ["keys", "unseal", "--data-dir", str(data), "--officers", "bob"], "not bob's phrase\n"
    )
    assert refused.returncode == 2
    assert "Traceback" not in refused.stderr

    [event] = audit_events(data, "key.unseal-refused")
    assert event["result"] == "denied"
    assert event["actor"] == "bob"


def test_when_the_store_cannot_be_opened_events_go_to_access_log(tmp_path):
    data, out = tmp_path / "data", tmp_path / "vendor"
    data.mkdir()
    (data / "cloudboot.db").write_bytes(b"this is not a database" * 100)
    made = json.loads(
        ok("vendor", "keygen", "--vendor", "Inspur", "--out-dir", out,
           "--not-after", "2031-01-01").stdout
    )  # fmt: skip

    ok("vendor", "trust", "add", "--data-dir", data, "--public-key-file", made["public_key_file"])

    [event] = AccessLog(data).read()
    assert (event["action"], event["key_id"]) == ("vendor-trust-add", made["key_id"])
