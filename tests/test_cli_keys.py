"""`cloudboot keys` and `cloudboot vendor` reach keys/cli.py with the right arguments."""

import json
import subprocess
import sys

from tests.conftest import REPO


def cloudboot(*args):
    cmd = [sys.executable, "-m", "appliance.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=60)


def test_key_file_init_status_and_refusal(tmp_path):
    data, key = tmp_path / "data", tmp_path / "master.key"
    first = cloudboot(
        "keys", "init", "--data-dir", str(data), "--source", "key-file", "--key-file", str(key)
    )
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["sealed"] is False
    assert key.stat().st_mode & 0o777 == 0o400

    status = cloudboot("keys", "status", "--data-dir", str(data))
    assert json.loads(status.stdout)["master"]["source"] == "key-file"

    again = cloudboot(
        "keys", "init", "--data-dir", str(data), "--source", "key-file", "--key-file", str(key)
    )
    assert again.returncode == 2
    assert again.stderr.startswith("cloudboot: error: keys are already initialised")
    assert "Traceback" not in again.stderr


def test_vendor_key_trusted_then_revoked(tmp_path):
    data, out = tmp_path / "data", tmp_path / "vendor"
    made = json.loads(
        cloudboot(
            "vendor",
            "keygen",
            "--vendor",
            "Inspur",
            "--out-dir",
            str(out),
            "--not-after",
            "2031-01-01",
        ).stdout
    )
    added = cloudboot(
        "vendor",
        "trust",
        "add",
        "--data-dir",
        str(data),
        "--public-key-file",
        made["public_key_file"],
    )
    assert added.returncode == 0, added.stderr

    listed = json.loads(cloudboot("vendor", "trust", "list", "--data-dir", str(data)).stdout)
    assert [entry["key_id"] for entry in listed] == [made["key_id"]]

    revoked = cloudboot(
        "vendor",
        "trust",
        "revoke",
        "--data-dir",
        str(data),
        "--key-id",
        made["key_id"],
        "--reason",
        "test",
    )
    assert revoked.returncode == 0, revoked.stderr
