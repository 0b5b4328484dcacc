"""Test harness: a private lab (namespaces, dnsmasq, the appliance, QEMU VMs) per test.

Each lab gets namespaces with a random suffix, so parallel runs do not collide,
and a working directory under the test's tmp_path. The context manager stops
every process it started and deletes the namespaces however the test ends.
Only addresses inside those namespaces are ever used.
"""

import contextlib
import os
import secrets
import shutil
from pathlib import Path

import pytest

from lab import netns, session, vm

REPO = Path(__file__).resolve().parent.parent

# Another BootOS build (e.g. one made with `python3 -m bootos.build --out DIR`) can be tried
# without touching .build/.
BOOTOS_DIR = Path(os.environ.get("CLOUDBOOT_BOOTOS_DIR") or REPO / ".build" / "bootos")


def require_root_and(*tools):
    """Skip (with the reason) unless root and every tool named is installed."""
    if os.geteuid() != 0:
        pytest.skip("the lab needs root for network namespaces and tap devices")
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (see requirements/apt.txt)")


def require_vm_tools():
    """Skip (with the reason) where the lab cannot run: not root, or a tool missing."""
    require_root_and("qemu-system-x86_64", "dnsmasq", "curl", "ip")
    for path in (vm.OVMF_CODE, vm.OVMF_VARS, Path("/usr/lib/ipxe/ipxe.efi")):
        if not path.exists():
            pytest.skip(f"{path} is missing (Debian packages ovmf, ipxe)")
    if not (REPO / ".venv" / "bin" / "cloudboot").exists():
        pytest.skip("the cloudboot command is not installed in .venv")


def require_bootos():
    missing = [n for n in ("vmlinuz", "initrd.img") if not (BOOTOS_DIR / n).is_file()]
    if missing:
        pytest.skip(f"BootOS not built ({', '.join(missing)} missing in {BOOTOS_DIR})")


def specs_for(firmwares):
    """One VmSpec per firmware kind asked for, with identities unique to this run."""
    suffix = secrets.token_hex(2).upper()
    pool = {spec.firmware: spec for spec in vm.default_specs(3, suffix=suffix)}
    return [pool[kind] for kind in firmwares]


@contextlib.contextmanager
def running_lab(workdir, firmwares, report=None, extra_config="", bootos_dir=None):
    """Yield a LabSession with dnsmasq, the appliance and one VM per firmware kind running.

    extra_config is TOML appended to the lab's appliance configuration;
    bootos_dir replaces the BootOS build the VMs are given.
    """
    suffix = secrets.token_hex(3)
    network = netns.LabNetwork(netns=f"cbl-{suffix}", dhcp_netns=f"cbl-{suffix}-d")
    lab = session.LabSession(REPO, workdir, network, report=report)
    specs = specs_for(firmwares)
    try:
        lab.start_network()
        lab.start_appliance(specs, bootos_dir or BOOTOS_DIR, extra_config)
        lab.start_vms(specs)
        yield lab
    finally:
        lab.stop()


def serial_console(lab, spec):
    """The VM's serial console so far, escape sequences removed."""
    path = lab.workdir / f"vm-{spec.name}.log"
    return path.read_text(errors="replace").replace("\x1b", "")


def appliance_lines(lab, mac):
    """Lines of the appliance's log that name mac (either spelling)."""
    dashed = mac.replace(":", "-")
    text = lab.appliance_log.read_text(errors="replace").lower()
    return [line for line in text.splitlines() if mac in line or dashed in line]
