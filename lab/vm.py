"""Virtual servers for the lab: QEMU under TCG with each of the three x86 boot paths.

- "bios-ipxe": SeaBIOS running the iPXE option ROM Debian ships for virtio-net
  (what many older servers do once iPXE is flashed or chain-loaded).
- "uefi-pxe": OVMF with its own EDK2 PXE stack (the NIC's option ROM is removed
  with romfile=), like the UEFI firmware of a real server: it must fetch
  ipxe.efi over TFTP first.
- "uefi-http": OVMF again, but the appliance ignores its PXE requests so the
  firmware falls through to UEFI HTTP boot.

Each VM gets its own SMBIOS identity, two disks and two NICs, so the inventory
the agent reports can be compared with what QEMU was told. Every VM runs inside
the lab namespace on a tap device; it must never get a NIC on a host network.
"""

import logging
import shutil
import socket
import struct
import subprocess
import time
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from lab import netns

logger = logging.getLogger(__name__)

FIRMWARE_KINDS = ("bios-ipxe", "uefi-pxe", "uefi-http")
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
GIB = 1024**3


@dataclass
class Disk:
    size_bytes: int
    serial: str
    # "virtio" (virtio-blk) or "nvme": the two kinds a server's inventory shows.
    bus: str = "virtio"


@dataclass
class VmSpec:
    """What QEMU is told about one virtual server; the inventory must match it."""

    name: str
    firmware: str
    mac: str
    second_mac: str
    manufacturer: str
    product: str
    serial: str
    uuid: str
    board_product: str = ""
    chassis_serial: str = ""
    memory_mb: int = 1024
    disks: list = field(default_factory=list)

    def smbios_args(self):
        """-smbios options for types 0-3 (commas in values would need doubling; none here)."""
        return [
            "-smbios",
            "type=0,vendor=CloudBoot Lab,version=lab-1.0,date=12/01/2026",
            "-smbios",
            f"type=1,manufacturer={self.manufacturer},product={self.product},"
            f"version=lab,serial={self.serial},uuid={self.uuid},sku={self.product},"
            "family=Rack Server",
            "-smbios",
            f"type=2,manufacturer={self.manufacturer},product={self.board_product},"
            f"serial=BRD{self.serial}",
            "-smbios",
            f"type=3,manufacturer={self.manufacturer},serial={self.chassis_serial}",
        ]


# (name, firmware, manufacturer, product, board product, serial prefix)
_MODELS = [
    ("huawei-2288h", "bios-ipxe", "Huawei", "2288H V5", "BC11SPSCB0", "2102311TYB"),
    ("inspur-nf5280", "uefi-pxe", "Inspur", "NF5280M6", "YZMB-02130-101", "220398761"),
    ("sugon-i620", "uefi-http", "Sugon", "I620-G30", "60P24-US", "SG2024A"),
]


def default_specs(count=3, suffix=""):
    """count VM specs cycling through the three firmware paths, each with unique identities."""
    specs = []
    for index in range(count):
        name, firmware, maker, product, board, serial = _MODELS[index % len(_MODELS)]
        round_ = index // len(_MODELS)
        if round_:
            name = f"{name}-{round_}"
        specs.append(
            VmSpec(
                name=name,
                firmware=firmware,
                # 52:54:00 is QEMU's prefix; the fourth byte marks the lab.
                mac=f"52:54:00:7c:{index:02x}:01",
                second_mac=f"52:54:00:7c:{index:02x}:02",
                manufacturer=maker,
                product=product,
                board_product=board,
                serial=f"{serial}{suffix}{index:03d}",
                chassis_serial=f"CH{serial}{index:03d}",
                uuid=str(uuid.uuid4()),
                disks=[
                    Disk(8 * GIB, f"VD{index:02d}A{suffix}", "virtio"),
                    Disk(12 * GIB, f"NV{index:02d}B{suffix}", "nvme"),
                ],
            )
        )
    return specs


def tap_names(index):
    """Tap device names for VM number index (kept under 15 characters)."""
    return f"tap{index}a", f"tap{index}b"


def prepare(spec, workdir):
    """Sparse disk images and (for UEFI) a private copy of the variable store."""
    workdir.mkdir(parents=True, exist_ok=True)
    for number, disk in enumerate(spec.disks):
        image = workdir / f"{spec.name}-disk{number}.raw"
        with open(image, "wb") as f:
            f.truncate(disk.size_bytes)
    (workdir / "sercon-port").write_bytes((0x3F8).to_bytes(2, "little"))
    if spec.firmware != "bios-ipxe":
        shutil.copyfile(OVMF_VARS, workdir / f"{spec.name}-vars.fd")


