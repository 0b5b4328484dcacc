"""Runs a subset of the hostile providers inside a BootOS VM and prints one result line.

Copied into an extra initramfs with the providers package and the chosen providers, and
started by that initramfs's /init (tests/hostile/test_hostile_bootos_vm.py). Standard
library only: BootOS has Python but no pytest. It must never need a network.

Each provider runs twice: with the production policy (a missing required protection
refuses the run) and with missing protections allowed, to see what still holds.
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "repo"))

from providers import manifest, protocol  # noqa: E402
from providers.sandbox import _kernel, runner  # noqa: E402

MARKER = "CLOUDBOOT-HOSTILE-RESULT "


def main():
    data = "/root-data"
    os.makedirs(data, exist_ok=True)
    with open(f"{data}/cloudboot.db", "w") as handle:
        handle.write("SECRET-DATABASE")
    os.chmod(f"{data}/cloudboot.db", 0o644)
    os.makedirs("/tmp/runtime", exist_ok=True)
    os.makedirs("/drop-zone", exist_ok=True)
    os.chmod("/drop-zone", 0o777)
    params = {
        "nr": _kernel.syscall_table(),
        "database": f"{data}/cloudboot.db",
        "target": "/drop-zone/planted",
        "pid": 1,
    }
    report = {"probe": runner.probe(), "uname": os.uname().release, "runs": {}}
    for name in sorted(os.listdir(os.path.join(HERE, "providers"))):
        directory = os.path.join(HERE, "providers", name)
        found = manifest.load(directory)
        request = protocol.make_request("attack", params)
        runs = {}
        for label, allow in (("strict", False), ("allowed", True)):
            settings = runner.SandboxSettings(runtime_root="/tmp/runtime", allow_missing=allow)
            result = runner.run(directory, found, request, None, settings)
            runs[label] = {
                "status": result.status,
                "reason": result.reason,
                "message": result.message[:200],
                "errno": result.data.get("errno"),
                "refusals": [r["syscall"] for r in result.refusals],
                "protections": result.protections,
                "mechanism": result.limits.get("mechanism"),
                "leaked": "SECRET-DATABASE" in repr(result.to_dict()),
                "planted": os.path.exists("/drop-zone/planted"),
            }
        report["runs"][name] = runs
    print(MARKER + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
