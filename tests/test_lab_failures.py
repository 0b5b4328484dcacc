"""When a VM does not get through its boot, the lab says which step it reached and why.

A SeaBIOS + iPXE VM boots against an appliance that has no BootOS to give it
(as when BootOS was never built): it gets an address, the proxy answer and
its iPXE script, then iPXE finds no kernel. The lab must give up at its time
limit with a message naming the VM, the last step it reached, its serial
console and a picture of its screen, instead of waiting forever.
"""

import pytest

from lab import session
from tests import vmlab

pytestmark = [pytest.mark.vm, pytest.mark.netns]


def test_vm_that_cannot_register_is_reported_with_its_last_step(tmp_path):
    vmlab.require_vm_tools()
    said = []
    empty_bootos = tmp_path / "no-bootos"
    empty_bootos.mkdir()

    with vmlab.running_lab(
        tmp_path / "lab", ["bios-ipxe"], report=said.append, bootos_dir=empty_bootos
    ) as lab:
        lab.wait_for("ipxe script fetched", 180)
        with pytest.raises(session.LabError) as failure:
            lab.wait_for("registered", 30)

    spec = next(iter(lab.progress.values())).spec
    message = str(failure.value)
    assert any(line.startswith("BootOS missing") for line in said)
    assert "did not reach 'registered' within 30 s" in message
    assert f"{spec.name} (bios-ipxe) reached: " in message
    assert "ipxe script fetched" in message
    assert f"vm-{spec.name}.log" in message
    assert (tmp_path / "lab" / f"vm-{spec.name}.png").read_bytes().startswith(b"\x89PNG")
