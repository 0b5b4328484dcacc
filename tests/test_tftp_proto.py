"""The TFTP protocol core without sockets: parsing, negotiation, path rules, transfers."""

import hashlib
import os
import struct

import pytest

from appliance.proto import tftp


def rrq(filename, **options):
    return tftp.encode_request(tftp.RRQ, filename, options)


def reader(content):
    return lambda offset, length: content[offset : offset + length]


def negotiate(options, file_size=1000, cap=65464, window=64, timeout=1.0):
    return tftp.negotiate(
        options,
        file_size=file_size,
        block_size_cap=cap,
        max_window_size=window,
        default_timeout=timeout,
    )


def opcode(packet):
    return struct.unpack("!H", packet[:2])[0]


def block_of(packet):
    return struct.unpack("!H", packet[2:4])[0]


# --- parsing ---------------------------------------------------------------------------------


def test_parse_request_with_options():
    request = tftp.parse_request(rrq("pxelinux.0", blksize=1468, TSIZE=0))
    assert request.opcode == tftp.RRQ
    assert request.filename == "pxelinux.0"
    assert request.mode == "octet"
    assert request.options == {"blksize": "1468", "tsize": "0"}


def test_parse_request_mode_is_case_insensitive():
    request = tftp.parse_request(b"\x00\x01boot.ipxe\x00OCTET\x00")
    assert request.mode == "octet"


def test_parse_write_request():
    assert tftp.parse_request(tftp.encode_request(tftp.WRQ, "x")).opcode == tftp.WRQ


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00",
        b"\x00\x03\x00\x01hello",  # DATA, not a request
        b"\x00\x01",
        b"\x00\x01file",
        b"\x00\x01file\x00",
        b"\x00\x01file\x00mail\x00",
        b"\x00\x01file\x00octet\x00blksize\x00",  # option without value
        b"\x00\x01fil\xe9\x00octet\x00",  # not ASCII
    ],
)
def test_parse_request_refuses_malformed(data):
    with pytest.raises(tftp.TftpError):
        tftp.parse_request(data)


def test_parse_request_every_prefix_is_an_error_or_a_request():
    # Byte by byte: every truncation either parses or raises TftpError, never anything else.
    whole = rrq("pxelinux.cfg/default", blksize=1468, windowsize=8)
    for end in range(len(whole)):
        try:
            request = tftp.parse_request(whole[:end])
        except tftp.TftpError:
            continue
        assert request.filename == "pxelinux.cfg/default"
    assert tftp.parse_request(whole).options == {"blksize": "1468", "windowsize": "8"}


def test_parse_request_forgives_unterminated_tail_and_padding():
    whole = rrq("undionly.kpxe", blksize=1468)
    assert tftp.parse_request(whole + b"junk").options == {"blksize": "1468"}
    assert tftp.parse_request(whole + b"\x00\x00\x00").options == {"blksize": "1468"}


def test_parse_packet_wraps_every_failure():
    for data in (b"\x00\x04\x00", b"\x00\x09abc", b"\x00\x03\x00", b"\xff\xff\xff\xff"):
        with pytest.raises(tftp.TftpError):
            tftp.parse_packet(data)


def test_error_packet_carries_our_message():
    packet = tftp.encode_error(0, "server busy")
    assert packet == b"\x00\x05\x00\x00server busy\x00"
    assert tftp.encode_error(2, "bad\x00name\xe9") == b"\x00\x05\x00\x02bad name?\x00"


# --- negotiation -----------------------------------------------------------------------------


def test_blksize_alone_gets_blksize_alone():
    # An uninvited tsize in the OACK makes some UEFI clients abort.
    negotiated = negotiate({"blksize": "1468"})
    assert negotiated.acknowledged == (("blksize", "1468"),)
    assert negotiated.block_size == 1468


def test_no_options_means_no_oack():
    negotiated = negotiate({})
    assert negotiated.acknowledged == ()
    assert negotiated.block_size == 512
    assert negotiated.window_size == 1


def test_all_options_acknowledged_in_request_order():
    options = {"windowsize": "8", "tsize": "0", "timeout": "3", "blksize": "1432"}
    negotiated = negotiate(options, file_size=123456)
    assert negotiated.acknowledged == (
        ("windowsize", "8"),
        ("tsize", "123456"),
        ("timeout", "3"),
        ("blksize", "1432"),
    )
    assert (negotiated.window_size, negotiated.timeout, negotiated.block_size) == (8, 3.0, 1432)


