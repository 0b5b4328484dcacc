"""The appliance as the lab runs it: boot files, a lab config, `cloudboot serve` in the namespace.

Everything here talks to the appliance at its address inside the lab namespace
(through `ip netns exec ... curl`), never to a host address. The lab runs the
real `cloudboot` command from the repository's virtualenv; nothing is faked.
"""

import json
import logging
import subprocess
import time
from pathlib import Path

from appliance import bootfiles, config
from lab import netns

logger = logging.getLogger(__name__)

IPXE_DIR = bootfiles.IPXE_DIR


class ApplianceError(Exception):
    """The appliance did not start or did not answer as expected."""


def install_boot_files(data_dir, bootos_dir):
    """Copy iPXE and BootOS into the lab appliance's data directory.

    Returns the BootOS files that were missing (the lab can still reach the
    iPXE script without them, but no VM can register).
    """
    settings = config.load(overrides={"server.data_dir": str(data_dir)})
    _, missing = bootfiles.install(settings, bootos_dir, IPXE_DIR, require_bootos=False)
    return missing


def write_config(path, network, ignore_pxe_macs, extra=""):
    """The lab's TOML config: the HTTP-boot VMs' PXE requests go unanswered.

    extra is more TOML appended as it is (whole tables, e.g. "[tftp]\nenabled = false").
    """
    macs = ", ".join(f'"{mac}"' for mac in ignore_pxe_macs)
    Path(path).write_text(
        "# Written by the lab (lab/appliance.py); rewritten on every `build.py lab`.\n"
        "[dhcp]\n"
        f"ignore_pxe_macs = [{macs}]\n"
        "\n"
        "[api]\n"
        f'registration_networks = ["{network.prefix}.0/24"]\n'
        f"{extra}"
    )


def serve_argv(repo, network, data_dir, config_path):
    command = Path(repo) / ".venv" / "bin" / "cloudboot"
    return netns.ns_argv(
        network.netns,
        [
            str(command),
            "serve",
            "--interface",
            network.bridge,
            "--data-dir",
            str(data_dir),
            "--config",
            str(config_path),
            "--log-level",
            "debug",
        ],
    )


def start(repo, network, data_dir, config_path, log_path):
    """Start `cloudboot serve` in the lab namespace; returns the Popen (it outlives the caller)."""
    out = open(log_path, "ab")  # noqa: SIM115 - handed to the child process
    process = subprocess.Popen(
        serve_argv(repo, network, data_dir, config_path),
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    out.close()
    logger.info("appliance started, pid %d", process.pid)
    return process


def curl(network, url, token=None, timeout=10):
    """GET url from inside the lab namespace; returns (status, body text)."""
    argv = ["curl", "-sk", "--max-time", str(timeout), "-w", "\n%{http_code}"]
    if token:
        argv += ["-H", f"Authorization: Bearer {token}"]
    result = netns.in_ns(network.netns, *argv, url, check=False)
    body, _, status = result.stdout.rpartition("\n")
    return int(status or 0), body


def wait_ready(network, process, log_path, timeout=60):
    """Wait until /healthz answers over HTTPS; raise with the log's tail if it never does."""
    deadline = time.monotonic() + timeout
    url = f"https://{network.appliance_address}/healthz"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ApplianceError(
                f"cloudboot serve exited with status {process.returncode}:\n{tail(log_path)}"
            )
        status, _ = curl(network, url, timeout=2)
        if status == 200:
            return
        time.sleep(0.5)
    raise ApplianceError(f"appliance did not answer {url} within {timeout} s:\n{tail(log_path)}")


def issue_token(repo, data_dir, config_path):
    command = Path(repo) / ".venv" / "bin" / "cloudboot"
    result = subprocess.run(
        [str(command), "token", "issue", "--role", "admin", "--data-dir", str(data_dir)]
        + ["--config", str(config_path)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise ApplianceError(f"cloudboot token issue failed: {result.stderr.strip()}")
    return result.stdout.strip().splitlines()[-1]


def api_get(network, path, token):
    """GET an /api/v1 path as JSON; raises ApplianceError on a non-200 answer."""
    url = f"https://{network.appliance_address}{path}"
    status, body = curl(network, url, token=token)
    if status != 200:
        raise ApplianceError(f"GET {url} answered {status}: {body[:300]!r}")
    try:
        return json.loads(body)
    except ValueError:
        raise ApplianceError(f"GET {url} answered non-JSON: {body[:300]!r}") from None


def tail(path, lines=25):
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])
