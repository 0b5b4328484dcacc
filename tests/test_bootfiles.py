"""`cloudboot bootfiles install`: iPXE from Debian's package and BootOS into the data dir."""

import subprocess
import sys
from pathlib import Path

import pytest

from appliance import bootfiles, config
from tests.conftest import REPO

needs_ipxe = pytest.mark.skipif(
    not (bootfiles.IPXE_DIR / "ipxe.efi").is_file(),
    reason="Debian's ipxe package is not installed",
)


def fake_bootos(folder):
    folder.mkdir()
    (folder / "vmlinuz").write_bytes(b"kernel")
    (folder / "initrd.img").write_bytes(b"initramfs")
    return folder


@needs_ipxe
def test_install_puts_each_file_where_its_server_reads_it(tmp_path):
    settings = config.load(overrides={"server.data_dir": str(tmp_path / "data")})
    assert len(bootfiles.missing(settings)) == 5

    written, absent = bootfiles.install(settings, fake_bootos(tmp_path / "bootos"))

    assert absent == []
    assert (settings.tftp_root / "undionly.kpxe").read_bytes() == (
        bootfiles.IPXE_DIR / "undionly.kpxe"
    ).read_bytes()
    assert (settings.boot_root / "ipxe" / "ipxe.efi").is_file()
    assert (settings.boot_root / "bootos" / "initrd.img").read_bytes() == b"initramfs"
    assert bootfiles.missing(settings) == []
    assert len(written) == 8


@needs_ipxe
def test_command_names_a_missing_bootos(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "bootfiles", "install"]
        + ["--data-dir", str(tmp_path / "data"), "--bootos", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"cloudboot: error: {Path(tmp_path / 'none' / 'vmlinuz')} does not exist "
        "(python3 build.py bootos)"
    )
