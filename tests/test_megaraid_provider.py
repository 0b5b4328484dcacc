"""The MegaRAID provider end to end: its entry point, a stand-in storcli replaying real output.

Each scenario gives the stand-in exactly the command lines the provider should run; any
other line makes the stand-in fail loudly, so a passing test proves the command built. The
fast tests run provider.py directly (python3 -I, as the sandbox does); the sandbox tests
run it through the real runner and through `cloudboot provider exec`.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from providers import manifest, protocol
from providers import package as pack
from providers.sandbox import runner
from tests.hostile.support import make_lab, require_sandbox
from tests.storcli_standin import support as standin

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "providers" / "megaraid"
HPE = "call-show-all-J__hpe-mr216i-a-gen10plus.json"
PERC = "perccli-call-show-all-J__perc-h345-front.json"
RS3DC080 = "c0-show-J__intel-rs3dc080__3vd-36pd.json"
ADD_RAID10 = "/c0 add vd type=raid10 drives=35:12-15 pdperarray=2 J"
RAID10_REQUEST = {
    "controller": 0,
    "raid_level": 10,
    "drives": ["35:12", "35:13", "35:14", "35:15"],
}


def copy_package(target):
    shutil.copytree(SOURCE, target, ignore=shutil.ignore_patterns("__pycache__"))
    for path in [target, *target.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() or path.suffix == "" else 0o644)
    return target


def storcli_dir(corpus):
    return corpus / "storcli"


def run_provider(package, action, params, path_env="/usr/bin:/bin"):
    """provider.py the way the sandbox starts it; returns (events, result)."""
    request = json.dumps(protocol.make_request(action, params, "job-megaraid"))
    env = {"PATH": path_env, "CLOUDBOOT_PACKAGE_DIR": str(package), "LANG": "C.UTF-8"}
    done = subprocess.run(
        ["/usr/bin/python3", "-I", "-B", str(package / "provider.py")],
        input=request.encode() + b"\n",
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    output = protocol.OutputParser()
    events = output.feed(done.stdout)
    assert events and events[-1]["type"] == "result", done.stdout
    assert [e["type"] for e in events].count("result") == 1
    return events, events[-1]


@pytest.fixture
def package(tmp_path):
    return copy_package(tmp_path / "megaraid")


def test_inventory_hpe_storcli64_in_package_bin(package, corpus):
    standin.make_bin(package / "bin", {"/call show all J": HPE}, storcli_dir(corpus))
    events, result = run_provider(package, "inventory", {})

    assert result["status"] == "succeeded", result
    assert result["message"] == "1 controller"
    data = result["data"]
    assert data["tool"] == {"name": "storcli64", "path": str(package / "bin" / "storcli64")}
    assert data["commands"] == ["storcli64 /call show all J"]
    assert data["cli_version"] == "007.2408.0000.0000 Nov 15, 2022"
    [controller] = data["controllers"]
    assert (controller["model"], controller["serial"]) == ("HPE MR216i-a Gen10+", "PXBSA0PLACEH01")
    assert controller["virtual_drives"][0]["name"] == "NVMe-RAID-1"
    assert [d["position"] for d in controller["physical_drives"]] == ["251:1", "251:2"]
    assert any(e["type"] == "progress" for e in events)


def test_inventory_perccli64_found_on_path(package, corpus, tmp_path):
    fake_path = tmp_path / "fake-sbin"
    tool = standin.make_bin(
        fake_path, {"/call show all J": PERC}, storcli_dir(corpus), "perccli64"
    )
    _, result = run_provider(package, "inventory", {}, path_env=f"/usr/bin:{fake_path}")

    assert result["status"] == "succeeded", result
    assert result["data"]["tool"] == {"name": "perccli64", "path": str(tool)}
    assert result["data"]["commands"] == ["perccli64 /call show all J"]
    [controller] = result["data"]["controllers"]
    assert controller["model"] == "PERC H345 Front"
    assert controller["roc_temperature_c"] == 43
    assert controller["cache_vault"] is None


def test_inventory_no_controller_found_is_an_empty_list(package, corpus):
    name = "perccli-call-show-all-J__failure-no-controller-found.json"
    standin.make_bin(package / "bin", {"/call show all J": name}, storcli_dir(corpus), "perccli")
    _, result = run_provider(package, "inventory", {})

    assert result["status"] == "succeeded", result
    assert result["message"] == "0 controllers"
    assert result["data"]["controllers"] == []
    assert result["data"]["tool"]["name"] == "perccli"


def test_create_raid10_runs_the_exact_command(package, corpus):
    commands = {
        "/c0 show J": RS3DC080,
        ADD_RAID10: standin.synthesized("Add VD Succeeded."),
    }
    standin.make_bin(package / "bin", commands, storcli_dir(corpus))
    events, result = run_provider(package, "create_vd", RAID10_REQUEST)

    assert result["status"] == "succeeded", result
    assert result["data"]["commands"] == ["storcli64 /c0 show J", f"storcli64 {ADD_RAID10}"]
    assert result["data"]["command"] == f"storcli64 {ADD_RAID10}"
    assert result["data"]["warnings"] == []
    percents = [e["percent"] for e in events if e["type"] == "progress"]
    assert percents == sorted(percents)


def test_create_vd_failure_with_data_warns_and_goes_on(package, corpus):
    errcd59 = "c0-show-J__status-failure-errcd59-incomplete-foreign-config-with-response-data.json"
    commands = {"/c0 show J": errcd59, ADD_RAID10: standin.synthesized("Add VD Succeeded.")}
    standin.make_bin(package / "bin", commands, storcli_dir(corpus))
    events, result = run_provider(package, "create_vd", RAID10_REQUEST)

    assert result["status"] == "succeeded", result
    assert "1 warning" in result["message"]
    [warning] = result["data"]["warnings"]
    assert "ErrCd 59" in warning and "Incomplete foreign configuration" in warning
    assert any(e["type"] == "log" and e["level"] == "warning" for e in events)


def test_create_vd_on_a_missing_controller(package, corpus):
    missing = "c0-show-J__failure-controller-0-not-found.json"
    standin.make_bin(package / "bin", {"/c0 show J": missing}, storcli_dir(corpus))
    _, result = run_provider(package, "create_vd", RAID10_REQUEST)

    assert result["status"] == "failed"
    assert result["message"] == "controller 0 not found"


def test_create_vd_on_an_it_mode_hba_is_refused(package, corpus):
    lsi = "c0-show-J__lsi3008-it-hba-12-sata-hdd__supermicro-x11dph-t.json"
    standin.make_bin(package / "bin", {"/c0 show J": lsi}, storcli_dir(corpus))
    params = {"controller": 0, "raid_level": 1, "drives": ["12:0", "12:1"]}
    _, result = run_provider(package, "create_vd", params)

    assert result["status"] == "failed"
    assert "LSI3008-IT" in result["message"] and "no RAID support" in result["message"]
    assert result["data"]["commands"] == ["storcli64 /c0 show J"]


def test_create_vd_refuses_a_drive_in_use(package, corpus):
    standin.make_bin(package / "bin", {"/c0 show J": RS3DC080}, storcli_dir(corpus))
    params = {"controller": 0, "raid_level": 1, "drives": ["35:12", "35:40"]}
    _, result = run_provider(package, "create_vd", params)

    assert result["status"] == "failed"
    assert result["message"] == "drive 35:40 is not on controller 0"


def test_odd_raid10_is_refused_before_the_tool_runs(package, corpus):
    standin.make_bin(package / "bin", {}, storcli_dir(corpus))
    params = {**RAID10_REQUEST, "drives": ["35:12", "35:13", "35:14"]}
    _, result = run_provider(package, "create_vd", params)

    assert result["status"] == "failed"
    assert result["message"] == "RAID 10 needs an even number of drives, got 3"
    assert result["data"]["commands"] == []


def test_add_vd_failure_reports_the_error_code(package, corpus):
    details = [{"VD": "14.551 TB", "ErrCd": 255, "Status": "Failed", "ErrMsg": "Add VD Failed."}]
    refusal = standin.synthesized("Invalid input.", status="Failure", details=details, exit_code=1)
    standin.make_bin(
        package / "bin", {"/c0 show J": RS3DC080, ADD_RAID10: refusal}, storcli_dir(corpus)
    )
    _, result = run_provider(package, "create_vd", RAID10_REQUEST)

    assert result["status"] == "failed"
    assert result["message"] == "Invalid input.; VD 14.551 TB: ErrCd 255 Add VD Failed."


def test_set_good_failure_names_errcd_255(package, corpus):
    failure = "c0-e252-s7-set-good-J__failure-errcd255-operation-not-allowed.json"
    standin.make_bin(package / "bin", {"/c0/e252/s7 set good J": failure}, storcli_dir(corpus))
    _, result = run_provider(package, "set_good", {"controller": 0, "drives": ["252:7"]})

    assert result["status"] == "failed"
    assert result["message"] == (
        "Set Drive Good Failed.; Drive /c0/e252/s7: ErrCd 255 Operation not allowed."
    )


def test_set_jbod_one_command_per_drive(package, corpus):
    done = standin.synthesized("Set Drive JBOD Succeeded.")
    commands = {"/c0/e252/s0 set jbod J": done, "/c0/e252/s1 set jbod J": done}
    standin.make_bin(package / "bin", commands, storcli_dir(corpus))
    _, result = run_provider(package, "set_jbod", {"controller": 0, "drives": ["252:0", "252:1"]})

    assert result["status"] == "succeeded", result
    assert result["data"]["commands"] == [f"storcli64 {line}" for line in commands]


def test_delete_vd_reads_it_first(package, corpus):
    commands = {
        "/c0/v1 show J": "c0-v1-show-J__raid1-vd.json",
        "/c0/v1 del J": standin.synthesized("Delete VD succeeded"),
    }
    standin.make_bin(package / "bin", commands, storcli_dir(corpus))
    _, result = run_provider(package, "delete_vd", {"controller": 0, "vd": 1})

    assert result["status"] == "succeeded", result
    [deleted] = result["data"]["deleted"]
    assert (deleted["name"], deleted["size"]) == ("create_vd_raid1", "7.275 TB")


def test_clear_foreign_raid60(package, corpus):
    commands = {
        "/c0/fall show J": "c0-fall-show-J__foreign-raid60-config.json",
        "/c0/fall delete J": standin.synthesized("Successfully deleted foreign configuration"),
    }
    standin.make_bin(package / "bin", commands, storcli_dir(corpus))
    _, result = run_provider(package, "clear_foreign", {"controller": 0})

    assert result["status"] == "succeeded", result
    assert result["message"] == "controller 0: 1 foreign group(s) cleared"
    assert result["data"]["cleared"][0]["raid_type"] == "RAID60"


def test_unknown_command_line_fails_loudly(package, corpus):
    standin.make_bin(package / "bin", {"/c0 show J": RS3DC080}, storcli_dir(corpus))
    _, result = run_provider(package, "inventory", {})

    assert result["status"] == "failed"
    assert "storcli64 /call show all J: exit status 2" in result["message"]
    assert "unknown command line '/call show all J'" in result["message"]


def test_no_tool_installed(package):
    _, result = run_provider(package, "inventory", {}, path_env="/nonexistent")
    assert result["status"] == "failed"
    assert result["message"].startswith("none of storcli64, storcli, perccli64, perccli found")
    assert result["data"]["tool"] is None


@pytest.mark.parametrize(
    "stdin, expected",
    [
        (b"not json\n", "the request is not JSON"),
        (b'{"action": "format_everything", "params": {}}\n', "unknown action 'format_everything'"),
        (b'{"action": "inventory", "params": []}\n', "object params"),
    ],
)
def test_bad_requests_get_a_failed_result(package, stdin, expected):
    done = subprocess.run(
        [sys.executable, "-I", "-B", str(package / "provider.py")],
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
    )
    [result] = protocol.OutputParser().feed(done.stdout)
    assert result["status"] == "failed"
    assert expected in result["message"]
    assert done.stderr == b""


# --- through the real sandbox (root) ---


@pytest.fixture
def lab():
    require_sandbox()
    made = make_lab()
    yield made
    shutil.rmtree(made.root, ignore_errors=True)


def sandboxed_package(lab, corpus, commands):
    """The provider and a stand-in bin/ in the lab: the sandbox reads only the package."""
    package = copy_package(lab.packages / "megaraid")
    standin.make_bin(package / "bin", commands, storcli_dir(corpus), copy_corpus=True)
    for path in [package, *package.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() or path.name == "storcli64" else 0o644)
    return package


def test_sandboxed_inventory(lab, corpus):
    package = sandboxed_package(lab, corpus, {"/call show all J": HPE})
    request = protocol.make_request("inventory", {}, "job-sandbox-inventory")
    settings = runner.SandboxSettings(runtime_root=str(lab.runtime))
    result = runner.run(package, manifest.load(package), request, None, settings)

    assert result.status == "succeeded", (result.message, result.stderr)
    assert result.protections["seccomp"] and result.protections["landlock_abi"] >= 1
    assert result.data["tool"]["path"] == str(package / "bin" / "storcli64")
    [controller] = result.data["controllers"]
    assert controller["model"] == "HPE MR216i-a Gen10+"
    assert controller["roc_temperature_c"] == 49


def test_sandboxed_create_vd(lab, corpus):
    commands = {"/c0 show J": RS3DC080, ADD_RAID10: standin.synthesized("Add VD Succeeded.")}
    package = sandboxed_package(lab, corpus, commands)
    request = protocol.make_request("create_vd", RAID10_REQUEST, "job-sandbox-create")
    settings = runner.SandboxSettings(runtime_root=str(lab.runtime))
    result = runner.run(package, manifest.load(package), request, None, settings)

    assert result.status == "succeeded", (result.message, result.stderr)
    assert result.data["commands"] == ["storcli64 /c0 show J", f"storcli64 {ADD_RAID10}"]
    assert result.refusals == []


def test_cloudboot_provider_exec(lab, corpus):
    package = sandboxed_package(lab, corpus, {"/call show all J": PERC})
    request = json.dumps({"action": "inventory", "params": {}})
    done = subprocess.run(
        [str(REPO / ".venv" / "bin" / "cloudboot"), "provider", "exec", str(package),
         "--runtime-root", str(lab.runtime)],
        input=request.encode(),
        capture_output=True,
        timeout=120,
        check=False,
    )  # fmt: skip

    assert done.returncode == 0, (done.stdout, done.stderr)
    lines = [json.loads(line) for line in done.stdout.decode().splitlines()]
    result = next(line for line in lines if line.get("type") == "result")
    assert result["data"]["controllers"][0]["model"] == "PERC H345 Front"
    assert lines[-1]["type"] == "run" and lines[-1]["status"] == "succeeded"


def test_the_provider_packs_and_unpacks(package, tmp_path):
    """The directory as shipped is a valid package: manifest, entry point, modules."""
    packed = tmp_path / "megaraid.cbp"
    pack.pack(package, packed)
    unpacked = tmp_path / "unpacked"
    found = pack.unpack(pack.read(packed), unpacked)
    assert found.name == "megaraid" and found.kind == "raid"
    names = {path.name for path in unpacked.iterdir()}
    assert {"provider.json", "provider.py", "storcli_json.py", "storcli_commands.py"} <= names
