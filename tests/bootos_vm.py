"""Boot BootOS's kernel under QEMU with an extra initramfs layer of a test's own.

The layer's /init runs what the test wants on BootOS's real kernel (its
Landlock ABI, md modules, cgroup v2) and prints one marked JSON line on the
serial console before powering off. Used by the hostile-provider and the
mdadm VM tests. No network device: the VM reaches nothing.
"""

import io
import json
import os
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BOOTOS = Path(os.environ.get("CLOUDBOOT_BOOTOS_DIR") or REPO / ".build" / "bootos")

# Lines after which the VM can only sit at a shell: stop waiting at once.
FAILURE_MARKS = ("Initramfs unpacking failed", "Kernel panic", "cannot start:", "can't run")


def newc(entries):
    """A cpio "newc" archive of (name, mode, data) entries, data None for directories."""
    out = io.BytesIO()
    for inode, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], 1):
        body = data or b""
        raw_name = name.encode() + b"\0"
        fields = [inode, mode, 0, 0, 1, 0, len(body), 0, 0, 0, 0, len(raw_name), 0]
        out.write(b"070701" + b"".join(b"%08X" % f for f in fields) + raw_name)
        out.write(b"\0" * (-out.tell() % 4))
        out.write(body)
        out.write(b"\0" * (-out.tell() % 4))
    return out.getvalue()


def combined_initrd(layer):
    """BootOS's initramfs, then `layer`: the kernel unpacks both, later files winning.

    Both go in uncompressed: an uncompressed archive after a compressed one
    depended on where the compressed stream happened to end, and one BootOS
    build failed with "Initramfs unpacking failed: invalid magic".
    """
    base = subprocess.run(
        ["zstd", "-dc", str(BOOTOS / "initrd.img")], capture_output=True, check=True
    ).stdout
    return base + b"\0" * (-len(base) % 512) + layer


def boot(workdir, layer, marker, *, disks=(), timeout=900):
    """Boot with the layer; return (the marked JSON report, seconds). Disks are raw files."""
    initrd = workdir / "initrd-test.img"
    initrd.write_bytes(combined_initrd(layer))
    console = workdir / "console.log"
    argv = [
        "qemu-system-x86_64", "-accel", "tcg", "-m", "1024", "-smp", "1",
        "-display", "none", "-nodefaults", "-no-user-config", "-nic", "none", "-no-reboot",
        "-serial", f"file:{console}",
        "-kernel", str(BOOTOS / "vmlinuz"), "-initrd", str(initrd),
        "-append", "console=ttyS0 panic=-1 quiet",
    ]  # fmt: skip
    for disk in disks:
        argv += ["-drive", f"file={disk},if=virtio,format=raw"]

    started = time.monotonic()
    qemu = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    try:
        while qemu.poll() is None and time.monotonic() - started < timeout:
            text = console.read_text(errors="replace") if console.exists() else ""
            if any(mark in text for mark in FAILURE_MARKS):
                break
            time.sleep(1)
    finally:
        qemu.kill()
        qemu.wait()

    text = console.read_text(errors="replace") if console.exists() else ""
    for line in text.splitlines():
        if line.startswith(marker):
            return json.loads(line[len(marker) :]), time.monotonic() - started
    raise AssertionError(f"no result line on the console; its end:\n{text[-3000:]}")
