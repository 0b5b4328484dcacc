"""Adversarial review of the provider sandbox: escapes the hostile suite did not try.

Providers live in tests/breakage2_providers; like tests/hostile, each reports "succeeded"
only when its attack worked.
"""

import json
import os
import secrets
import shutil
from pathlib import Path

import pytest

from providers import manifest, protocol
from providers.sandbox import limits, runner
from tests.hostile.support import make_lab, require_sandbox

PROVIDERS = Path(__file__).parent / "breakage2_providers"


@pytest.fixture(scope="module")
def lab():
    require_sandbox()
    made = make_lab()
    yield made
    shutil.rmtree(made.root, ignore_errors=True)


def run(lab, name, params=None, grants=None, devices=None):
    target = lab.packages / name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(PROVIDERS / name, target)
    if devices is not None:
        document = json.loads((target / "provider.json").read_text())
        document["capabilities"] = {"devices": [{"path": d, "ioctl": False} for d in devices]}
        (target / "provider.json").write_text(json.dumps(document))
    for path in [target, *target.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    return lab.run_directory(target, params, grants)


def test_the_provider_cannot_write_into_the_runners_report(lab):
    result = run(lab, "report_forge")

    assert result.status == "failed", result.to_dict()
    assert result.reason == "provider_failed", result.to_dict()
    assert result.data["fds"] == []
    assert "FORGED" not in repr(result.to_dict())
    assert result.protections["seccomp"] is True


def test_a_program_written_into_a_memfd_cannot_be_run(lab):
    result = run(lab, "memfd_exec")

    assert result.status == "failed", result.to_dict()
    assert result.reason == "provider_failed", result.to_dict()
    assert "memfd_create" in [r["syscall"] for r in result.refusals], result.refusals


def _supervisor():
    found = manifest.parse((PROVIDERS / "report_forge" / "provider.json").read_text())
    return runner._Supervisor({}, {}, found.limits, limits, None, None)


def test_malformed_report_lines_neither_raise_nor_grow_without_bound():
    supervisor = _supervisor()

    supervisor._on_report(b'[]\n{}\n"text"\n{"event": "exit", "code": 3}\n')
    assert supervisor.exit_code == 3

    for _ in range(3):
        supervisor._on_report(b"x" * (runner.REPORT_LINE_LIMIT // 2 + 1))
    assert len(supervisor.report_buffer) <= runner.REPORT_LINE_LIMIT


@pytest.fixture
def plain_file_under_dev():
    """A secret in an ordinary file under /dev (where /dev/shm lets any user put one)."""
    path = Path(f"/dev/shm/cloudboot-breakage2-{secrets.token_hex(4)}")
    path.write_text(SECRET)
    os.chown(path, 0, 4242)  # a group no provider is in, as a secret's group would be
    os.chmod(path, 0o640)
    yield path
    path.unlink(missing_ok=True)


SECRET = "NOT-A-DEVICE-SECRET-8d1f"


@pytest.mark.parametrize("via_symlink", [False, True])
def test_a_granted_device_that_is_not_a_device_is_refused(lab, plain_file_under_dev, via_symlink):
    path = plain_file_under_dev
    if via_symlink:
        path = path.with_name(path.name + "-link")
        path.symlink_to(plain_file_under_dev)
    try:
        result = run(
            lab,
            "read_granted_path",
            {"path": str(path)},
            grants={"devices": [str(path)]},
            devices=[str(path)],
        )
    finally:
        if via_symlink:
            path.unlink()

    assert result.status == "failed", result.to_dict()
    assert result.reason == "sandbox_setup_failed", result.to_dict()
    assert "is not a device node" in result.message
    assert SECRET not in repr(result.to_dict())


def test_a_relative_runtime_root_still_gives_a_writable_work_directory(lab, monkeypatch):
    target = lab.provider("well_behaved")
    monkeypatch.chdir(lab.root)

    found = manifest.load(target)
    request = protocol.make_request("inventory")
    settings = runner.SandboxSettings(runtime_root="runtime")
    result = runner.run(target, found, request, settings=settings)

    assert result.status == "succeeded", result.to_dict()
