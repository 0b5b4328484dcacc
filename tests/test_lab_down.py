"""`build.py lab --down` removes exactly what the lab recorded, and is safe to run twice."""

import json
import secrets
import subprocess
import uuid

import pytest

from lab import netns, run
from tests import vmlab

pytestmark = pytest.mark.netns


def test_down_stops_recorded_processes_and_deletes_namespaces(tmp_path):
    vmlab.require_root_and("ip", "sleep")
    names = [f"cbl-{secrets.token_hex(3)}", f"cbl-{secrets.token_hex(3)}-d"]
    for name in names:
        netns.create(name)
    sleeper = subprocess.Popen(["sleep", "600"])
    stranger = subprocess.Popen(["sleep", "601"])
    try:
        lab_dir = tmp_path / ".lab"
        lab_dir.mkdir()
        (lab_dir / "vm-x.log").write_text("console\n")
        cmdline = run._cmdline(sleeper.pid)
        state = {
            "netns": names,
            # The stranger's pid is recorded with another command line, as a
            # reused pid would be: down must leave it alone.
            "pids": {"vm-x": sleeper.pid, "old": stranger.pid},
            "cmdlines": {"vm-x": cmdline, "old": "qemu-system-x86_64\0-name\0old\0"},
        }
        (lab_dir / "state.json").write_text(json.dumps(state))

        assert run.down(tmp_path, default_netns=names) == 0

        assert sleeper.wait(timeout=5) is not None
        assert stranger.poll() is None
        assert not any(netns.exists(name) for name in names)
        assert not lab_dir.exists()
        assert run.down(tmp_path, default_netns=names) == 0
    finally:
        for process in (sleeper, stranger):
            process.kill()
            process.wait()
        for name in names:
            netns.delete(name)


@pytest.mark.netns
def test_down_from_another_checkout_leaves_a_running_lab_alone(tmp_path, monkeypatch):
    name = f"cbt-own-{uuid.uuid4().hex[:6]}"
    monkeypatch.setattr(run, "NETNS", name)
    monkeypatch.setattr(run, "DHCP_NETNS", name + "-d")
    monkeypatch.setattr(run, "OWNER_FILE", tmp_path / "owner")
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    (tmp_path / "owner").write_text(f"{first.resolve()}\n")
    netns.create(name)
    try:
        assert run.down(second) == 1
        assert netns.exists(name)
        assert run.up(second, machines=1) == 1
        assert netns.exists(name)
    finally:
        netns.delete(name)
