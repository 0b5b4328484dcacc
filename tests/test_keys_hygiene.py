"""Secrets hygiene: no key in the data directory, the logs or a child's environment."""

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from keys.audit import AccessLog
from keys.dualcontrol import DualControlMaster
from keys.envelope import Keyring
from keys.hygiene import scrub_env, zero
from keys.master import WrappedKey
from tests.conftest import REPO
from tests.keys_support import FAST_LIMITS, OFFICERS, encodings, files_containing, make_key_file


def data_keys(keyring):
    """Every data key in the keyring, unwrapped (the test's view, not the appliance's)."""
    keys = []
    for record in keyring._load()["data_keys"].values():
        wrapped = WrappedKey.from_dict(record["wrapped"])
        keys.append(bytes(keyring.master.unwrap(wrapped, purpose="test", actor="test")))
    return keys


def exercise(keyring):
    before = keyring.seal("backups", b"nightly backup")
    keyring.seal("secrets", b"bmc password")
    keyring.rotate_master(actor="operator")
    assert keyring.open(before) == b"nightly backup"
    keyring.retire(1, actor="operator")


def assert_nowhere(secret, data_dir, log_text):
    assert files_containing(data_dir, secret) == []
    log_bytes = log_text.encode()
    assert not any(form in log_bytes for form in encodings(secret))


def test_key_file_keys_never_reach_the_data_directory_or_logs(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    data_dir, etc = tmp_path / "data", tmp_path / "etc"
    etc.mkdir()
    master = make_key_file(etc, data_dir)
    keyring = Keyring(data_dir, master)

    exercise(keyring)

    master_keys = [bytes(key) for key in master._versions.values()]
    assert master_keys and files_containing(etc, master_keys[0])  # the check can see a key
    for secret in master_keys + data_keys(keyring):
        assert_nowhere(secret, data_dir, caplog.text)
    assert AccessLog(data_dir).read(), "the access log was written and was scanned"


def test_dual_control_keys_and_passphrases_never_reach_disk_or_logs(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    data_dir = tmp_path / "data"
    master = DualControlMaster.create(data_dir, OFFICERS, 2, AccessLog(data_dir), FAST_LIMITS)
    keyring = Keyring(data_dir, master)
    exercise(keyring)

    restarted = DualControlMaster(data_dir, AccessLog(data_dir))
    restarted.unseal("alice", OFFICERS["alice"])
    restarted.unseal("carol", OFFICERS["carol"])
    keks = [bytes(key) for key in restarted._versions.values()]
    phrases = [phrase.encode() for phrase in OFFICERS.values()]
    for secret in keks + data_keys(Keyring(data_dir, restarted)) + phrases:
        assert_nowhere(secret, data_dir, caplog.text)


def environ_after_exec(pid):
    """The child's environment once it runs `sleep` (before exec it is still ours)."""
    for _ in range(500):
        proc = Path(f"/proc/{pid}")
        if (proc / "cmdline").read_bytes().startswith(b"sleep"):
            return (proc / "environ").read_bytes()
        time.sleep(0.01)
    raise AssertionError("the child never started sleep")


def test_children_get_no_secret_in_their_environment(tmp_path):
    pin, phrase = "4242-secret-pin", "officer passphrase value"
    env = {
        **os.environ,
        "CLOUDBOOT_PKCS11_PIN": pin,
        "CLOUDBOOT_OFFICER_PASSPHRASE": phrase,
        "SOFTHSM2_CONF": str(tmp_path / "softhsm2.conf"),
        "BMC_PASSWORD": "calvin-calvin",
        "API_TOKEN": "tok-123456",
    }
    child = subprocess.Popen(["sleep", "30"], env=scrub_env(env))
    try:
        environ = environ_after_exec(child.pid)
    finally:
        child.kill()
        child.wait()
    for secret in (pin, phrase, "softhsm2.conf", "calvin-calvin", "tok-123456"):
        assert secret.encode() not in environ
    assert b"PATH=" in environ


def test_harden_process_turns_core_dumps_off():
    probe = (
        "import ctypes, json, resource\n"
        "from keys.hygiene import harden_process\n"
        "harden_process()\n"
        "libc = ctypes.CDLL(None)\n"
        "core = resource.getrlimit(resource.RLIMIT_CORE)\n"
        "print(json.dumps([core, libc.prctl(3, 0, 0, 0, 0)]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    # RLIMIT_CORE is (0, 0) and PR_GET_DUMPABLE (3) answers 0.
    assert result.stdout.strip() == "[[0, 0], 0]"


def test_zero_overwrites_in_place():
    key = bytearray(b"\x01" * 32)
    view = key
    zero(key)
    assert view == bytearray(32)
