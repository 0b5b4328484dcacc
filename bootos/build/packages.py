"""What BootOS takes from each Debian package.

Every package is unpacked with `dpkg-deb -x` into a scratch directory; this
table says which of its files go into the initramfs. Libraries come whole
(minus documentation); tool packages give only the programs the agent and a
technician call, and the builder then checks that every library those
programs need is present. Kernel modules are chosen separately by name
(MODULES) and their dependencies are resolved from the package's own modules.

Nothing here is downloaded or executed: this is data for lock.py and root.py.
"""

KERNEL_META = "linux-image-amd64"

ALL = ("*",)

# package -> glob patterns (relative to the unpacked package root) to copy.
SELECTION = {
    "busybox-static": ALL,
    "kmod": ("bin/kmod", "bin/lsmod", "sbin/*"),
    "python3.11-minimal": ALL,
    "libpython3.11-minimal": ALL,
    "libpython3.11-stdlib": ALL,
    "dmidecode": ("usr/sbin/dmidecode",),
    "util-linux": ("bin/lsblk", "sbin/blkid", "usr/bin/lsblk"),
    "ethtool": ("sbin/ethtool", "usr/sbin/ethtool"),
    "pciutils": ("usr/bin/lspci",),
    "pci.ids": ALL,
    "ipmitool": ("usr/bin/ipmitool",),
    "mdadm": ("sbin/mdadm",),
    # Shared libraries the programs above need (checked after copying).
    "libc6": ALL,
    "libssl3": ALL,
    "zlib1g": ALL,
    "libffi8": ALL,
    "libexpat1": ALL,
    "libbz2-1.0": ALL,
    "liblzma5": ALL,
    "libzstd1": ALL,
    "libuuid1": ALL,
    "libkmod2": ALL,
    "libblkid1": ALL,
    "libmount1": ALL,
    "libsmartcols1": ALL,
    "libudev1": ALL,
    "libselinux1": ALL,
    "libpcre2-8-0": ALL,
    "libmnl0": ALL,
    "libpci3": ALL,
    "libfreeipmi17": ALL,
    "libgcrypt20": ALL,
    "libgpg-error0": ALL,
    "libreadline8": ALL,
    "libtinfo6": ALL,
}

# Removed from every package: documentation, translations, and glibc's
# character-set converters (iconv), which nothing in BootOS uses.
PRUNE = (
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/lintian",
    "usr/share/locale",
    "usr/share/bug",
    "usr/lib/x86_64-linux-gnu/gconv",
    "usr/share/gcc",
    "usr/share/gdb",
    "etc/init.d",
    "etc/cron.d",
    "etc/cron.daily",
    "lib/systemd",
    "lib/udev",
    "usr/lib/python3.11/ensurepip",
    "usr/lib/python3.11/idlelib",
    "usr/lib/python3.11/lib2to3",
    "usr/lib/python3.11/pydoc_data",
)

# Driver modules real servers need. Their dependencies come from modules.dep.
NETWORK_MODULES = (
    "virtio_net",
    "e1000",
    "e1000e",
    "igb",
    "ixgbe",
    "i40e",
    "ice",
    "mlx4_en",
    "mlx5_core",
    "bnxt_en",
    "tg3",
    "bnx2x",
    "hinic",
)
STORAGE_MODULES = (
    "ahci",
    "nvme",
    "megaraid_sas",
    "mpt3sas",
    "smartpqi",
    "hpsa",
    "virtio_blk",
    "virtio_scsi",
    "sd_mod",
)
RAID_MODULES = ("md_mod", "raid0", "raid1", "raid10", "raid456", "linear")
# The PCI transport for every virtio device, and USB keyboards for a
# technician at the server's console or its BMC's virtual KVM.
PLATFORM_MODULES = (
    "virtio_pci",
    "xhci_pci",
    "ehci_pci",
    "uhci_hcd",
    "usbhid",
    "hid_generic",
)
MODULES = NETWORK_MODULES + STORAGE_MODULES + RAID_MODULES + PLATFORM_MODULES


def wanted_packages(kernel_package):
    """Every package name the lock pins, the kernel included."""
    return {kernel_package, *SELECTION}
