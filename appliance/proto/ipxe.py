"""iPXE scripts the appliance hands to booting machines.

Pure functions that return script text: no trio, no sockets, no store. Every
value put into a script is checked first, because iPXE expands `${...}` and
treats `||`, `&&` and whitespace as syntax anywhere on a line: a URL or a
kernel argument holding one of those would change what the machine runs.
A value that fails the check raises ValueError; nothing is escaped or dropped
silently.

The scripts assume iPXE 1.21 or later (Debian 12's ipxe package): `chain
--replace --autofree`, `initrd --name` and the `${platform}` setting exist there.
"""

import re

# iPXE syntax characters: $ { } start an expansion, | & ; # " ' \ and whitespace
# split or chain commands. None of them may appear in an interpolated value.
_URL = re.compile(r"https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/%+=,@:?-]*)?")
_KERNEL_ARG = re.compile(r"[A-Za-z0-9._~/%+=,@:?\-]+")
_MESSAGE = re.compile(r"[A-Za-z0-9 .,:()/_+=@!?\-]*")
_RETRY_SECONDS = 5
# The initrd is named so that the kernel's EFI stub finds it by `initrd=` on UEFI
# (iPXE before the LoadFile2 initrd protocol only offers it that way); BIOS ignores it.
_INITRD_NAME = "initrd.img"


def render_bootos_script(kernel_url, initrd_url, cmdline):
    """Boot BootOS: fetch kernel and initrd over HTTP, retrying every few seconds on failure."""
    kernel_url = check_url(kernel_url)
    initrd_url = check_url(initrd_url)
    arguments = " ".join(check_kernel_args(cmdline))

    return "\n".join(
        [
            "#!ipxe",
            "# CloudBoot NG: boot BootOS (discovery, inventory and provisioning).",
            "# Any failed step waits and starts again, so a busy appliance only slows the boot.",
            ":retry",
            "imgfree",
            f"kernel {kernel_url} initrd={_INITRD_NAME} {arguments} || goto failed",
            f"initrd --name {_INITRD_NAME} {initrd_url} || goto failed",
            "boot || goto failed",
            ":failed",
            f"echo CloudBoot: BootOS download or boot failed, retrying in {_RETRY_SECONDS} s",
            f"sleep {_RETRY_SECONDS}",
            "goto retry",
            "",
        ]
    )


def render_local_disk_script():
    """Boot from the local disk: sanboot on BIOS, exit back to the firmware on UEFI.

    iPXE sets ${platform} to "pcbios" or "efi". On BIOS, `sanboot --drive 0x80`
    boots the first hard disk's MBR (--no-describe: publish no iBFT/aBFT table, the
    disk is local). On UEFI, `exit` returns to the firmware, which tries the next
    boot option (the installed OS), which is how UEFI expects a network boot to end.
    """
    return "\n".join(
        [
            "#!ipxe",
            "# CloudBoot NG: this machine is deployed; boot its local disk.",
            "iseq ${platform} efi && goto uefi ||",
            "echo CloudBoot: booting from the local disk (BIOS drive 0x80)",
            "sanboot --no-describe --drive 0x80 || goto bios_failed",
            ":bios_failed",
            "echo CloudBoot: the local disk did not boot; handing back to the BIOS",
            "exit 1",
            ":uefi",
            "echo CloudBoot: handing back to the UEFI firmware to boot the next boot option",
            "exit",
            "",
        ]
    )


def render_wait_script(message, seconds, url=None):
    """Show `message`, wait `seconds`, then chain `url` again (the same script).

    Without `url` the script chains "${mac:hexhyp}.ipxe", which iPXE resolves
    against the URL the script itself came from (/ipxe/<mac>.ipxe).
    """
    message = check_message(message)
    if not isinstance(seconds, int) or isinstance(seconds, bool) or not 1 <= seconds <= 3600:
        raise ValueError(f"wait must be a whole number of seconds from 1 to 3600, got {seconds!r}")
    target = "${mac:hexhyp}.ipxe" if url is None else check_url(url)

    return "\n".join(
        [
            "#!ipxe",
            "# CloudBoot NG: nothing to boot yet; ask the appliance again later.",
            ":retry",
            f"echo CloudBoot: {message}",
            f"echo CloudBoot: asking the appliance again in {seconds} s",
            f"sleep {seconds}",
            f"chain --replace --autofree {target} || goto retry",
            "",
        ]
    )


def check_url(value):
    """The URL, if it is a plain http(s) URL with no iPXE syntax; else ValueError."""
    if not isinstance(value, str) or not _URL.fullmatch(value):
        raise ValueError(f"not a URL that is safe in an iPXE script: {value!r}")
    return value


def check_kernel_args(cmdline):
    """The kernel command line split into arguments, each free of iPXE syntax."""
    if not isinstance(cmdline, str):
        raise ValueError(f"kernel command line must be text, got {cmdline!r}")
    arguments = cmdline.split(" ")
    arguments = [argument for argument in arguments if argument]
    for argument in arguments:
        if not _KERNEL_ARG.fullmatch(argument):
            raise ValueError(f"kernel argument not safe in an iPXE script: {argument!r}")
    return arguments


def check_message(value):
    if not isinstance(value, str) or not _MESSAGE.fullmatch(value) or len(value) > 200:
        raise ValueError(f"message not safe in an iPXE script: {value!r}")
    return value
