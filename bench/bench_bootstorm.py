"""Boot storm, run by hand: N virtual servers power on at once and must all register.

    sudo .venv/bin/python bench/bench_bootstorm.py --machines 10

Builds a private lab (namespaces with a random suffix, dnsmasq, the appliance
from this checkout), powers on N QEMU VMs cycling through the three firmware
paths, waits until every one has registered, prints the seconds each took and
removes everything it made. Needs root, QEMU, OVMF, iPXE and a built BootOS.
Under TCG each VM takes one core-share; on two cores expect slow boots, which
is the point of measuring it. Never run in CI: it is a measurement, not a test.
"""

import argparse
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lab import netns, session, vm  # noqa: E402 - lab/ is not an installed package


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machines", type=int, default=10)
    parser.add_argument("--timeout", type=int, default=1800, help="seconds for all to register")
    parser.add_argument(
        "--firmware", choices=["mixed", *vm.FIRMWARE_KINDS], default="mixed", help="boot path"
    )
    args = parser.parse_args()

    specs = vm.default_specs(args.machines, suffix=secrets.token_hex(2).upper())
    if args.firmware != "mixed":
        for spec in specs:
            spec.firmware = args.firmware

    suffix = secrets.token_hex(3)
    network = netns.LabNetwork(netns=f"cbl-{suffix}", dhcp_netns=f"cbl-{suffix}-d")
    workdir = Path(tempfile.mkdtemp(prefix="bootstorm-"))
    lab = session.LabSession(REPO, workdir, network, report=print)
    started = time.monotonic()
    try:
        lab.start_network()
        lab.start_appliance(specs, REPO / ".build" / "bootos")
        lab.start_vms(specs)
        lab.wait_for("registered", args.timeout)
    except session.LabError as e:
        print(f"boot storm failed: {e}", file=sys.stderr)
        return 1
    finally:
        lab.stop()

    _report(lab, args, time.monotonic() - started)
    return 0


def _report(lab, args, wall):
    times = [p.seconds("registered") for p in lab.progress.values()]
    print(f"\n{args.machines} VMs ({args.firmware}), all registered; wall {wall:.0f} s")
    for progress in lab.progress.values():
        problems = "; ".join(progress.problems) or "inventory matches"
        print(
            f"  {progress.spec.name:18} {progress.spec.firmware:10} "
            f"{progress.seconds('registered'):>5} s  {problems}"
        )
    print(
        f"registered after: min {min(times)} s, median {statistics.median(times)} s, "
        f"max {max(times)} s"
    )


if __name__ == "__main__":
    sys.exit(main())
