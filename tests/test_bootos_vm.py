"""BootOS built for real and booted in QEMU (slow: marked vm).

The build runs from bootos/packages.lock with the shared .deb cache, twice,
and the two results must be byte-identical. The self-test boot gives QEMU
SMBIOS values and a virtio disk, boots vmlinuz + initrd.img with
cloudboot.selftest=1, and reads the serial console: /init ran, drivers were
loaded, and the agent's inventory carries exactly the values QEMU was given.
The ISO is booted under SeaBIOS and OVMF to its agent's first console line.
These VMs have no network card (-nic none).

One boot runs the whole agent path inside BootOS (DHCP, pinned TLS,
register, jobs) against the test HTTPS server on 127.0.0.1. Its NIC is QEMU
user networking with restrict=on, which cuts the guest off from every host
and network; the only way out is a guestfwd rule that hands each connection
to 10.0.2.100:8443 to `socat` connected to that loopback server.
"""

import json
import re
import shutil
import subprocess
import time

import pytest

from bootos.build import DEFAULT_CACHE, DEFAULT_LOCK, build
from tests.agent_https import FakeAppliance, make_certificate

pytestmark = pytest.mark.vm

QEMU = shutil.which("qemu-system-x86_64")
SMBIOS = {
    "manufacturer": "Huawei",
    "product": "2288H V5",
    "serial": "2102311TYBN0K9000123",
    "uuid": "4c4c4544-0051-3410-8052-b4c04f4e3132",
}
OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd"
OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd"


@pytest.fixture(scope="module")
def bootos(tmp_path_factory):
    out = tmp_path_factory.mktemp("bootos-a")
    return out, build(out, DEFAULT_LOCK, DEFAULT_CACHE)


def qemu(tmp_path, *args, until, timeout=420, nic=("-nic", "none")):
    """Run QEMU with the serial console in a file until `until` appears; returns the log."""
    if QEMU is None:
        pytest.skip("qemu-system-x86_64 is not installed (Debian package qemu-system-x86)")
    log = tmp_path / "serial.log"
    argv = [QEMU, "-accel", "tcg", "-m", "1024", *nic, "-display", "none"]
    argv += ["-monitor", "none", "-no-reboot", "-serial", f"file:{log}", *args]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if log.exists() and until in log.read_text(errors="replace"):
                break
            time.sleep(1)
    finally:
        process.kill()
        process.wait()
    return log.read_text(errors="replace") if log.exists() else ""


def test_two_builds_are_byte_identical(bootos, tmp_path):
    _out, first = bootos
    second = build(tmp_path / "bootos-b", DEFAULT_LOCK, DEFAULT_CACHE)

    assert first["iso_reproducible"]
    assert first["files"] == second["files"]
    assert first["files"]["bootos.iso"]["size"] < 150_000_000


def test_selftest_boot_reports_the_smbios_values_qemu_gave(bootos, tmp_path):
    out, _result = bootos
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\0" * 64 * 1024 * 1024)
    smbios = "type=1," + ",".join(f"{k}={v}" for k, v in SMBIOS.items())

    console = qemu(
        tmp_path,
        "-kernel", str(out / "vmlinuz"),
        "-initrd", str(out / "initrd.img"),
        "-append", "console=ttyS0 panic=-1 cloudboot.selftest=1",
        "-smbios", smbios,
        "-drive", f"file={disk},if=virtio,format=raw",
        until="CLOUDBOOT-SELFTEST-END",
    )  # fmt: skip

    assert "cloudboot-init: BootOS lock-" in console, console[-3000:]
    assert f"machine: Huawei 2288H V5 serial {SMBIOS['serial']}" in console
    modules = re.search(r"cloudboot-init: modules loaded: (.*)", console).group(1).split()
    assert {"virtio_pci", "virtio_blk"} <= set(modules)
    assert "CLOUDBOOT-SELFTEST-END rc=0" in console

    document = json.loads(_between(console, "CLOUDBOOT-SELFTEST-BEGIN", "CLOUDBOOT-SELFTEST-END"))
    system = document["system"]
    assert (system["manufacturer"], system["product"]) == ("Huawei", "2288H V5")
    assert system["serial"] == SMBIOS["serial"]
    assert system["uuid"] == SMBIOS["uuid"]
    assert any(disk["size_bytes"] == 64 * 1024 * 1024 for disk in document["disks"])


@pytest.mark.parametrize("firmware", ["bios", "uefi"])
def test_iso_boots_to_the_agent(bootos, tmp_path, firmware):
    out, _result = bootos
    args = ["-cdrom", str(out / "bootos.iso")]
    if firmware == "uefi":
        vars_copy = tmp_path / "OVMF_VARS.fd"
        shutil.copyfile(OVMF_VARS, vars_copy)
        args += ["-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}"]
        args += ["-drive", f"if=pflash,format=raw,file={vars_copy}"]

    console = qemu(tmp_path, *args, until="cloudboot-agent: cannot start")

    # The ISO carries no cloudboot.* parameters, so the agent must say which is missing.
    assert "cloudboot-agent: cannot start: kernel command line has no cloudboot.url=" in (
        console
    ), console[-3000:]


def test_agent_in_bootos_registers_and_runs_jobs(bootos, tmp_path):
    if shutil.which("socat") is None:
        pytest.skip("socat is not installed (Debian package socat)")
    out, _result = bootos
    cert, key, pin = make_certificate(tmp_path)
    appliance = FakeAppliance(cert, key).start()
    appliance.jobs.put({"id": "j1", "kind": "inventory", "params": {}})
    appliance.jobs.put({"id": "j2", "kind": "poweroff", "params": {}})
    mac = "52:54:00:12:34:56"
    forward = f"guestfwd=tcp:10.0.2.100:8443-cmd:socat - TCP:127.0.0.1:{appliance.port}"
    nic = ("-nic", f"user,restrict=on,model=virtio-net-pci,mac={mac},{forward}")
    params = f"cloudboot.url=https://10.0.2.100:8443 cloudboot.fp={pin} cloudboot.mac={mac}"

    try:
        console = qemu(
            tmp_path,
            "-kernel", str(out / "vmlinuz"),
            "-initrd", str(out / "initrd.img"),
            "-append", f"console=ttyS0 panic=-1 {params}",
            "-smbios", "type=1,manufacturer=Huawei,serial=2102311TYBN0K9000777",
            nic=nic,
            until="reboot: Power down",
        )  # fmt: skip
    finally:
        appliance.stop()

    assert "cloudboot-agent: eth0 configured by DHCP" in console, console[-3000:]
    assert "registered with https://10.0.2.100:8443 as machine m-1" in console
    registration = appliance.requests[0]["body"]
    assert registration["boot_mac"] == mac
    assert registration["inventory"]["system"]["serial"] == "2102311TYBN0K9000777"
    results = [(r["job_id"], r["status"]) for r in appliance.results]
    assert results == [("j1", "succeeded"), ("j2", "succeeded")]
    assert appliance.results[0]["data"]["inventory"]["system"]["manufacturer"] == "Huawei"


def _between(text, begin, end):
    start = text.index(begin) + len(begin)
    return text[start : text.index(end, start)]
