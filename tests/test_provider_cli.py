"""`cloudboot provider exec DIR` as a vendor uses it: request in, events and outcome out."""

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from providers import cli, package
from providers.sandbox import _kernel, runner
from tests.conftest import REPO
from tests.hostile.support import make_lab, require_sandbox


@pytest.fixture(scope="module")
def lab():
    require_sandbox()
    made = make_lab()
    yield made
    shutil.rmtree(made.root, ignore_errors=True)


def exec_lines(lab, directory, request_text, grants=None):
    out = io.StringIO()
    settings = runner.SandboxSettings(runtime_root=str(lab.runtime))
    code = cli.cmd_exec(str(directory), io.StringIO(request_text), out, grants, settings)
    return code, [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_good_provider_prints_its_events_result_and_the_run(lab):
    directory = lab.provider("well_behaved")
    code, lines = exec_lines(lab, directory, '{"action": "inventory", "params": {}}')
    assert code == cli.EXIT_SUCCEEDED
    assert [line["type"] for line in lines] == ["progress", "result", "run"]
    run = lines[-1]
    assert run["status"] == "succeeded"
    assert run["protections"]["landlock_fs"] is True
    assert run["limits"]["mechanism"]


def test_a_hostile_provider_shows_its_refusals(lab):
    directory = lab.provider("ptrace_parent")
    request = json.dumps({"action": "x", "params": {"nr": _kernel.syscall_table()}})
    code, lines = exec_lines(lab, directory, request)
    assert code == cli.EXIT_PROVIDER_FAILED
    assert lines[-1]["refusals"][0]["syscall"] == "ptrace"


@pytest.mark.parametrize(
    "request_text, words",
    [
        ("", "no request on stdin"),
        ("{", "request is not JSON"),
        ("[1]", "request must be a JSON object"),
        ('{"protocol": 9}', "request protocol 9 is not supported"),
    ],
)
def test_bad_requests_are_refused_before_anything_runs(lab, request_text, words):
    directory = lab.provider("well_behaved")
    code, lines = exec_lines(lab, directory, request_text)
    assert code == cli.EXIT_BAD_INPUT
    assert lines == [
        {"type": "run", "status": "failed", "reason": "bad_input", "message": lines[0]["message"]}
    ]
    assert words in lines[0]["message"]


def test_a_directory_without_a_manifest_is_a_clear_error(lab, tmp_path):
    code, lines = exec_lines(lab, tmp_path, "{}")
    assert code == cli.EXIT_BAD_INPUT
    assert "cannot read" in lines[0]["message"]


def test_a_packed_and_unpacked_provider_runs_the_same(lab):
    source = lab.provider("shell_well_behaved")
    blob = lab.root / "shell.cbp"
    package.pack(source, blob)
    unpacked = lab.packages / "shell-unpacked"
    package.unpack(blob, unpacked)
    code, lines = exec_lines(lab, unpacked, "{}")
    assert code == cli.EXIT_SUCCEEDED
    assert lines[-2]["message"] == "hello from provider"


@pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox needs root for its namespaces")
def test_cloudboot_provider_exec_runs_the_vendor_workflow():
    folder = REPO / "tests" / "hostile" / "providers" / "well_behaved"
    # The provider runs as a uid of its own: its work directory's parents must
    # be reachable, which pytest's private temporary folders are not.
    runtime = tempfile.mkdtemp(prefix="cloudboot-provider-exec-")
    os.chmod(runtime, 0o755)
    result = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "provider", "exec", str(folder)]
        + ["--runtime-root", runtime],
        input='{"action": "inventory", "params": {}}',
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    shutil.rmtree(runtime, ignore_errors=True)
    assert result.returncode == 0, result.stdout[-2000:]
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[-2]["type"] == "result" and lines[-2]["status"] == "succeeded"
    assert lines[-1]["type"] == "run" and lines[-1]["protections"]["seccomp"] is True
