"""Real firmware against the appliance: each x86 boot path reaches the per-machine iPXE script.

Three QEMU VMs boot at once inside a private lab beside dnsmasq (the bank's DHCP
server, addresses only): SeaBIOS with the iPXE ROM, OVMF with its EDK2 PXE stack
(TFTP download of ipxe.efi first) and OVMF with UEFI HTTP boot (its PXE requests
ignored by the appliance). The test passes when the appliance logged the script
fetch for each VM's MAC and each firmware took the path it stands for.
"""

import pytest

from tests import vmlab

pytestmark = [pytest.mark.vm, pytest.mark.netns]

# OVMF spends about 100 s under TCG before it gives up on PXE and tries HTTP.
TIMEOUT_SECONDS = 420


@pytest.fixture(scope="module")
def booted(tmp_path_factory):
    vmlab.require_vm_tools()
    workdir = tmp_path_factory.mktemp("firmware-lab")
    with vmlab.running_lab(workdir, vm_kinds()) as lab:
        lab.wait_for("ipxe script fetched", TIMEOUT_SECONDS)
        yield lab


def vm_kinds():
    return ["bios-ipxe", "uefi-pxe", "uefi-http"]


def spec_of(lab, firmware):
    return next(p.spec for p in lab.progress.values() if p.spec.firmware == firmware)


def test_seabios_ipxe_rom_fetches_script(booted):
    spec = spec_of(booted, "bios-ipxe")
    console = vmlab.serial_console(booted, spec)

    assert "iPXE" in console
    assert any("ipxe script fetched" in line for line in vmlab.appliance_lines(booted, spec.mac))


def test_ovmf_pxe_downloads_ipxe_efi_then_fetches_script(booted):
    spec = spec_of(booted, "uefi-pxe")
    console = vmlab.serial_console(booted, spec)
    lines = vmlab.appliance_lines(booted, spec.mac)

    # The EDK2 PXE client got ipxe.efi named in a proxy answer and ran it.
    assert "Start PXE over IPv4" in console
    assert any("sent proxy" in line and "ipxe.efi" in line for line in lines)
    assert "Start HTTP Boot" not in console
    assert "iPXE initialising devices" in console
    assert any("ipxe script fetched" in line for line in lines)


def test_ovmf_http_boot_fetches_script(booted):
    spec = spec_of(booted, "uefi-http")
    console = vmlab.serial_console(booted, spec)
    lines = vmlab.appliance_lines(booted, spec.mac)

    # Its PXE requests were ignored, so the firmware fell through to HTTP boot.
    assert any("ignore_pxe_macs" in line for line in lines)
    assert "Start HTTP Boot over IPv4" in console
    assert any("sent proxy" in line and "http://" in line for line in lines)
    assert any("ipxe script fetched" in line for line in lines)
