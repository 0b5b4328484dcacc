"""The TFTP server on loopback, against real clients (atftp, curl) and a raw UDP client."""

import hashlib
import io
import logging
import os
import random
import shutil
import socket
import subprocess

import psutil
import pytest
import trio
from prometheus_client import REGISTRY

from appliance import log
from appliance.boot import tftp as server
from appliance.config import Settings
from appliance.proto import tftp

HOST = "127.0.0.1"

needs_atftp = pytest.mark.skipif(not shutil.which("atftp"), reason="atftp is not installed")
needs_curl = pytest.mark.skipif(not shutil.which("curl"), reason="curl is not installed")


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def metric(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def metric_reaches(value, name, **labels):
    """Wait for a counter: a client may exit before the server has read its last ACK."""
    with trio.fail_after(5):
        while metric(name, **labels) < value:
            await trio.sleep(0.01)


@pytest.fixture
def tftp_root(tmp_path):
    root = tmp_path / "srv" / "tftp"
    root.mkdir(parents=True)
    return root


@pytest.fixture
def start_server(nursery, tftp_root):
    """Start the server on 127.0.0.1 at an ephemeral high port; returns the port."""

    async def start(**tftp_settings):
        settings = Settings()
        settings.tftp.root = str(tftp_root)
        settings.tftp.port = 0
        for name, value in tftp_settings.items():
            setattr(settings.tftp, name, value)
        return await nursery.start(server.serve, settings, HOST)

    return start


class RawClient:
    """A UDP socket that speaks TFTP by hand, to see exactly what the server sends."""

    def __init__(self):
        self.sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    async def __aenter__(self):
        await self.sock.bind((HOST, 0))
        return self

    async def __aexit__(self, *exc):
        self.sock.close()

    async def send(self, data, address):
        await self.sock.sendto(data, address)

    async def receive(self, seconds=5):
        with trio.fail_after(seconds):
            return await self.sock.recvfrom(65536)

    async def request(self, port, filename, options=None, tries=5):
        """Send an RRQ and return the first reply, resending it as real clients do."""
        request = tftp.encode_request(tftp.RRQ, filename, options)
        for _ in range(tries - 1):
            await self.send(request, (HOST, port))
            with trio.move_on_after(1):
                return await self.sock.recvfrom(65536)
        await self.send(request, (HOST, port))
        return await self.receive()

    async def download(self, port, filename, options=None):
        """Fetch a file; returns (content, first reply), or (None, ERROR packet)."""
        data, peer = await self.request(port, filename, options)
        block_size = 512
        content, expected, first = bytearray(), 1, data
        while True:
            packet = tftp.parse_packet(data)
            if packet.opcode == tftp.ERROR:
                return None, data
            if packet.opcode == tftp.OACK:
                block_size = int(packet.options.get("blksize", block_size))
                await self.send(tftp.encode_ack(0), peer)
                data = await self.receive_from(peer)
                continue
            if packet.blocknumber == expected % 65536:
                content += packet.data
                expected += 1
            await self.send(tftp.encode_ack(packet.blocknumber), peer)
            if len(packet.data) < block_size:
                return bytes(content), first
            data = await self.receive_from(peer)

    async def receive_from(self, peer):
        # A resent RRQ can start a second transfer; only the first one is followed.
        while True:
            data, source = await self.receive()
            if source == peer:
                return data


def error_code(data):
    packet = tftp.parse_packet(data)
    assert packet.opcode == tftp.ERROR, f"expected an ERROR packet, got {data[:20]!r}"
    return packet.errorcode


# --- real clients ----------------------------------------------------------------------------


ATFTP_OPTIONS = [
    [],
    ["blksize 1468"],
    ["tsize 0"],
    ["windowsize 8"],
    ["blksize 1468", "tsize 0", "windowsize 8"],
]


@needs_atftp
@pytest.mark.parametrize("options", ATFTP_OPTIONS, ids=lambda o: ",".join(o) or "none")
async def test_atftp_download_is_byte_exact(start_server, tftp_root, tmp_path, options):
    content = os.urandom(1024 * 1024 + 333)
    (tftp_root / "bootos.img").write_bytes(content)
    port = await start_server()

    out = tmp_path / "out"
    command = ["atftp", "--trace", "--get", "-r", "bootos.img", "-l", str(out)]
    for option in options:
        command += ["--option", option]
    result = await trio.run_process(
        command + [HOST, str(port)], capture_stdout=True, stderr=subprocess.STDOUT
    )

    assert sha256(out.read_bytes()) == sha256(content)
    trace = result.stdout.decode()
    if options:
        oack = next(line for line in trace.splitlines() if "received OACK" in line)
        for option in options:
            name = option.split()[0]
            assert f"{name}: " in oack, oack
        if "tsize 0" in options:
            assert f"tsize: {len(content)}" in oack
    else:
        assert "OACK" not in trace


@needs_curl
@pytest.mark.parametrize("blksize", [None, 1468, 8192])
async def test_curl_download_is_byte_exact(start_server, tftp_root, tmp_path, blksize):
    content = os.urandom(700 * 1024)
    (tftp_root / "pxelinux.cfg").mkdir()
    (tftp_root / "pxelinux.cfg" / "default").write_bytes(content)
    port = await start_server()

    out = tmp_path / "out"
    command = ["curl", "-sS", "-o", str(out), f"tftp://{HOST}:{port}/pxelinux.cfg/default"]
    if blksize:
        command += ["--tftp-blksize", str(blksize)]
    await trio.run_process(command)

    assert sha256(out.read_bytes()) == sha256(content)


@needs_atftp
async def test_40_mib_crosses_the_block_number_wrap_with_atftp(start_server, tftp_root, tmp_path):
    # 512-byte blocks: 81,920 full blocks, so block numbers wrap from 65535 to 0.
    content = os.urandom(40 * 1024 * 1024)
    (tftp_root / "big.img").write_bytes(content)
    port = await start_server()
    completed = metric("cloudboot_tftp_transfers_completed_total")

    out = tmp_path / "out"
    command = ["atftp", "--get", "-r", "big.img", "-l", str(out), "--option", "windowsize 16"]
    with trio.fail_after(120):
        await trio.run_process(command + [HOST, str(port)])

    assert sha256(out.read_bytes()) == sha256(content)
    await metric_reaches(completed + 1, "cloudboot_tftp_transfers_completed_total")


@needs_atftp
async def test_atftp_sees_missing_file_as_error(start_server, tmp_path):
    port = await start_server()
    command = ["atftp", "--get", "-r", "absent", "-l", str(tmp_path / "o"), HOST, str(port)]
    result = await trio.run_process(command, check=False, capture_stderr=True)
    assert result.returncode != 0
    assert b"'absent' not found" in result.stderr


# --- exact answers ---------------------------------------------------------------------------


async def test_blksize_alone_gets_oack_with_blksize_alone(start_server, tftp_root):
    (tftp_root / "ipxe.efi").write_bytes(os.urandom(5000))
    port = await start_server()
    async with RawClient() as client:
        await client.send(
            tftp.encode_request(tftp.RRQ, "ipxe.efi", {"blksize": 1468}), (HOST, port)
        )
        data, _ = await client.receive()
    assert data == b"\x00\x06blksize\x001468\x00"


async def test_no_options_gets_data_block_1(start_server, tftp_root):
    content = os.urandom(5000)
    (tftp_root / "undionly.kpxe").write_bytes(content)
    port = await start_server()
    async with RawClient() as client:
        await client.send(tftp.encode_request(tftp.RRQ, "undionly.kpxe"), (HOST, port))
        data, peer = await client.receive()
    assert data == b"\x00\x03\x00\x01" + content[:512]
    assert peer[1] != port  # a new transfer ID (RFC 1350 section 4)


async def test_blksize_65464_capped_by_interface_mtu(start_server, tftp_root):
    (tftp_root / "f").write_bytes(b"x")
    lo_mtu = next(s.mtu for n, s in psutil.net_if_stats().items() if n == "lo")
    expected = min(lo_mtu - 20 - 8 - 4, 65464)

    for max_block_size, want in ((65464, expected), (4096, 4096)):
        port = await start_server(max_block_size=max_block_size)
        async with RawClient() as client:
            request = tftp.encode_request(tftp.RRQ, "f", {"blksize": 65464})
            await client.send(request, (HOST, port))
            data, _ = await client.receive()
        assert data == b"\x00\x06blksize\x00" + str(want).encode() + b"\x00"


# --- the root and what lies beside it ----------------------------------------------------------


REFUSED = [
    ("/srv/tftp-private/secret", tftp.FILE_NOT_FOUND),  # leading slash is the root
    ("../tftp-private/secret", tftp.ACCESS_VIOLATION),
    ("pxelinux.cfg/../../etc/passwd", tftp.ACCESS_VIOLATION),
    ("\\EFI\\BOOT\\..\\..\\x", tftp.ACCESS_VIOLATION),
    ("boot/%2e%2e/x", tftp.ACCESS_VIOLATION),
    ("escape", tftp.ACCESS_VIOLATION),  # symlink out of the root
]


async def test_root_layout(start_server, tftp_root):
    private = tftp_root.parent / "tftp-private"
    private.mkdir()
    (private / "secret").write_bytes(b"SECRET")
    (tftp_root / "x").write_bytes(b"x")
    (tftp_root / "boot").mkdir()
    (tftp_root / "pxelinux.cfg").mkdir()
    (tftp_root / "pxelinux.cfg" / "01-aa-bb-cc-dd-ee-ff").write_bytes(b"DEFAULT local\n")
    os.symlink(private / "secret", tftp_root / "escape")
    port = await start_server()
    refused = metric("cloudboot_tftp_errors_total", reason="access_violation")

    async with RawClient() as client:
        for name, code in REFUSED:
            content, reply = await client.download(port, name)
            assert content is None, name
            assert error_code(reply) == code, name

        content, _ = await client.download(port, "/pxelinux.cfg/01-aa-bb-cc-dd-ee-ff")
        assert content == b"DEFAULT local\n"

    assert metric("cloudboot_tftp_errors_total", reason="access_violation") == refused + 5


async def test_log_lines_carry_client_file_and_transfer_id(start_server, tftp_root):
    (tftp_root / "ipxe.efi").write_bytes(os.urandom(20_000))
    port = await start_server()
    stream = io.StringIO()
    root_logger = logging.getLogger()
    saved = root_logger.handlers[:], root_logger.level
    log.setup("info", stream=stream)
    try:
        async with RawClient() as client:
            _, reply = await client.download(port, "../tftp-private/secret")
            content, _ = await client.download(port, "ipxe.efi", {"blksize": 1468})
            local_port = client.sock.getsockname()[1]
        # The server logs once it has read the final ACK, just after download() returns.
        with trio.fail_after(5):
            while "TFTP sent" not in stream.getvalue():
                await trio.sleep(0.01)
    finally:
        root_logger.handlers[:], level = saved
        root_logger.setLevel(level)

    assert error_code(reply) == tftp.ACCESS_VIOLATION
    lines = stream.getvalue().splitlines()
    refused = next(x for x in lines if "refused" in x)
    assert "warning" in refused
    assert f"client=127.0.0.1:{local_port}" in refused
    assert "file=../tftp-private/secret" in refused

    assert content == (tftp_root / "ipxe.efi").read_bytes()
    sent = [x for x in lines if "TFTP sent 20000 bytes" in x]
    assert len(sent) == 1, lines  # one line per transfer, none per block
    assert f"client=127.0.0.1:{local_port}" in sent[0]
    assert "file=ipxe.efi" in sent[0]
    assert "tid=" in sent[0]


async def test_write_request_is_refused(start_server, tftp_root):
    port = await start_server()
    async with RawClient() as client:
        await client.send(tftp.encode_request(tftp.WRQ, "upload.bin"), (HOST, port))
        data, _ = await client.receive()
    assert error_code(data) == tftp.ACCESS_VIOLATION
    assert not (tftp_root / "upload.bin").exists()


# --- load and abuse ----------------------------------------------------------------------------


async def test_past_max_transfers_new_requests_get_server_busy(start_server, tftp_root):
    (tftp_root / "f").write_bytes(os.urandom(4096))
    port = await start_server(max_transfers=2, timeout_seconds=5.0, retries=0)
    busy = metric("cloudboot_tftp_errors_total", reason="busy")

    async with RawClient() as a, RawClient() as b, RawClient() as c:
        # Two transfers that never acknowledge hold both slots.
        for client in (a, b):
            await client.send(tftp.encode_request(tftp.RRQ, "f"), (HOST, port))
            await client.receive()
        await c.send(tftp.encode_request(tftp.RRQ, "f"), (HOST, port))
        data, _ = await c.receive()

    assert data == tftp.encode_error(0, "server busy")
    assert metric("cloudboot_tftp_errors_total", reason="busy") == busy + 1


async def test_client_abort_is_counted(start_server, tftp_root):
    (tftp_root / "f").write_bytes(os.urandom(4096))
    port = await start_server()
    aborted = metric("cloudboot_tftp_transfers_failed_total", reason="client_error")

    async with RawClient() as client:
        await client.send(tftp.encode_request(tftp.RRQ, "f", {"tsize": 0}), (HOST, port))
        data, peer = await client.receive()
        assert tftp.parse_packet(data).options == {"tsize": "4096"}
        await client.send(tftp.encode_error(8, "just wanted the size"), peer)

    await metric_reaches(
        aborted + 1, "cloudboot_tftp_transfers_failed_total", reason="client_error"
    )


async def test_flood_of_malformed_packets_leaves_server_answering(start_server, tftp_root):
    content = os.urandom(100_000)
    (tftp_root / "f").write_bytes(content)
    port = await start_server()
    malformed = metric("cloudboot_tftp_errors_total", reason="malformed")
    rng = random.Random(1350)
    seed = tftp.encode_request(tftp.RRQ, "f", {"blksize": 1468})

    async with RawClient() as attacker:
        for index in range(3000):
            if index % 2:
                junk = rng.randbytes(rng.randrange(0, 600))
            else:
                junk = bytearray(seed)
                junk[rng.randrange(2, len(junk))] = 0xFF  # not ASCII: always refused
                junk = bytes(junk)
            await attacker.send(junk, (HOST, port))
            if index % 100 == 0:
                await trio.sleep(0)

        async with RawClient() as client:
            received, _ = await client.download(port, "f", {"blksize": 1468})

    assert received == content
    assert metric("cloudboot_tftp_errors_total", reason="malformed") > malformed + 1000


@needs_curl
async def test_ipv6_loopback(nursery, tftp_root, tmp_path):
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    content = os.urandom(300_000)
    (tftp_root / "ipxe.efi").write_bytes(content)
    settings = Settings()
    settings.tftp.root = str(tftp_root)
    settings.tftp.port = 0
    try:
        port = await nursery.start(server.serve, settings, "::1")
    except OSError as e:
        pytest.skip(f"cannot bind ::1: {e}")

    out = tmp_path / "out"
    url = f"tftp://[::1]:{port}/ipxe.efi"
    await trio.run_process(["curl", "-sS", "-o", str(out), url, "--tftp-blksize", "1428"])
    assert sha256(out.read_bytes()) == sha256(content)


async def test_unacknowledged_data_is_retransmitted_then_abandoned(start_server, tftp_root):
    (tftp_root / "f").write_bytes(os.urandom(2000))
    port = await start_server(retries=2)
    timeouts = metric("cloudboot_tftp_transfers_failed_total", reason="timeout")

    async with RawClient() as client:
        request = tftp.encode_request(tftp.RRQ, "f", {"timeout": 1})
        await client.send(request, (HOST, port))
        oack, peer = await client.receive()
        assert oack == b"\x00\x06timeout\x001\x00"
        await client.send(tftp.encode_ack(0), peer)

        # Never acknowledged: block 1, two retransmissions a second apart, then an ERROR.
        replies = [await client.receive(seconds=3) for _ in range(4)]

    assert [data[:4] for data, _ in replies[:3]] == [b"\x00\x03\x00\x01"] * 3
    assert error_code(replies[3][0]) == tftp.NOT_DEFINED
    assert {reply_peer for _, reply_peer in replies} == {peer}
    await metric_reaches(timeouts + 1, "cloudboot_tftp_transfers_failed_total", reason="timeout")