def test_blksize_capped_by_mtu_and_settings():
    assert tftp.block_size_cap(65536) == 65464  # loopback: 65504 fits, RFC 2348 max wins
    assert tftp.block_size_cap(1500) == 1468
    assert tftp.block_size_cap(1500, family=6) == 1448
    assert tftp.block_size_cap(9000, max_block_size=4096) == 4096
    assert tftp.block_size_cap(None, max_block_size=8192) == 8192
    assert negotiate({"blksize": "65464"}, cap=1468).acknowledged == (("blksize", "1468"),)


@pytest.mark.parametrize(
    "options",
    [
        {"blksize": "7"},
        {"blksize": "-1"},
        {"blksize": "+1468"},
        {"blksize": "abc"},
        {"blksize": ""},
        {"timeout": "0"},
        {"timeout": "256"},
        {"windowsize": "0"},
        {"blksize": "99999999999999999999"},
        {"multicast": ""},
        {"rollover": "0"},
    ],
)
def test_bad_or_unknown_options_are_ignored(options):
    assert negotiate(options).acknowledged == ()


def test_windowsize_capped_by_settings():
    assert negotiate({"windowsize": "65535"}, window=64).window_size == 64


# --- path rules ------------------------------------------------------------------------------


def test_leading_slash_and_backslash_are_relative_to_root():
    assert str(tftp.normalise_filename("/pxelinux.cfg/default")) == "pxelinux.cfg/default"
    assert str(tftp.normalise_filename("\\EFI\\BOOT\\bootx64.efi")) == "EFI/BOOT/bootx64.efi"
    assert str(tftp.normalise_filename("./a//b")) == "a/b"


@pytest.mark.parametrize(
    "name",
    [
        "",
        "/",
        "../tftp-private/secret",
        "pxelinux.cfg/../../etc/passwd",
        "pxelinux.cfg/../default",
        "\\EFI\\BOOT\\..\\..\\x",
        "boot/%2e%2e/x",
        "boot/%2E%2e/x",
        "boot%2fx",
        "a\x00b",
        "a\nb",
    ],
)
def test_refused_names(name):
    with pytest.raises(tftp.TftpError) as caught:
        tftp.normalise_filename(name)
    assert caught.value.code == tftp.ACCESS_VIOLATION


def test_symlink_out_of_root_is_refused(tmp_path):
    root = tmp_path / "tftp"
    root.mkdir()
    (tmp_path / "secret").write_text("secret")
    (root / "inside").write_text("ok")
    os.symlink(tmp_path / "secret", root / "escape")
    os.symlink("inside", root / "alias")

    with pytest.raises(tftp.TftpError) as caught:
        tftp.resolve_path(root, "escape")
    assert caught.value.code == tftp.ACCESS_VIOLATION
    assert tftp.resolve_path(root, "/alias") == (root / "inside").resolve()


# --- transfers -------------------------------------------------------------------------------


def run_client(transfer, *, lose=frozenset(), now=0.0):
    """Drive a Transfer like a windowed client (RFC 7440); returns the file received.

    `lose` holds absolute block numbers whose first copy the "network" drops.
    """
    received, expected, lost = bytearray(), 1, set()
    step = transfer.start(now)
    if step.packets and opcode(step.packets[0]) == tftp.OACK:
        step = transfer.packet_received(tftp.encode_ack(0), now)

    while step.deadline is not None:
        last_good, gap = None, False
        for packet in step.packets:
            assert opcode(packet) == tftp.DATA
            if expected in lose and expected not in lost:
                lost.add(expected)
                gap = True
            if gap or block_of(packet) != expected % 65536:
                continue
            received += packet[4:]
            last_good = expected
            expected += 1
            if len(packet) - 4 < transfer.negotiated.block_size:
                break
        if last_good is None:
            now = step.deadline
            step = transfer.timer_expired(now)
        else:
            step = transfer.packet_received(tftp.encode_ack(last_good), now)
    return bytes(received)


def test_no_options_sends_data_block_1_first():
    transfer = tftp.Transfer(reader(b"x" * 600), 600, negotiate({}), retries=3)
    step = transfer.start(0.0)
    assert [opcode(p) for p in step.packets] == [tftp.DATA]
    assert block_of(step.packets[0]) == 1
    assert step.deadline == 1.0


def test_oack_then_windows():
    content = os.urandom(10 * 1468 + 7)
    negotiated = negotiate({"blksize": "1468", "windowsize": "4"}, file_size=len(content))
    transfer = tftp.Transfer(reader(content), len(content), negotiated, retries=3)

    step = transfer.start(0.0)
    assert step.packets == [b"\x00\x06blksize\x001468\x00windowsize\x004\x00"]
    step = transfer.packet_received(tftp.encode_ack(0), 0.1)
    assert [block_of(p) for p in step.packets] == [1, 2, 3, 4]
    step = transfer.packet_received(tftp.encode_ack(2), 0.2)  # client lost block 3
    assert [block_of(p) for p in step.packets] == [3, 4, 5, 6]


