"""Master key in a real SoftHSM2 token made by the test, driven through python-pkcs11."""

import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.keys_support import files_containing

LIBRARY = Path("/usr/lib/softhsm/libsofthsm2.so")
SCENARIO = REPO / "tests" / "keys_pkcs11_scenario.py"

pytestmark = pytest.mark.skipif(
    not LIBRARY.exists() or shutil.which("softhsm2-util") is None,
    reason="SoftHSM2 is not installed (apt-get install softhsm2)",
)
pytest.importorskip("pkcs11", reason="python-pkcs11 is not installed")


@pytest.fixture
def token(tmp_path):
    """A fresh SoftHSM2 token in tmp_path; returns (environment, label, pin file)."""
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n")
    env = {**os.environ, "SOFTHSM2_CONF": str(conf), "PYTHONPATH": str(REPO)}
    label = f"cb-{secrets.token_hex(3)}"
    pin = secrets.token_hex(8)
    subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            label,
            "--so-pin",
            secrets.token_hex(8),
            "--pin",
            pin,
        ],
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    secrets_dir = tmp_path / "etc"
    secrets_dir.mkdir()
    pin_file = secrets_dir / "token.pin"
    pin_file.write_text(pin + "\n")
    pin_file.chmod(0o400)
    return env, label, pin_file, tokens


def run(scenario, env, data_dir, label, pin_file, blob_file):
    result = subprocess.run(
        [
            sys.executable,
            str(SCENARIO),
            scenario,
            str(data_dir),
            label,
            str(pin_file),
            str(blob_file),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0 and lines, result.stderr
    return json.loads(lines[-1].removeprefix("RESULT "))


def test_key_stays_in_the_token_and_survives_rotation(tmp_path, token):
    env, label, pin_file, tokens = token
    data_dir, blobs = tmp_path / "data", tmp_path / "blobs"

    outcome = run("lifecycle", env, data_dir, label, pin_file, blobs)
    assert outcome["extractable"] is False and outcome["sensitive"] is True
    assert outcome["value_readable"] is False
    assert outcome["label"] == "cloudboot-master-v1"
    assert outcome["rotated"]["version"] == 2 and outcome["rotated"]["rewrapped"] == 1
    assert outcome["versions"] == [2]
    assert outcome["opened"] == ["backup before rotation", "backup after rotation"]

    # A new process (the appliance after a restart) opens both backups through the token.
    again = run("reopen", env, data_dir, label, pin_file, blobs)
    assert again["opened"] == outcome["opened"]

    # The PIN is nowhere in the data directory.
    assert files_containing(data_dir, pin_file.read_text().strip().encode()) == []
    config = json.loads((data_dir / "keys" / "master.json").read_text())
    assert config["source"] == "pkcs11" and "pin" not in config


def test_wrong_pin_is_a_clear_error(tmp_path, token):
    env, label, pin_file, _ = token
    data_dir = tmp_path / "data"
    run("lifecycle", env, data_dir, label, pin_file, tmp_path / "blobs")
    pin_file.chmod(0o600)
    pin_file.write_text("00000000\n")
    outcome = run("open", env, data_dir, label, pin_file, tmp_path / "blobs")
    assert outcome == {"error": f"the PIN for PKCS#11 token {label!r} is wrong"}


def test_pin_file_readable_by_others_is_refused(tmp_path, token):
    env, label, pin_file, _ = token
    pin_file.chmod(0o644)
    outcome = run("lifecycle", env, tmp_path / "data", label, pin_file, tmp_path / "blobs")
    assert "mode 0644" in outcome["error"] and "PIN file" in outcome["error"]


def test_unknown_token_is_a_clear_error(tmp_path, token):
    env, _, pin_file, _ = token
    outcome = run("lifecycle", env, tmp_path / "data", "no-such-token", pin_file, tmp_path / "b")
    assert outcome == {"error": f"no PKCS#11 token labelled 'no-such-token' in {LIBRARY}"}
