"""Real iPXE firmware (QEMU + SeaBIOS + Debian's ipxe-qemu ROM) runs our scripts.

The VM uses QEMU's user-mode network with restrict=on: it can reach nothing but
QEMU's own DHCP/TFTP and one forwarded address, 10.0.2.100:80, which QEMU
connects to our server on 127.0.0.1. So the firmware's traffic only ever lands
on loopback. TFTP hands iPXE a one-line script that chains /ipxe/<mac>.ipxe.
"""

import functools
import shutil
import subprocess

import pytest
import trio

from appliance.boot.artifacts import default_script_for_mac, register_routes
from appliance.config import Settings
from appliance.http import Router
from appliance.proto.ipxe import render_local_disk_script, render_wait_script
from tests.http_support import start_server

pytestmark = pytest.mark.vm

QEMU = shutil.which("qemu-system-x86_64")
MAC = "52:54:00:12:34:56"
CHAIN = "#!ipxe\nchain http://10.0.2.100/ipxe/${mac:hexhyp}.ipxe\n"


@pytest.fixture
def settings(tmp_path):
    if QEMU is None:
        pytest.skip("qemu-system-x86_64 is not installed (Debian package qemu-system-x86)")
    settings = Settings()
    settings.http.boot_root = str(tmp_path / "boot")
    settings.server.advertise_address = "10.0.2.100"
    (tmp_path / "tftp").mkdir()
    (tmp_path / "tftp" / "boot.ipxe").write_text(CHAIN)
    return settings


async def run_vm(tmp_path, port, until, seconds):
    """Boot a BIOS VM from the network until `until(serial_text)` holds; returns the text."""
    serial = tmp_path / "serial.log"
    netdev = (
        f"user,id=n0,restrict=on,tftp={tmp_path / 'tftp'},bootfile=boot.ipxe,"
        f"guestfwd=tcp:10.0.2.100:80-tcp:127.0.0.1:{port}"
    )
    command = [
        # -nographic: SeaBIOS mirrors the text screen (where iPXE writes) to the serial port.
        QEMU, "-accel", "tcg", "-m", "256", "-nographic", "-no-reboot",
        "-netdev", netdev, "-device", f"virtio-net-pci,netdev=n0,mac={MAC}", "-boot", "n",
    ]  # fmt: skip

    async with trio.open_nursery() as nursery, await trio.open_file(serial, "wb") as output:
        run = functools.partial(
            trio.run_process, command, stdin=subprocess.DEVNULL, stdout=output.wrapped
        )
        nursery.start_soon(run)
        with trio.move_on_after(seconds):
            while not (serial.exists() and until(serial.read_text(errors="replace"))):
                await trio.sleep(0.5)
        nursery.cancel_scope.cancel()
    return serial.read_text(errors="replace") if serial.exists() else ""


async def test_bootos_script_downloads_and_retries_on_real_ipxe(nursery, settings, tmp_path):
    bootos = settings.boot_root / "bootos"
    bootos.mkdir(parents=True)
    # Not a kernel: iPXE must fail to boot it and go round the retry loop.
    (bootos / "vmlinuz").write_bytes(b"\x00not a kernel" * 250_000)
    (bootos / "initrd.img").write_bytes(b"\x00" * 500_000)
    router = Router()
    script = default_script_for_mac(
        settings, {"url": "https://10.0.2.100:443", "fingerprint": "sha256:" + "ab" * 32}
    )
    files = register_routes(router, settings, script)
    port = await start_server(nursery, router)

    text = await run_vm(tmp_path, port, lambda t: t.count("retrying in 5 s") >= 2, 120)

    assert files.fetch_log.get(MAC)["count"] == 1
    assert text.count("http://10.0.2.100:80/boot/bootos/vmlinuz... ok") >= 2
    assert "http://10.0.2.100:80/boot/bootos/initrd.img... ok" in text or "Exec format" in text
    assert text.count("CloudBoot: BootOS download or boot failed, retrying in 5 s") >= 2


async def test_wait_script_chains_itself_then_local_disk_hands_back_to_bios(
    nursery, settings, tmp_path
):
    fetches = []

    async def script_for_mac(mac):
        fetches.append(mac)
        if len(fetches) == 1:
            return render_wait_script("waiting for approval", 1)
        return render_local_disk_script()

    router = Router()
    files = register_routes(router, settings, script_for_mac)
    port = await start_server(nursery, router)

    text = await run_vm(tmp_path, port, lambda t: "handing back to the BIOS" in t, 90)

    assert fetches == [MAC, MAC]
    assert files.fetch_log.get(MAC)["count"] == 2
    assert "CloudBoot: waiting for approval" in text
    assert "CloudBoot: booting from the local disk (BIOS drive 0x80)" in text
    assert "CloudBoot: the local disk did not boot; handing back to the BIOS" in text
