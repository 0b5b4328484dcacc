"""The lab end to end: each firmware path boots BootOS and registers with its true inventory.

Three VMs (SeaBIOS + iPXE ROM, OVMF PXE, OVMF HTTP boot) power on at once in a
private lab. Each must appear in GET /api/v1/machines under its boot MAC, and
the inventory the appliance stored must equal what QEMU was given: SMBIOS
system manufacturer, product, serial and UUID, both disks (serial and size)
and both NIC MACs.
"""

import pytest

from tests import vmlab

pytestmark = [pytest.mark.vm, pytest.mark.netns]

# Under TCG: ~100 s of OVMF PXE time-outs, then BootOS and the agent.
TIMEOUT_SECONDS = 600


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    vmlab.require_vm_tools()
    vmlab.require_bootos()
    workdir = tmp_path_factory.mktemp("registration-lab")
    with vmlab.running_lab(workdir, ["bios-ipxe", "uefi-pxe", "uefi-http"]) as lab:
        lab.wait_for("registered", TIMEOUT_SECONDS)
        yield lab


@pytest.mark.parametrize("firmware", ["bios-ipxe", "uefi-pxe", "uefi-http"])
def test_registers_with_the_inventory_qemu_was_given(registered, firmware):
    progress = next(p for p in registered.progress.values() if p.spec.firmware == firmware)

    assert progress.machine["boot_mac"] == progress.spec.mac
    assert progress.problems == []


def test_every_vm_went_through_the_ipxe_script(registered):
    for progress in registered.progress.values():
        assert "ipxe script fetched" in progress.reached, progress.spec.name
