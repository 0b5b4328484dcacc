"""`cloudboot-agent` as a technician runs it: clear one-line errors, never a traceback."""

import subprocess
import sys

import pytest

from tests.conftest import REPO

PIN = "sha256:" + "ab" * 32


def agent(*args):
    return subprocess.run(
        [sys.executable, "-m", "bootos.agent.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("cmdline", "message"),
    [
        ("quiet console=ttyS0", "kernel command line has no cloudboot.url="),
        (f"cloudboot.url=https://192.0.2.1 cloudboot.fp={PIN}", "no cloudboot.mac="),
        (
            f"cloudboot.url=http://192.0.2.1 cloudboot.fp={PIN} cloudboot.mac=52:54:00:12:34:56",
            "appliance URL must be https://host[:port], got 'http://192.0.2.1'",
        ),
        (
            "cloudboot.url=https://192.0.2.1 cloudboot.fp=md5:00 cloudboot.mac=52:54:00:12:34:56",
            "cloudboot.fp must be sha256:<64 hex>",
        ),
    ],
)
def test_bad_boot_parameters_give_one_clear_line(cmdline, message):
    done = agent("run", "--cmdline", cmdline)

    assert done.returncode == 2
    assert message in done.stdout
    assert done.stdout.startswith("cloudboot-agent: cannot start: ")
    assert "Traceback" not in done.stdout + done.stderr


def test_unknown_subcommand_is_a_usage_error():
    done = agent("frobnicate")

    assert done.returncode == 2
    assert "invalid choice: 'frobnicate'" in done.stderr
    assert "Traceback" not in done.stderr


def test_agent_modules_load_no_server_code():
    code = (
        "import sys, bootos.agent.cli, bootos.agent.runtime, bootos.agent.client; "
        "print(' '.join(sorted(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )

    modules = done.stdout.split()
    assert "bootos.agent.runtime" in modules
    server = [m for m in modules if m.split(".")[0] in ("trio", "h11", "apsw", "cryptography")]
    server += [
        m for m in modules if m.startswith("appliance.") and not m.startswith("appliance.proto")
    ]
    assert server == []
