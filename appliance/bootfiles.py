"""The files the boot plane serves: iPXE binaries and BootOS.

iPXE comes from Debian's `ipxe` package (/usr/lib/ipxe); BootOS from
`python3 build.py bootos` (.build/bootos). Nothing is downloaded at run
time: `cloudboot bootfiles install` copies them into the data directory,
where TFTP (<data_dir>/tftp) and HTTP (<data_dir>/boot) serve them, and
`cloudboot serve` says at start which are missing.
"""

import logging
import shutil
from pathlib import Path

logger = logging.getLogger(__name__)

IPXE_DIR = Path("/usr/lib/ipxe")
# BIOS PXE chainloads undionly.kpxe (it keeps the NIC's own UNDI driver);
# UEFI gets ipxe.efi, and snponly.efi is there for NICs whose UEFI driver
# iPXE should keep using.
IPXE_BINARIES = ("undionly.kpxe", "ipxe.efi", "snponly.efi")
BOOTOS_FILES = ("vmlinuz", "initrd.img")


class BootFilesError(Exception):
    """A source file is missing or the data directory cannot take the copy."""


def install(settings, bootos_dir, ipxe_dir=IPXE_DIR, require_bootos=True):
    """Copy iPXE to the TFTP root and /boot/ipxe, BootOS to /boot/bootos.

    Returns (files written, BootOS sources missing). A missing iPXE binary,
    or a missing BootOS file when require_bootos is true, raises
    BootFilesError naming it (the lab passes False: firmware can still be
    watched reaching its iPXE script without BootOS).
    """
    sources = [(Path(ipxe_dir) / name, "ipxe", name) for name in IPXE_BINARIES]
    sources += [(Path(bootos_dir) / name, "bootos", name) for name in BOOTOS_FILES]
    absent = [source for source, _, _ in sources if not source.is_file()]
    for source, kind, _ in sources:
        if source in absent and (kind == "ipxe" or require_bootos):
            hint = "apt-get install ipxe" if kind == "ipxe" else "python3 build.py bootos"
            raise BootFilesError(f"{source} does not exist ({hint})")

    written = []
    try:
        for source, kind, name in sources:
            if source in absent:
                continue
            targets = [settings.boot_root / kind / name]
            if kind == "ipxe":
                targets.append(settings.tftp_root / name)
            for target in targets:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
                written.append(str(target))
    except OSError as e:
        raise BootFilesError(f"cannot copy boot files: {e}") from None
    return written, [str(source) for source in absent]


def missing(settings):
    """Boot files the appliance would need but does not have, for a start-up warning."""
    wanted = [settings.tftp_root / settings.dhcp.bios_boot_file]
    wanted.append(settings.tftp_root / settings.dhcp.uefi_x64_boot_file)
    wanted += [settings.boot_root / "ipxe" / "ipxe.efi"]
    wanted += [settings.boot_root / "bootos" / name for name in BOOTOS_FILES]
    return [str(path) for path in wanted if not path.is_file()]
