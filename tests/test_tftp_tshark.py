"""tshark decodes every packet the TFTP server sends without a malformed-packet warning."""

import os
import random
import shutil
import signal
import socket
import subprocess

import pytest
import trio

from appliance.boot import tftp as server
from appliance.config import Settings
from appliance.proto import tftp

pytestmark = [
    pytest.mark.skipif(not shutil.which("tshark"), reason="tshark is not installed"),
    pytest.mark.skipif(not shutil.which("atftp"), reason="atftp is not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="capturing on lo needs root"),
]


async def start_capture(host, pcap):
    """Start tshark on lo for `host` and return once it demonstrably captures packets."""
    process = await trio.lowlevel.open_process(
        ["tshark", "-i", "lo", "-f", f"udp and host {host}", "-w", str(pcap)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    # "Capturing on" is printed before the filter is live on some versions, so
    # probe datagrams are sent until the file grows past its header.
    probe = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with probe, trio.fail_after(20):
        while not pcap.exists() or pcap.stat().st_size == 0:
            await trio.sleep(0.05)
        header = pcap.stat().st_size
        while pcap.stat().st_size <= header:
            await probe.sendto(b"probe", (host, 9))
            await trio.sleep(0.1)
    return process


async def stop_capture(process):
    process.send_signal(signal.SIGINT)
    with trio.fail_after(20):
        await process.wait()


async def test_tshark_finds_nothing_malformed(nursery, tmp_path):
    root = tmp_path / "tftp"
    root.mkdir()
    (root / "ipxe.efi").write_bytes(os.urandom(300_000))
    (root / "exact").write_bytes(os.urandom(4096))

    # A loopback address of its own keeps other tests' traffic out of the capture.
    host = f"127.{random.randrange(64, 250)}.{random.randrange(1, 250)}.{random.randrange(2, 250)}"
    settings = Settings()
    settings.tftp.root = str(root)
    settings.tftp.port = 0
    port = await nursery.start(server.serve, settings, host)

    pcap = tmp_path / "tftp.pcapng"
    capture = await start_capture(host, pcap)
    try:
        await exercise(host, port, tmp_path)
    finally:
        await trio.sleep(0.5)
        await stop_capture(capture)

    decoded = await trio.run_process(
        ["tshark", "-r", str(pcap), "-d", f"udp.port=={port},tftp", "-V"],
        capture_stdout=True,
        stderr=subprocess.DEVNULL,
    )
    text = decoded.stdout.decode(errors="replace")
    assert "malformed" not in text.lower()
    for expected in ("Option Acknowledgement", "Data Packet", "Error Code", "Acknowledgement"):
        assert expected in text, f"tshark decoded no {expected!r}; is the capture empty?"


async def exercise(host, port, tmp_path):
    """OACK with every option, plain DATA, a big block size, and error packets."""
    transfers = [
        ["blksize 1468", "tsize 0", "windowsize 8", "timeout 2"],
        [],
        ["blksize 65464"],
    ]
    for options in transfers:
        for name in ("ipxe.efi", "exact"):
            command = ["atftp", "--get", "-r", name, "-l", str(tmp_path / "out")]
            for option in options:
                command += ["--option", option]
            await trio.run_process(command + [host, str(port)])

    missing = ["atftp", "--get", "-r", "missing", "-l", str(tmp_path / "out"), host, str(port)]
    await trio.run_process(missing, check=False, stderr=subprocess.DEVNULL)

    client = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with client, trio.fail_after(10):
        await client.bind(("127.0.0.1", 0))
        for request in (
            tftp.encode_request(tftp.WRQ, "upload"),
            tftp.encode_request(tftp.RRQ, "../etc/passwd"),
        ):
            await client.sendto(request, (host, port))
            await client.recvfrom(65536)
