"""Real packets judged by tshark: encoded replies in a pcap, and a live exchange in namespaces.

The namespace test runs the real server in one network namespace and a
firmware-like client (tests/dhcp_netns_client.py) in another, joined by a veth
pair, captures the wire with dumpcap and lets tshark decode it. Namespaces get
a random suffix and are deleted afterwards; nothing leaves them.
"""

import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from appliance.boot.pxe_policy import PxePolicy
from appliance.proto import dhcp
from tests.dhcp_pcap import write_udp
from tests.dhcp_requests import AMI_GUID, APPLIANCE, BIOS, HTTP_X64, request, settings

REPO = Path(__file__).resolve().parent.parent
SERVER_ADDRESS = "10.201.0.1"
CLIENT_ADDRESS = "10.201.0.50"

needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")


def tshark_verbose(pcap):
    result = subprocess.run(
        ["tshark", "-r", str(pcap), "-V"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def assert_clean(decoded):
    assert "Malformed" not in decoded
    assert "Expert Info (Error" not in decoded
    assert "Expert Info (Warning" not in decoded


@needs_tshark
def test_encoded_replies_decode_cleanly_in_tshark(tmp_path):
    policy = PxePolicy(settings().dhcp, APPLIANCE, 80)
    boot_item = dhcp.encode_suboptions({dhcp.PXE_BOOT_ITEM: b"\x80\x00\x00\x00"})
    cases = [
        (request(option_97=AMI_GUID), False),
        (request(vendor_class=BIOS, arch=b"\x00\x00"), False),
        (request(vendor_class=HTTP_X64, arch=b"\x00\x10"), False),
        (request(option_77=b"iPXE"), False),
        (request(giaddr="10.20.0.1", hops=2, option_82=b"\x01\x04port\x02\x02id"), False),
        (request(message_type=dhcp.REQUEST, ciaddr="192.0.2.50", option_43=boot_item), True),
    ]
    datagrams = []
    for packet, on_pxe_port in cases:
        reply = policy.decide(packet, on_pxe_port=on_pxe_port, source=("192.0.2.50", 68), now=0)
        source_port = 4011 if on_pxe_port else 67
        datagrams.append(
            ((APPLIANCE, source_port), (reply.address, reply.port), dhcp.encode(reply.packet))
        )
    pcap = tmp_path / "replies.pcap"
    write_udp(pcap, datagrams)

    decoded = tshark_verbose(pcap)

    assert_clean(decoded)
    assert decoded.count("DHCP: Offer (2)") == 5
    assert decoded.count("DHCP: ACK (5)") == 1
    assert "Client Identifier (UUID): 03000200-0400-0500-0006-000700080009" in decoded
    assert "Boot file name: undionly.kpxe" in decoded
    assert "Bootfile name: http://192.0.2.10:80/boot/ipxe/ipxe.efi" in decoded
    assert "Boot file name: http://192.0.2.10:80/ipxe/52-54-00-12-34-56.ipxe" in decoded
    assert "Option: (82) Agent Information Option" in decoded
    assert "boot item: 80000000" in decoded
    assert "discovery control: 0x08" in decoded


def _run(*args, check=True):
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=check)


class Namespaces:
    """A server and a client namespace joined by a veth pair, removed on close."""

    def __init__(self):
        suffix = secrets.token_hex(3)
        self.server, self.client = f"cbdhcp-s-{suffix}", f"cbdhcp-c-{suffix}"
        self.server_if, self.client_if = f"vs-{suffix}", f"vc-{suffix}"
        self.processes = []

    def create(self):
        _run("ip", "netns", "add", self.server)
        _run("ip", "netns", "add", self.client)
        _run(
            "ip", "link", "add", self.server_if, "netns", self.server, "type", "veth",
            "peer", "name", self.client_if, "netns", self.client,
        )  # fmt: skip
        _run("ip", "-n", self.server, "addr", "add", f"{SERVER_ADDRESS}/24", "dev", self.server_if)
        for namespace, interface in ((self.server, self.server_if), (self.client, self.client_if)):
            _run("ip", "-n", namespace, "link", "set", "lo", "up")
            _run("ip", "-n", namespace, "link", "set", interface, "up")

    def start(self, namespace, *command, **kwargs):
        process = subprocess.Popen(
            ["ip", "netns", "exec", namespace, *command], cwd=REPO, text=True, **kwargs
        )
        self.processes.append(process)
        return process

    def run(self, namespace, *command):
        return subprocess.run(
            ["ip", "netns", "exec", namespace, *command],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def close(self):
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        _run("ip", "netns", "del", self.server, check=False)
        _run("ip", "netns", "del", self.client, check=False)


SERVER_PROGRAM = """
import sys, trio
from appliance import log
from appliance.config import Settings
from appliance.boot.proxydhcp import serve
log.setup("debug")
trio.run(serve, Settings(), sys.argv[1], sys.argv[2])
"""


def _wait_until(condition, seconds, what):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def namespaces():
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 to create network namespaces")
    pair = Namespaces()
    try:
        pair.create()
        yield pair
    finally:
        pair.close()


@pytest.mark.netns
@needs_tshark
def test_live_exchange_between_namespaces_decodes_cleanly(namespaces, tmp_path):
    ns = namespaces
    server_log = tmp_path / "server.log"
    pcap = tmp_path / "wire.pcap"

    with server_log.open("w") as log_file:
        ns.start(
            ns.server, sys.executable, "-c", SERVER_PROGRAM, SERVER_ADDRESS, ns.server_if,
            stdout=log_file, stderr=subprocess.STDOUT,
        )  # fmt: skip
    _wait_until(lambda: "listening" in server_log.read_text(), 20, "the server to listen")

    ns.start(
        ns.client, "dumpcap", "-q", "-P", "-i", ns.client_if, "-f", "udp", "-w", str(pcap),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    _wait_until(lambda: pcap.exists() and pcap.stat().st_size >= 24, 20, "dumpcap to start")
    time.sleep(0.5)

    client = [sys.executable, "-m", "tests.dhcp_netns_client"]
    broadcast = ns.run(ns.client, *client, "broadcast", ns.client_if)
    _run("ip", "-n", ns.client, "addr", "add", f"{CLIENT_ADDRESS}/24", "dev", ns.client_if)
    pxe = ns.run(ns.client, *client, "pxe", ns.client_if, SERVER_ADDRESS, CLIENT_ADDRESS)
    time.sleep(0.5)
    ns.close()

    server_output = server_log.read_text()
    assert broadcast.returncode == 0, broadcast.stderr + server_output
    assert pxe.returncode == 0, pxe.stderr + server_output

    replies = {}
    for line in (broadcast.stdout + pxe.stdout).splitlines():
        xid, payload = line.split()
        replies[int(xid, 16)] = dhcp.decode(bytes.fromhex(payload))
    assert replies[0x11110001].file == b"ipxe.efi"
    assert replies[0x11110002].options[dhcp.OPTION_VENDOR_CLASS] == b"HTTPClient"
    assert replies[0x11110003].file == b"http://10.201.0.1:80/ipxe/52-54-00-0a-0b-0c.ipxe"
    assert replies[0x11110004].message_type == dhcp.ACK
    assert "mac=52:54:00:0a:0b:0c" in server_output

    decoded = tshark_verbose(pcap)
    assert_clean(decoded)
    assert decoded.count("DHCP: Discover (1)") == 3
    assert decoded.count("DHCP: Offer (2)") == 3
    assert decoded.count("DHCP: Request (3)") == 1
    assert decoded.count("DHCP: ACK (5)") == 1
    assert "Vendor class identifier: HTTPClient" in decoded
    assert "discovery control: 0x08" in decoded
    assert "Client Identifier (UUID): 03000200-0400-0500-0006-000700080009" in decoded

    # Where each reply went, as the wire shows it: offers broadcast from port
    # 67 (the client has no address yet), the ACK back to the requester from 4011.
    fields = _run(
        "tshark", "-r", str(pcap), "-Y", "dhcp.option.dhcp == 2 || dhcp.option.dhcp == 5",
        "-T", "fields", "-e", "dhcp.option.dhcp", "-e", "ip.src", "-e", "udp.srcport",
        "-e", "ip.dst", "-e", "udp.dstport",
    ).stdout.split("\n")  # fmt: skip
    assert sorted(line for line in fields if line) == [
        "2\t10.201.0.1\t67\t255.255.255.255\t68",
        "2\t10.201.0.1\t67\t255.255.255.255\t68",
        "2\t10.201.0.1\t67\t255.255.255.255\t68",
        "5\t10.201.0.1\t4011\t10.201.0.50\t68",
    ]
