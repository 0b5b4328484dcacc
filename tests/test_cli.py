"""`cloudboot` start-up errors: one clear line, exit status 2, never a traceback."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
import trio

from appliance.store import Store
from tests.conftest import REPO


def cloudboot(*args, netns=None, timeout=60):
    cmd = [sys.executable, "-m", "appliance.cli", *args]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=timeout)


def assert_one_line_error(result, expected):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    # Log lines may come first (the store opened, say); the error is one line, last.
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("cloudboot: error:")]
    assert errors == [lines[-1]], result.stderr
    assert expected in lines[-1]


def test_no_such_interface(tmp_path):
    result = cloudboot("serve", "--interface", "nosuch0", "--data-dir", str(tmp_path))
    assert_one_line_error(result, "no such network interface 'nosuch0'")


def test_data_dir_not_writable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = cloudboot("serve", "--interface", "lo", "--data-dir", str(blocker / "data"))
    assert_one_line_error(result, "is not writable")


def test_serve_needs_an_interface(tmp_path):
    result = cloudboot("serve", "--data-dir", str(tmp_path))
    assert_one_line_error(result, "serve needs --interface")


def test_bad_configuration_file(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("[tftp]\nmax_transfer = 10\n")
    result = cloudboot("serve", "--interface", "lo", "--config", str(config))
    assert_one_line_error(result, "unknown setting tftp.max_transfer")


@pytest.mark.netns
def test_interface_without_ipv4(tmp_path):
    name = f"cbt-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        # A new namespace's loopback has no address until it is brought up.
        result = cloudboot("serve", "--interface", "lo", "--data-dir", str(tmp_path), netns=name)
        assert_one_line_error(result, "interface 'lo' has no IPv4 address")
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def high_port_config(tmp_path, **ports):
    lines = ["[dhcp]", "enabled = false", "[tftp]", "enabled = false", "[server]"]
    lines += [f"{name} = {value}" for name, value in ports.items()]
    path = tmp_path / "ports.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_port_already_in_use(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = high_port_config(tmp_path, http_port=port, https_port=port + 1)
        result = cloudboot(
            "serve",
            "--interface",
            "lo",
            "--data-dir",
            str(tmp_path / "d"),
            "--config",
            str(config),
        )
    assert_one_line_error(result, f"HTTP: port {port}/tcp is already in use")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_not_permitted_to_bind():
    # pytest's own temporary folders are private to root; the unprivileged
    # user needs a folder it can reach.
    base = Path(tempfile.mkdtemp(prefix="cloudboot-cli-"))
    base.chmod(0o755)
    data = base / "d"
    data.mkdir()
    data.chmod(0o777)
    config = high_port_config(base, http_port=80, https_port=443)
    config.chmod(0o644)
    cmd = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    result = subprocess.run(
        [*cmd, sys.executable, "-m", "appliance.cli", "serve", "--interface", "lo"]
        + ["--data-dir", str(data), "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    shutil.rmtree(base)
    assert_one_line_error(result, "not permitted to bind port 80/tcp")


def test_commands_beside_the_appliance_refuse_a_data_dir_without_its_database(tmp_path):
    # A forgotten or mistyped --data-dir must not become a new, empty appliance whose
    # tokens work nowhere (the default /var/lib/cloudboot, for one).
    data = tmp_path / "nowhere" / "data"
    for command in (
        ("token", "issue", "--role", "admin"),
        ("backup", "create"),
        ("audit", "query"),
    ):
        result = cloudboot(*command, "--data-dir", str(data))
        assert_one_line_error(result, "no appliance database")
    assert not (tmp_path / "nowhere").exists()


def first_start(data):
    """The database as `cloudboot serve` leaves it after its first start."""

    async def make():
        store = await Store.open(data / "cloudboot.db")
        await store.close()

    data.mkdir(mode=0o700)
    trio.run(make)


def test_audit_and_backup_commands_on_a_fresh_data_dir(tmp_path):
    data = tmp_path / "data"
    first_start(data)
    issued = cloudboot("token", "issue", "--role", "admin", "--data-dir", str(data))
    assert issued.returncode == 0, issued.stderr

    created = cloudboot("backup", "create", "--data-dir", str(data), "--json")
    assert created.returncode == 0, created.stderr
    listed = cloudboot("backup", "list", "--data-dir", str(data))
    assert listed.returncode == 0, listed.stderr

    verified = cloudboot("audit", "verify", "--data-dir", str(data))
    assert verified.returncode == 0, verified.stderr
    query = cloudboot("audit", "query", "--data-dir", str(data), "--json")
    assert "token.issue" in query.stdout or "token" in query.stdout, query.stdout

    missing = cloudboot("backup", "verify", "--data-dir", str(data), "no-such-backup")
    assert_one_line_error(missing, "")


def test_serve_refuses_a_retention_below_180_days(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("[audit]\nretention_days = 30\n")
    result = cloudboot(
        "serve", "--interface", "lo", "--data-dir", str(tmp_path / "d"), "--config", str(config)
    )
    assert_one_line_error(result, "180")