def qemu_argv(spec, workdir, taps):
    """The full qemu-system-x86_64 command line for spec."""
    argv = [
        "qemu-system-x86_64",
        "-name",
        spec.name,
        "-machine",
        "q35",
        # KVM guests fault on these machines (nested virtualisation): see LAB.md.
        "-accel",
        "tcg",
        "-m",
        str(spec.memory_mb),
        "-smp",
        "1",
        "-display",
        "none",
        "-no-user-config",
        "-nodefaults",
        "-vga",
        "std",
        "-serial",
        f"file:{workdir / f'vm-{spec.name}.log'}",
        # The monitor lets a person (or a failing test) take a screendump of
        # the VGA console, where BootOS's /init prints when tty0 is its console.
        "-monitor",
        f"unix:{workdir / f'vm-{spec.name}.monitor'},server,nowait",
        *spec.smbios_args(),
        *_firmware_args(spec, workdir),
        *_nic_args(spec, taps),
        *_disk_args(spec, workdir),
    ]
    return argv


def _firmware_args(spec, workdir):
    if spec.firmware == "bios-ipxe":
        # SeaBIOS copies its screen (and so iPXE's) to the serial port named by
        # this file, a little-endian integer; the log then shows each step. A
        # server that found nothing to boot retries, so SeaBIOS reboots too.
        return [
            "-fw_cfg",
            f"name=etc/sercon-port,file={workdir / 'sercon-port'}",
            "-boot",
            "reboot-timeout=5000",
        ]
    args = [
        "-drive",
        f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
        "-drive",
        f"if=pflash,format=raw,unit=1,file={workdir / f'{spec.name}-vars.fd'}",
    ]
    if spec.firmware == "uefi-http":
        # A server set up for HTTP boot; without this OVMF first spends a long
        # while waiting for a DHCPv6 server the lab does not have.
        args += ["-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n"]
    return args


def _nic_args(spec, taps):
    # The default ROM of virtio-net is iPXE (ipxe-qemu); an empty romfile leaves
    # OVMF's own network stack in charge, like on a real server.
    romfile = ",romfile=" if spec.firmware != "bios-ipxe" else ""
    boot_tap, other_tap = taps
    return [
        "-netdev",
        f"tap,id=net0,ifname={boot_tap},script=no,downscript=no",
        "-device",
        f"virtio-net-pci,netdev=net0,mac={spec.mac},bootindex=1{romfile}",
        "-netdev",
        f"tap,id=net1,ifname={other_tap},script=no,downscript=no",
        # The second NIC never boots: no ROM, no boot index.
        "-device",
        f"virtio-net-pci,netdev=net1,mac={spec.second_mac},romfile=",
    ]


def _disk_args(spec, workdir):
    args = []
    for number, disk in enumerate(spec.disks):
        image = workdir / f"{spec.name}-disk{number}.raw"
        drive = f"disk{number}"
        args += ["-drive", f"file={image},if=none,id={drive},format=raw"]
        if disk.bus == "nvme":
            args += ["-device", f"nvme,drive={drive},serial={disk.serial}"]
        else:
            args += ["-device", f"virtio-blk-pci,drive={drive},serial={disk.serial}"]
    return args


def start(spec, network, index, workdir):
    """Make the taps, then start the VM inside the lab namespace; returns the Popen."""
    workdir = Path(workdir)
    prepare(spec, workdir)
    taps = tap_names(index)
    netns.add_tap(network.netns, taps[0], network.bridge)
    netns.add_tap(network.netns, taps[1], network.isolated_bridge)

    out = open(workdir / f"qemu-{spec.name}.out", "ab")  # noqa: SIM115 - handed to the child
    process = subprocess.Popen(
        netns.ns_argv(network.netns, qemu_argv(spec, workdir, taps)),
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    out.close()
    logger.info("vm %s (%s) started, pid %d", spec.name, spec.firmware, process.pid)
    return process


def screendump(spec, workdir):
    """Save the VM's VGA screen as vm-<name>.png; returns the path, or None if it failed.

    BootOS's /init prints on the VGA console, so when a VM is stuck after the
    kernel started, the screen says why (the serial log does not).
    """
    workdir = Path(workdir)
    ppm = workdir / f"vm-{spec.name}.ppm"
    png = workdir / f"vm-{spec.name}.png"
    ppm.unlink(missing_ok=True)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as monitor:
            monitor.settimeout(5)
            monitor.connect(str(workdir / f"vm-{spec.name}.monitor"))
            monitor.sendall(f"screendump {ppm}\n".encode())
            deadline = time.monotonic() + 5
            while not ppm.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(0.5)
        png.write_bytes(ppm_to_png(ppm.read_bytes()))
    except (OSError, ValueError) as e:
        logger.warning("screendump of %s failed: %s", spec.name, e)
        return None
    finally:
        ppm.unlink(missing_ok=True)
    return png


def ppm_to_png(data):
    """Convert QEMU's binary PPM (P6, maxval 255) screendump to PNG bytes."""
    magic, size, maxval, pixels = data.split(b"\n", 3)
    if magic != b"P6" or maxval != b"255":
        raise ValueError(f"not a P6/255 PPM: {data[:20]!r}")
    width, height = (int(n) for n in size.split())
    row = width * 3
    if len(pixels) < row * height:
        raise ValueError(f"PPM is short: {len(pixels)} bytes for {width}x{height}")
    raw = b"".join(b"\0" + pixels[y * row : (y + 1) * row] for y in range(height))

    def chunk(kind, body):
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
