"""Boot-plane routes: /boot/<path> files and /ipxe/<mac>.ipxe scripts, with real curl."""

import logging
import os

import pytest

from appliance.boot.artifacts import default_script_for_mac, register_routes
from appliance.config import Settings
from appliance.http import Router
from appliance.proto.bootparams import parse_cmdline
from tests.http_support import curl, parse_head, raw_exchange, start_server

FINGERPRINT = "sha256:" + "cd" * 32


@pytest.fixture
def settings(tmp_path):
    settings = Settings()
    settings.server.data_dir = str(tmp_path / "data")
    settings.server.advertise_address = "127.0.0.1"
    root = settings.boot_root
    (root / "bootos").mkdir(parents=True)
    (root / "bootos" / "vmlinuz").write_bytes(os.urandom(200_000))
    (root / "bootos" / "initrd.img").write_bytes(os.urandom(1_000_000))
    (root / ".hidden").write_text("no")
    (tmp_path / "secret.txt").write_text("outside the boot root")
    (root / "escape").symlink_to(tmp_path / "secret.txt")
    (root / "inside").symlink_to(root / "bootos" / "vmlinuz")
    return settings


@pytest.fixture
async def served(nursery, settings):
    router = Router()
    script_for_mac = default_script_for_mac(
        settings, {"url": "https://127.0.0.1:443", "fingerprint": FINGERPRINT}
    )
    files = register_routes(router, settings, script_for_mac)
    port = await start_server(nursery, router)
    return files, f"http://127.0.0.1:{port}"


async def test_boot_file_download_head_and_range(served, settings):
    _, base = served
    initrd = (settings.boot_root / "bootos" / "initrd.img").read_bytes()

    full = await curl(f"{base}/boot/bootos/initrd.img")
    assert full.stdout == initrd

    head = await curl("-I", f"{base}/boot/bootos/initrd.img")
    status, headers = parse_head(head.stdout)
    assert status == 200 and int(headers["content-length"]) == len(initrd)
    assert headers["accept-ranges"] == "bytes"

    part = await curl("-i", "-r", "1000-1999", f"{base}/boot/bootos/initrd.img")
    status, headers = parse_head(part.stdout)
    assert status == 206
    assert headers["content-range"] == f"bytes 1000-1999/{len(initrd)}"
    assert part.stdout.split(b"\r\n\r\n", 1)[1] == initrd[1000:2000]

    beyond = await curl("-i", "-r", f"{len(initrd)}-", f"{base}/boot/bootos/initrd.img")
    assert parse_head(beyond.stdout)[0] == 416


async def test_resumed_download_with_curl_continue(served, settings, tmp_path):
    _, base = served
    initrd = (settings.boot_root / "bootos" / "initrd.img").read_bytes()
    partial = tmp_path / "partial.img"
    partial.write_bytes(initrd[:300_000])

    await curl("-C", "-", "-o", str(partial), f"{base}/boot/bootos/initrd.img")

    assert partial.read_bytes() == initrd


async def test_symlink_inside_the_root_is_served(served, settings):
    _, base = served
    result = await curl(f"{base}/boot/inside")
    assert result.stdout == (settings.boot_root / "bootos" / "vmlinuz").read_bytes()


@pytest.mark.parametrize(
    "target, status",
    [
        (b"/boot/../secret.txt", 400),
        (b"/boot/bootos/../../secret.txt", 400),
        (b"/boot/%2e%2e/secret.txt", 400),
        (b"/boot/%2E%2E%2Fsecret.txt", 400),
        (b"/boot/bootos%2fvmlinuz", 400),
        (b"/boot/a%00b", 400),
        (b"/boot/.hidden", 400),
        (b"/boot/bootos//vmlinuz", 400),
        (b"/boot/escape", 404),
        (b"/boot/bootos", 404),
        (b"/boot/nothing", 404),
    ],
)
async def test_traversal_and_odd_paths_are_refused(served, target, status, caplog):
    _, base = served
    port = int(base.rsplit(":", 1)[1])

    with caplog.at_level(logging.WARNING):
        request = b"GET " + target + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        answer = await raw_exchange(port, request, 2)

    assert parse_head(answer)[0] == status
    assert b"outside the boot root" not in answer
    if target in (b"/boot/escape", b"/boot/%2e%2e/secret.txt"):
        assert any("refused boot file request" in r.getMessage() for r in caplog.records)


async def test_ipxe_script_for_a_mac_boots_bootos_and_is_recorded(served, caplog):
    files, base = served

    with caplog.at_level(logging.INFO, logger="appliance.boot.artifacts"):
        result = await curl("-i", f"{base}/ipxe/52-54-00-AB-cd-01.ipxe")

    status, headers = parse_head(result.stdout)
    script = result.stdout.split(b"\r\n\r\n", 1)[1].decode()
    assert status == 200
    assert script.startswith("#!ipxe\n")
    # The script names the advertised address and server.http_port, not the test's port.
    assert "kernel http://127.0.0.1:80/boot/bootos/vmlinuz initrd=initrd.img " in script
    assert "initrd --name initrd.img http://127.0.0.1:80/boot/bootos/initrd.img" in script
    kernel_line = next(line for line in script.splitlines() if line.startswith("kernel "))
    params = parse_cmdline(kernel_line.removesuffix(" || goto failed"))
    assert params["mac"] == "52:54:00:ab:cd:01"
    assert params["fp"] == FINGERPRINT
    assert "console=tty0 console=ttyS0,115200" in kernel_line

    assert "52:54:00:ab:cd:01" in files.fetch_log
    assert files.fetch_log.get("52-54-00-ab-cd-01")["count"] == 1
    fetched = [r for r in caplog.records if r.getMessage() == "ipxe script fetched"]
    assert len(fetched) == 1


async def test_colon_mac_is_accepted_and_bad_macs_are_400(served):
    files, base = served

    ok = await curl("-i", f"{base}/ipxe/52:54:00:00:00:02.ipxe")
    assert parse_head(ok.stdout)[0] == 200
    assert files.fetch_log.get("52:54:00:00:00:02")["count"] == 1

    for bad in ("52-54-00-00-00", "52-54:00-00-00-02", "zz-54-00-00-00-02", "525400000002"):
        result = await curl("-i", f"{base}/ipxe/{bad}.ipxe")
        assert parse_head(result.stdout)[0] == 400, bad
