"""`python3 build.py lab`: bring the virtual PXE lab up, or take it down with --down.

up() builds the lab network, starts the bank's DHCP server and the appliance,
powers on virtual servers with each firmware path, waits for each to register
and prints how long it took and whether its inventory matches what QEMU was
given. The appliance and the VMs keep running afterwards; .lab/state.json
records every process and device so down() can remove exactly those, and
nothing else, however often it is run.
"""

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from lab import netns, session, vm

logger = logging.getLogger(__name__)

NETNS = "cloudboot-lab"
DHCP_NETNS = "cloudboot-lab-dhcp"
HOST_PORT = 8443
SECONDS_PER_VM = 300


def lab_dir(repo):
    return Path(repo) / ".lab"


# The lab's namespace names are fixed (so `--down` finds them), so two
# checkouts on one machine would share them: this file says whose lab runs.
OWNER_FILE = Path("/run/cloudboot-lab.owner")


def _owner():
    try:
        return OWNER_FILE.read_text().strip()
    except OSError:
        return ""


def _foreign_lab(repo):
    """The other checkout whose lab is running, or "" when none (or ours) is."""
    owner = _owner()
    running = netns.exists(NETNS) or netns.exists(DHCP_NETNS)
    if running and owner and owner != str(Path(repo).resolve()):
        return owner
    return ""


def up(repo: Path, machines: int = 3) -> int:
    """Start the lab and wait for every VM to register; 0 on success, 1 with a message if not."""
    repo = Path(repo)
    other = _foreign_lab(repo)
    if other:
        print(
            f"lab: a lab started from {other} is running; run `python3 build.py lab --down` "
            "there first",
            file=sys.stderr,
        )
        return 1
    if (lab_dir(repo) / "state.json").exists():
        print("lab: a previous lab is recorded; taking it down first")
        down(repo)
    OWNER_FILE.write_text(f"{repo.resolve()}\n")

    network = netns.LabNetwork(netns=NETNS, dhcp_netns=DHCP_NETNS)
    lab = session.LabSession(repo, lab_dir(repo), network, report=_say)
    specs = vm.default_specs(machines)
    try:
        return _bring_up(repo, lab, specs)
    except (session.LabError, netns.NetnsError) as e:
        print(f"lab: failed: {e}", file=sys.stderr)
        print("lab: logs are kept in .lab/; stopping the lab", file=sys.stderr)
        lab.stop()
        _write_state(lab, specs, stopped=True)
        return 1
    except KeyboardInterrupt:
        print("lab: interrupted; stopping the lab", file=sys.stderr)
        lab.stop()
        _write_state(lab, specs, stopped=True)
        return 130


