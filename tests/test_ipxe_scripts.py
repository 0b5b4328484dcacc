"""iPXE script rendering: the scripts' shape, and refusal of anything that could inject."""

import pytest

from appliance.proto.ipxe import (
    check_kernel_args,
    render_bootos_script,
    render_local_disk_script,
    render_wait_script,
)

KERNEL = "http://192.0.2.1:80/boot/bootos/vmlinuz"
INITRD = "http://192.0.2.1:80/boot/bootos/initrd.img"
CMDLINE = (
    "cloudboot.url=https://192.0.2.1:443 cloudboot.fp=sha256:" + "ab" * 32 + " "
    "cloudboot.mac=52:54:00:12:34:56 cloudboot.proto=1 console=ttyS0,115200 console=tty0"
)


def test_bootos_script_fetches_kernel_and_initrd_and_retries():
    script = render_bootos_script(KERNEL, INITRD, CMDLINE)
    lines = script.splitlines()

    assert lines[0] == "#!ipxe"
    assert f"kernel {KERNEL} initrd=initrd.img {CMDLINE} || goto failed" in lines
    assert f"initrd --name initrd.img {INITRD} || goto failed" in lines
    assert "boot || goto failed" in lines
    assert lines.index(":failed") < lines.index("goto retry")
    assert any(line.startswith("sleep ") for line in lines)
    assert "imgverify" not in script


def test_local_disk_script_uses_sanboot_on_bios_and_exit_on_uefi():
    script = render_local_disk_script()

    assert script.startswith("#!ipxe\n")
    assert "iseq ${platform} efi && goto uefi ||" in script
    assert "sanboot --no-describe --drive 0x80" in script
    assert script.splitlines()[-1] == "exit"


def test_wait_script_chains_the_given_url_or_the_mac_script():
    script = render_wait_script(
        "waiting for approval", 30, "http://192.0.2.1/ipxe/52-54-00-12-34-56.ipxe"
    )
    assert "echo CloudBoot: waiting for approval" in script
    assert "sleep 30" in script
    assert (
        "chain --replace --autofree http://192.0.2.1/ipxe/52-54-00-12-34-56.ipxe || goto retry"
        in script
    )

    assert "chain --replace --autofree ${mac:hexhyp}.ipxe || goto retry" in render_wait_script(
        "hold", 5
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://192.0.2.1/x\nshell",
        "http://192.0.2.1/${net0/ip}",
        "http://192.0.2.1/a || shell",
        "http://192.0.2.1/a&&shell",
        "ftp://192.0.2.1/a",
        "http://192.0.2.1/a b",
        "http://192.0.2.1/a#frag",
        "http://192.0.2.1/a;shell",
        "",
        None,
    ],
)
def test_unsafe_urls_are_refused(url):
    with pytest.raises(ValueError):
        render_bootos_script(url, INITRD, CMDLINE)
    with pytest.raises(ValueError):
        render_bootos_script(KERNEL, url, CMDLINE)


@pytest.mark.parametrize(
    "cmdline",
    [
        "quiet\nshell",
        "quiet ${root}",
        "quiet || shell",
        "a && b",
        "quiet\tsplash",
        'init="/bin/sh"',
        "x\\y",
        "a #comment",
    ],
)
def test_unsafe_kernel_arguments_are_refused(cmdline):
    with pytest.raises(ValueError):
        render_bootos_script(KERNEL, INITRD, cmdline)


@pytest.mark.parametrize("message", ["hi\nshell", "cost ${x}", "a || b", "x" * 201])
def test_unsafe_messages_are_refused(message):
    with pytest.raises(ValueError):
        render_wait_script(message, 5)


@pytest.mark.parametrize("seconds", [0, -1, 3601, 1.5, "5", True])
def test_wait_must_be_whole_seconds_in_range(seconds):
    with pytest.raises(ValueError):
        render_wait_script("hold", seconds)


def test_kernel_args_split_on_spaces():
    assert check_kernel_args("  a=1  b ") == ["a=1", "b"]
