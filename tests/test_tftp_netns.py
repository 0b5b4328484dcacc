"""The block size cap follows the real interface MTU: a namespace whose loopback has MTU 1500."""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import trio

REPO = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.skipif(not shutil.which("atftp"), reason="atftp is not installed"),
]

SERVER = """
import sys, trio
from appliance.boot import tftp
from appliance.config import Settings

async def main():
    settings = Settings()
    settings.tftp.root = sys.argv[1]
    settings.tftp.port = 0
    async with trio.open_nursery() as nursery:
        port = await nursery.start(tftp.serve, settings, "127.0.0.1")
        print(port, flush=True)

trio.run(main)
"""


@pytest.fixture
def namespace():
    name = f"cbtftp-{os.urandom(4).hex()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "mtu", "1500", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


async def test_blksize_65464_capped_to_1468_on_mtu_1500(namespace, tmp_path):
    root = tmp_path / "tftp"
    root.mkdir()
    content = os.urandom(200_000)
    (root / "ipxe.efi").write_bytes(content)

    command = ["ip", "netns", "exec", namespace, sys.executable, "-c", SERVER, str(root)]
    server = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        port = await trio.to_thread.run_sync(server.stdout.readline)
        out = tmp_path / "out"
        client = ["ip", "netns", "exec", namespace, "atftp", "--trace", "--get"]
        client += ["-r", "ipxe.efi", "-l", str(out), "--option", "blksize 65464"]
        with trio.fail_after(60):
            result = await trio.run_process(
                client + ["127.0.0.1", port.strip()],
                capture_stdout=True,
                stderr=subprocess.STDOUT,
            )
    finally:
        server.terminate()
        server.wait(timeout=10)

    trace = result.stdout.decode()
    oack = next(line for line in trace.splitlines() if "received OACK" in line)
    assert "<blksize: 1468," in oack, oack
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(content).digest()