def _bring_up(repo, lab, specs):
    lab.start_network()
    _write_state(lab, specs)
    lab.start_appliance(specs, repo / ".build" / "bootos")
    _write_state(lab, specs)
    lab.start_vms(specs)
    _write_state(lab, specs)

    lab.wait_for("registered", SECONDS_PER_VM * max(1, len(specs) // 3))
    _print_table(lab)

    forwarder = _forward_to_loopback(lab)
    lab.processes["socat"] = forwarder
    _write_state(lab, specs)
    base = f"https://127.0.0.1:{HOST_PORT}"
    print(f"\nappliance inside the lab: https://{lab.network.appliance_address}")
    print(f"appliance from this host: {base} (self-signed certificate)")
    print(f"admin token:              {lab.token}")
    print("try it:")
    print(f'  curl -sk -H "Authorization: Bearer {lab.token}" {base}/api/v1/machines')
    print("the lab appliance's data directory and settings, for `cloudboot` commands:")
    data, config = _relative(lab.data_dir), _relative(lab.config_path)
    print("  .venv/bin/cloudboot token issue --role operator --user alice \\")
    print(f"      --data-dir {data} --config {config}")
    print("the API is described in docs/api.md; take the lab down with:")
    print("  python3 build.py lab --down")
    return 0 if all(not p.problems for p in lab.progress.values()) else 1


def _relative(path):
    try:
        return Path(path).relative_to(Path.cwd())
    except ValueError:
        return path


def _print_table(lab):
    print(f"\n{'machine':18} {'firmware':10} {'registered':>10}  inventory")
    for progress in lab.progress.values():
        seconds = progress.seconds("registered")
        verdict = (
            "matches QEMU" if not progress.problems else "DIFFERS: " + "; ".join(progress.problems)
        )
        print(f"{progress.spec.name:18} {progress.spec.firmware:10} {seconds:>8} s  {verdict}")


def _forward_to_loopback(lab):
    """socat on 127.0.0.1:8443 that opens each connection from inside the namespace.

    No address of the lab subnet is put on the host: each accepted connection
    runs a second socat in the namespace that connects to the appliance.
    """
    target = f"TCP:{lab.network.appliance_address}:443"
    inner = f"ip netns exec {lab.network.netns} socat STDIO {target}"
    out = open(lab.workdir / "socat.out", "ab")  # noqa: SIM115 - handed to the child process
    process = subprocess.Popen(
        [
            "socat",
            f"TCP-LISTEN:{HOST_PORT},bind=127.0.0.1,reuseaddr,fork",
            f'EXEC:"{inner}"',
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    out.close()
    time.sleep(0.5)
    if process.poll() is not None:
        raise session.LabError(
            f"socat could not listen on 127.0.0.1:{HOST_PORT}: "
            f"{(lab.workdir / 'socat.out').read_text(errors='replace').strip()}"
        )
    return process


def _write_state(lab, specs, stopped=False):
    machines = []
    for spec in specs:
        process = lab.processes.get(f"vm-{spec.name}")
        machines.append(
            {
                "name": spec.name,
                "mac": spec.mac,
                "firmware": spec.firmware,
                "smbios": {
                    "manufacturer": spec.manufacturer,
                    "product": spec.product,
                    "serial": spec.serial,
                    "uuid": spec.uuid,
                },
                "pid": process.pid if process else None,
            }
        )
    state = {
        "netns": [lab.network.netns, lab.network.dhcp_netns],
        "bridge": lab.network.bridge,
        "api_url": f"https://{lab.network.appliance_address}",
        "host_url": f"https://127.0.0.1:{HOST_PORT}",
        "token": lab.token,
        "machines": machines,
        "pids": {} if stopped else {**lab.pids()},
        "cmdlines": {} if stopped else _cmdlines(lab.pids()),
    }
    path = lab.workdir / "state.json"
    path.write_text(json.dumps(state, indent=2) + "\n")


def _cmdlines(pids):
    return {name: _cmdline(pid) for name, pid in pids.items()}


def _cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def down(repo: Path, *, default_netns=None) -> int:
    """Stop what the lab recorded, delete its namespaces and .lab; safe to run again.

    default_netns are deleted when no readable record names the namespaces
    (a test passes its own, so it never touches a developer's running lab).
    """
    directory = lab_dir(repo)
    fixed_names = default_netns is None
    default_netns = default_netns or (NETNS, DHCP_NETNS)
    other = _foreign_lab(repo) if fixed_names else ""
    if other:
        print(f"lab: the running lab was started from {other}; leaving it alone", file=sys.stderr)
        print("lab: run `python3 build.py lab --down` in that checkout", file=sys.stderr)
        return 1
    state_path = directory / "state.json"
    state = {}
    if state_path.exists():
        try:
            state = json.loads(state_path.read_text())
        except ValueError:
            print(f"lab: {state_path} is unreadable; removing the fixed lab names only")

    for name, pid in (state.get("pids") or {}).items():
        _stop_pid(name, pid, (state.get("cmdlines") or {}).get(name, ""))

    # Without a readable record, the fixed names are the only ones the lab uses.
    for name in state.get("netns") or default_netns:
        netns.delete(name)

    if directory.exists():
        subprocess.run(["rm", "-rf", "--one-file-system", str(directory)], check=False)
    if fixed_names:
        OWNER_FILE.unlink(missing_ok=True)
    print("lab: down")
    return 0


def _stop_pid(name, pid, recorded_cmdline):
    # A pid can be reused after a reboot; only a process with the command
    # line the lab recorded is the lab's own.
    if not recorded_cmdline or _cmdline(pid) != recorded_cmdline:
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(50):
        if _cmdline(pid) != recorded_cmdline:
            return
        time.sleep(0.2)
    logger.warning("%s (pid %d) ignored SIGTERM; killing it", name, pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _say(line):
    print(f"lab: {line}", flush=True)
