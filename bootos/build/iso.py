"""The BootOS ISO: kernel and initramfs behind GRUB, bootable by BIOS and UEFI.

grub-mkrescue lays out a hybrid image (El Torito for BIOS, an EFI system
partition image for UEFI, an MBR/GPT so it also boots from a USB stick). The
menu passes no cloudboot.* parameters: an ISO is not tied to one appliance.
GRUB reads them from /boot/grub/cloudboot.cfg on the ISO when that file sets
`cloudboot_args`; the built ISO ships it empty, and a technician either edits
the menu entry at boot ('e') or writes the file into a copy of the ISO.

Everything the ISO contains is stamped with SOURCE_DATE_EPOCH. xorriso
honours that variable, but grub-mkrescue 2.06 takes the volume's date (which
GRUB also uses as the file-system UUID it searches for) and the EFI image's
FAT serial and times from the clock; so it runs under libfaketime with the
clock frozen at SOURCE_DATE_EPOCH. Without faketime the ISO still builds,
but two builds differ (the result says so). This module never touches a device.
"""

import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

from bootos.build.lock import BuildError

log = logging.getLogger(__name__)

GRUB_CFG = """\
# CloudBoot BootOS. Parameters for the agent (cloudboot.url, cloudboot.fp,
# cloudboot.mac) come from cloudboot.cfg beside this file, or add them by
# pressing 'e' on an entry.
set timeout=5
set default=0
serial --unit=0 --speed=115200
terminal_input console serial
terminal_output console serial
set cloudboot_args=""
if [ -f /boot/grub/cloudboot.cfg ]; then
    source /boot/grub/cloudboot.cfg
fi

menuentry "CloudBoot BootOS" {
    linux /boot/vmlinuz console=tty0 console=ttyS0,115200 $cloudboot_args
    initrd /boot/initrd.img
}
menuentry "CloudBoot BootOS self-test (print inventory, power off)" {
    linux /boot/vmlinuz console=tty0 console=ttyS0,115200 cloudboot.selftest=1
    initrd /boot/initrd.img
}
"""

CLOUDBOOT_CFG = """\
# Set the agent's parameters for this ISO, on one line, e.g.:
# set cloudboot_args="cloudboot.url=https://192.0.2.10 cloudboot.fp=sha256:...
#                     cloudboot.mac=aa:bb:cc:dd:ee:ff"
set cloudboot_args=""
"""


def write_iso(target, vmlinuz, initrd, work, source_date_epoch):
    """Build the hybrid ISO at target; returns True when the build is reproducible."""
    tree = Path(work) / "iso"
    (tree / "boot/grub").mkdir(parents=True)
    shutil.copyfile(vmlinuz, tree / "boot/vmlinuz")
    shutil.copyfile(initrd, tree / "boot/initrd.img")
    (tree / "boot/grub/grub.cfg").write_text(GRUB_CFG)
    (tree / "boot/grub/cloudboot.cfg").write_text(CLOUDBOOT_CFG)
    for path in [tree, *tree.rglob("*")]:
        os.utime(path, (source_date_epoch, source_date_epoch))

    env = dict(os.environ, SOURCE_DATE_EPOCH=str(source_date_epoch), TZ="UTC", LC_ALL="C")
    argv = ["grub-mkrescue", "-o", str(target), str(tree)]
    faketime = shutil.which("faketime")
    if faketime:
        frozen = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(source_date_epoch))
        argv = [faketime, "-f", frozen] + argv
    else:
        log.warning("faketime not installed: bootos.iso will differ from build to build")
    try:
        done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    except FileNotFoundError:
        raise BuildError(
            "grub-mkrescue not found; install grub-pc-bin grub-efi-amd64-bin"
        ) from None
    if done.returncode != 0:
        raise BuildError(f"grub-mkrescue failed ({done.returncode}): {done.stderr.strip()}")
    return faketime is not None