def test_exact_multiple_of_block_size_ends_with_empty_block():
    content = b"a" * 1024
    transfer = tftp.Transfer(reader(content), 1024, negotiate({}), retries=3)
    assert run_client(transfer) == content
    assert transfer.outcome == "completed"


def test_empty_file():
    transfer = tftp.Transfer(reader(b""), 0, negotiate({"tsize": "0"}, file_size=0), retries=1)
    assert run_client(transfer) == b""
    assert transfer.outcome == "completed"


def test_lost_blocks_are_retransmitted():
    content = os.urandom(100 * 512)
    negotiated = negotiate({"windowsize": "8"}, file_size=len(content))
    transfer = tftp.Transfer(reader(content), len(content), negotiated, retries=3)
    assert run_client(transfer, lose={1, 9, 17, 50, 101}) == content
    assert transfer.retransmissions >= 1


def test_duplicate_and_stale_acks_are_ignored():
    content = os.urandom(4000)
    transfer = tftp.Transfer(reader(content), len(content), negotiate({}), retries=3)
    transfer.start(0.0)
    step = transfer.packet_received(tftp.encode_ack(1), 0.1)
    assert block_of(step.packets[0]) == 2
    assert transfer.packet_received(tftp.encode_ack(1), 0.2) == tftp.Step([], 1.1)
    assert transfer.packet_received(tftp.encode_ack(40000), 0.2) == tftp.Step([], 1.1)
    assert transfer.packet_received(b"\x00\x04", 0.2) == tftp.Step([], 1.1)


def test_retries_are_bounded_and_honour_negotiated_timeout():
    negotiated = negotiate({"timeout": "3"})
    transfer = tftp.Transfer(reader(b"abc"), 3, negotiated, retries=2)
    step = transfer.start(0.0)
    assert step.deadline == 3.0
    step = transfer.timer_expired(3.0)  # OACK again
    assert opcode(step.packets[0]) == tftp.OACK and step.deadline == 6.0
    step = transfer.timer_expired(6.0)
    assert step.deadline == 9.0
    step = transfer.timer_expired(9.0)
    assert step.deadline is None
    assert opcode(step.packets[0]) == tftp.ERROR
    assert (transfer.outcome, transfer.failure_reason) == ("failed", "timeout")


def test_client_error_ends_transfer_quietly():
    # UEFI firmware asks for tsize, reads the OACK, then aborts with ERROR 8.
    transfer = tftp.Transfer(reader(b"abc"), 3, negotiate({"tsize": "0"}), retries=2)
    transfer.start(0.0)
    step = transfer.packet_received(tftp.encode_error(8, "tsize only"), 0.1)
    assert step == tftp.Step([], None)
    assert transfer.failure_reason == "client error 8"


def test_wrong_opcode_gets_illegal_operation():
    transfer = tftp.Transfer(reader(b"abc"), 3, negotiate({}), retries=2)
    transfer.start(0.0)
    step = transfer.packet_received(tftp.encode_data(1, b"x"), 0.1)
    assert step.packets == [tftp.encode_error(4, "expected ACK, got opcode 3")]
    assert transfer.outcome == "failed"


def test_file_shrinking_mid_transfer_is_an_error_not_a_short_file():
    content = bytearray(os.urandom(5000))
    transfer = tftp.Transfer(reader(content), len(content), negotiate({}), retries=2)
    transfer.start(0.0)
    del content[1000:]
    step = transfer.packet_received(tftp.encode_ack(1), 0.1)
    assert opcode(step.packets[0]) == tftp.ERROR
    assert transfer.failure_reason == "file changed"


def test_40_mib_at_512_byte_blocks_crosses_the_block_number_wrap():
    # 81,920 blocks: block 65535 is followed by block 0 (see docs/boot.md, TFTP).
    content = os.urandom(40 * 1024 * 1024)
    transfer = tftp.Transfer(reader(content), len(content), negotiate({}), retries=1)

    numbers = []
    step = transfer.start(0.0)
    received = bytearray()
    while step.deadline is not None:
        (packet,) = step.packets
        numbers.append(block_of(packet))
        received += packet[4:]
        step = transfer.packet_received(tftp.encode_ack(block_of(packet)), 0.0)

    assert len(numbers) == 81921  # 81,920 full blocks and the empty last one
    assert numbers[65534:65537] == [65535, 0, 1]
    assert hashlib.sha256(received).digest() == hashlib.sha256(content).digest()
    assert transfer.outcome == "completed"
