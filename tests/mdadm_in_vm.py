"""Runs the mdadm provider inside a BootOS VM with four virtio disks; prints one result line.

Copied into an extra initramfs layer with the providers package and started by that
layer's /init (tests/test_mdadm_vm.py), after the md modules are loaded. Standard library
only: BootOS has Python but no pytest. It never needs a network.

Steps, each recorded with /proc/mdstat as the kernel shows it right after:
1. the provider through the real sandbox with the disks granted but not CAP_SYS_ADMIN:
   mdadm refuses, nothing is created;
2. the same with CAP_SYS_ADMIN granted (uid 0, every other capability dropped, Landlock and
   seccomp on): RAID 1 on two disks, inventory, delete;
3. the provider run directly as root: inventory, RAID 1 on two disks, a refused second
   create on a disk now in use, inventory, delete; then RAID 10 on all four disks,
   inventory, delete.
"""

import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "repo"))

from providers import manifest, protocol  # noqa: E402
from providers.sandbox import runner  # noqa: E402

MARKER = "CLOUDBOOT-MDADM-RESULT "
PROVIDER = os.path.join(HERE, "repo", "providers", "mdadm")
DISKS = ["/dev/vda", "/dev/vdb", "/dev/vdc", "/dev/vdd"]


def mdstat():
    try:
        with open("/proc/mdstat") as handle:
            return handle.read()
    except OSError as exc:
        return f"unreadable: {exc}"


def direct(action, params):
    """The provider as root, outside the sandbox: python3 -I, request on stdin."""
    request = json.dumps(protocol.make_request(action, params)) + "\n"
    done = subprocess.run(
        ["/usr/bin/python3", "-I", "-B", os.path.join(PROVIDER, "provider.py")],
        input=request.encode(),
        capture_output=True,
        timeout=240,
        check=False,
    )
    parser = protocol.OutputParser()
    parser.feed(done.stdout)
    result = parser.finish()
    return {
        "status": result["status"],
        "message": result["message"],
        "data": result["data"],
        "progress": [e["percent"] for e in parser.events if e["type"] == "progress"],
        "stderr": done.stderr.decode(errors="replace")[-2000:],
        "mdstat": mdstat(),
    }


def sandboxed(action, params, devices, capabilities=()):
    found = manifest.load(PROVIDER)
    settings = runner.SandboxSettings(runtime_root="/run/runtime", allow_missing=True)
    grants = {"devices": dict.fromkeys(devices, True), "capabilities": list(capabilities)}
    result = runner.run(PROVIDER, found, protocol.make_request(action, params), grants, settings)
    return {
        "status": result.status,
        "reason": result.reason,
        "message": result.message[:1000],
        "data": result.data,
        "protections": result.protections,
        "refusals": [r["syscall"] for r in result.refusals],
        "stderr": result.stderr[-1500:],
        "mdstat": mdstat(),
    }


def raw(words):
    done = subprocess.run(["/sbin/mdadm", *words], capture_output=True, timeout=60, check=False)
    return {
        "exit": done.returncode,
        "stdout": done.stdout.decode(),
        "stderr": done.stderr.decode(),
    }


def main():
    os.makedirs("/run/runtime", exist_ok=True)
    report = {"uname": os.uname().release, "probe": runner.probe(), "steps": {}}
    steps = report["steps"]
    pair = DISKS[:2]
    granted = pair + ["/dev/md127"]
    create = {"level": 1, "devices": pair, "name": "sandboxed"}
    steps["sandbox_create_ungranted"] = sandboxed("create", create, pair)
    steps["sandbox_create"] = sandboxed("create", create, granted, ["CAP_SYS_ADMIN"])
    steps["sandbox_inventory"] = sandboxed("inventory", {}, granted, ["CAP_SYS_ADMIN"])
    steps["sandbox_delete"] = sandboxed(
        "delete", {"array": "sandboxed"}, granted, ["CAP_SYS_ADMIN"]
    )
    steps["inventory_empty"] = direct("inventory", {})
    steps["create_raid1"] = direct("create", {"level": 1, "devices": pair, "name": "mirror"})
    steps["raw_detail_raid1"] = raw(["--detail", "--export", "/dev/md/mirror"])
    steps["raw_examine_member"] = raw(["--examine", "--export", pair[0]])
    steps["create_on_member"] = direct(
        "create", {"level": 1, "devices": [pair[1], DISKS[2]], "name": "again"}
    )
    steps["inventory_raid1"] = direct("inventory", {})
    steps["delete_raid1"] = direct("delete", {"array": "mirror"})
    steps["raw_examine_zeroed"] = raw(["--examine", "--export", pair[0]])
    steps["create_raid10"] = direct("create", {"level": 10, "devices": DISKS, "name": "stripe"})
    steps["inventory_raid10"] = direct("inventory", {})
    steps["delete_raid10"] = direct("delete", {"array": "/dev/md/stripe"})
    steps["inventory_after"] = direct("inventory", {})
    print(MARKER + json.dumps(report), flush=True)


if __name__ == "__main__":
    try:
        main()
    except Exception as exc:  # the test must see why, not wait for a line that never comes
        print(MARKER + json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
