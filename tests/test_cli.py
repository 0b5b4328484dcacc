"""`cloudboot` start-up errors: one clear line, exit status 2, never a traceback."""

import subprocess
import sys
import uuid

import pytest

from tests.conftest import REPO


def cloudboot(*args, netns=None, timeout=60):
    cmd = [sys.executable, "-m", "appliance.cli", *args]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=timeout)


def assert_one_line_error(result, expected):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("cloudboot: error:")
    assert expected in lines[0]


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
