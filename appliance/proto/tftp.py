"""TFTP protocol core: requests, option negotiation, path rules and one transfer's state.

The boot server (appliance/boot/tftp.py) owns the sockets and the clock; this
module turns bytes and timer events into bytes to send and the next deadline.
The wire format comes from tftpy's packet classes, wrapped so that anything a
client can send either parses or raises TftpError: never another exception.

Covers RFC 1350 (read requests only), RFC 2347 (option negotiation), RFC 2348
(blksize), RFC 2349 (timeout, tsize) and RFC 7440 (windowsize). Deviations are
listed in docs/boot.md, section "TFTP".

This module must never import trio, open a socket or write a file.
"""

import logging
import os
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tftpy.TftpPacketFactory import TftpPacketFactory
from tftpy.TftpPacketTypes import (
    TftpPacketACK,
    TftpPacketDAT,
    TftpPacketERR,
    TftpPacketInitial,
    TftpPacketOACK,
    TftpPacketRRQ,
    TftpPacketWRQ,
)
from tftpy.TftpShared import TftpException

# tftpy logs every ERROR packet it decodes at error level. A client aborting a
# transfer (UEFI firmware does so after learning tsize) is routine here, and
# the server logs it once with the client's context.
logging.getLogger("tftpy").setLevel(logging.CRITICAL)

# Opcodes, RFC 1350 section 5 and RFC 2347.
RRQ, WRQ, DATA, ACK, ERROR, OACK = 1, 2, 3, 4, 5, 6

# Error codes, RFC 1350 appendix and RFC 2347 (8).
NOT_DEFINED = 0
FILE_NOT_FOUND = 1
ACCESS_VIOLATION = 2
ILLEGAL_OPERATION = 4
UNKNOWN_TID = 5
OPTION_REFUSED = 8

DEFAULT_BLOCK_SIZE = 512
# RFC 2348: the blksize option ranges from 8 to 65464 octets.
MIN_BLOCK_SIZE = 8
MAX_BLOCK_SIZE = 65464
# RFC 2349: the timeout option ranges from 1 to 255 seconds.
MIN_TIMEOUT, MAX_TIMEOUT = 1, 255
# RFC 7440 allows 65535, but a window must stay under half the block-number
# space or an acknowledgement after the wrap could name two blocks.
MAX_WINDOW_SIZE = 32767
BLOCK_MODULUS = 65536

# UDP 8 and TFTP DATA header 4, on top of the IP header of the family.
_UDP_TFTP_OVERHEAD = 8 + 4
_IP_HEADER = {4: 20, 6: 40}

_MODES = ("octet", "netascii")
_PERCENT_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_factory = TftpPacketFactory()


class TftpError(Exception):
    """A packet or request this server will not act on; `code` is the TFTP error code to send."""

    def __init__(self, message, code=ILLEGAL_OPERATION):
        super().__init__(message)
        self.code = code
        self.message = message


# --- wire format -------------------------------------------------------------------------------


def parse_packet(data):
    """Decode one datagram into a tftpy packet object, or raise TftpError."""
    data = bytes(data)
    try:
        return _factory.parse(data)
    except (TftpException, struct.error, UnicodeDecodeError, ValueError, KeyError) as e:
        raise TftpError(f"malformed TFTP packet {_preview(data)}: {e}") from None


def encode_request(opcode, filename, options=None):
    """An RRQ or WRQ in octet mode (for clients and tests)."""
    packet = TftpPacketRRQ() if opcode == RRQ else TftpPacketWRQ()
    packet.filename = filename
    packet.mode = "octet"
    packet.options = {name: str(value) for name, value in (options or {}).items()}
    return packet.encode().buffer


def encode_data(block, payload):
    packet = TftpPacketDAT()
    packet.blocknumber = block % BLOCK_MODULUS
    packet.data = bytes(payload)
    return packet.encode().buffer


def encode_ack(block):
    packet = TftpPacketACK()
    packet.blocknumber = block % BLOCK_MODULUS
    return packet.encode().buffer


def encode_oack(options):
    packet = TftpPacketOACK()
    packet.options = options
    return packet.encode().buffer


def encode_error(code, message):
    """An ERROR packet with our own message text.

    tftpy's ERR class only knows its fixed English messages, so the message
    table of this one instance is replaced. NUL would end the string early and
    the field is ASCII (RFC 1350 calls it netascii), so both are cleaned out.
    """
    packet = TftpPacketERR()
    packet.errorcode = code
    text = _CONTROL.sub(" ", message).encode("ascii", "replace")
    packet.errmsgs = {code: text}
    return packet.encode().buffer


def _preview(data, limit=40):
    return repr(data[:limit]) + ("..." if len(data) > limit else "")


# --- requests ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    opcode: int
    filename: str
    mode: str
    # Option names lower-cased (RFC 2347: names are case-insensitive), in the order sent.
    options: dict


def parse_request(data):
    """Parse an RRQ or WRQ, or raise TftpError.

    Two kinds of slack that firmware is known to send are forgiven: bytes after
    the last NUL (an unterminated fragment) and extra NULs padding the end of
    the packet. Anything else malformed is refused.
    """
    data = bytes(data)
    if len(data) < 2 or data[1] not in (RRQ, WRQ) or data[0] != 0:
        raise TftpError(f"not a read or write request: {_preview(data)}")

    data = data[: data.rfind(b"\x00") + 1]
    while data.endswith(b"\x00\x00"):
        data = data[:-1]

    packet = parse_packet(data)
    if not isinstance(packet, TftpPacketInitial):
        raise TftpError(f"not a read or write request: {_preview(data)}")

    if packet.mode not in _MODES:
        raise TftpError(f"transfer mode {packet.mode!r} is not supported (expected 'octet')")

    options = {name.lower(): value for name, value in packet.options.items()}
    return Request(packet.opcode, packet.filename, packet.mode, options)


# --- option negotiation ------------------------------------------------------------------------


@dataclass(frozen=True)
class Negotiated:
    block_size: int = DEFAULT_BLOCK_SIZE
    window_size: int = 1
    timeout: float = 1.0
    # What goes into the OACK; empty means no OACK and DATA block 1 straight away.
    acknowledged: tuple = ()


def block_size_cap(mtu, family=4, max_block_size=MAX_BLOCK_SIZE):
    """Largest blksize whose DATA packet fits one frame of this MTU (RFC 2348 section 2).

    A DATA packet larger than the MTU is fragmented; PXE ROMs are known to drop
    fragments, so the block size must fit unfragmented. `mtu` None means unknown.
    """
    cap = min(max_block_size, MAX_BLOCK_SIZE)
    if mtu is not None:
        cap = min(cap, mtu - _IP_HEADER[family] - _UDP_TFTP_OVERHEAD)
    return max(cap, MIN_BLOCK_SIZE)


def negotiate(
    options,
    *,
    file_size,
    block_size_cap,
    max_window_size,
    default_timeout,
    max_timeout=MAX_TIMEOUT,
):
    """Choose the transfer parameters and the OACK contents (RFC 2347 section "Negotiation").

    Only options the client asked for are acknowledged: firmware that asked for
    blksize alone and receives tsize too is known to abort (some UEFI builds).
    An option with a value out of range or not a number is ignored, as
    RFC 2347 lets a server do, rather than failing the transfer.
    """
    block_size, window_size, timeout = DEFAULT_BLOCK_SIZE, 1, default_timeout
    acknowledged = []

    for name, value in options.items():
        number = _number(value)
        if number is None:
            continue

        # RFC 2348: the server may answer with a smaller size, never a larger one.
        if name == "blksize" and number >= MIN_BLOCK_SIZE:
            block_size = min(number, block_size_cap)
            acknowledged.append((name, str(block_size)))

        # RFC 2349: in a read request tsize is 0 and the answer is the file size.
        elif name == "tsize":
            acknowledged.append((name, str(file_size)))

        # RFC 2349: the server must answer with the same timeout or not at all.
        # A long one is declined: 255 s times the retries would let one
        # unanswered request hold a transfer slot for over twenty minutes.
        elif name == "timeout" and MIN_TIMEOUT <= number <= min(max_timeout, MAX_TIMEOUT):
            timeout = float(number)
            acknowledged.append((name, str(number)))

        # RFC 7440: the server may answer with a smaller window.
        elif name == "windowsize" and number >= 1:
            window_size = min(number, max_window_size, MAX_WINDOW_SIZE)
            acknowledged.append((name, str(window_size)))

    return Negotiated(block_size, window_size, timeout, tuple(acknowledged))


def _number(value):
    # Plain ASCII digits only: int() would also take "+1", " 1" and "1_0".
    if not value or len(value) > 10 or not value.isascii() or not value.isdigit():
        return None
    return int(value)


# --- path rules --------------------------------------------------------------------------------


def normalise_filename(filename):
    """The client's file name as a path relative to the TFTP root, or TftpError.

    1. Empty names and control characters (NUL included) are refused.
    2. Percent escapes are refused: TFTP names are not URLs and nothing here
       decodes them, but "%2e%2e" in a name is a probe for a server that does.
    3. Backslashes become slashes: Windows-style boot menus and some UEFI
       firmware ask for "\\EFI\\BOOT\\bootx64.efi".
    4. A leading slash means the TFTP root, as with tftpd-hpa's --secure, so
       "/pxelinux.cfg/default" and "pxelinux.cfg/default" are the same file.
    5. Any ".." part is refused outright, even one that would stay inside the root.
    """
    if not filename or _CONTROL.search(filename):
        raise TftpError(
            f"file name {filename!r} is empty or has control characters", ACCESS_VIOLATION
        )

    if _PERCENT_ESCAPE.search(filename):
        raise TftpError(f"file name {filename!r} has percent escapes", ACCESS_VIOLATION)

    parts = [part for part in filename.replace("\\", "/").split("/") if part not in ("", ".")]
    if ".." in parts:
        raise TftpError(f"file name {filename!r} climbs with '..'", ACCESS_VIOLATION)
    if not parts:
        raise TftpError(f"file name {filename!r} names the root itself", ACCESS_VIOLATION)

    return PurePosixPath(*parts)


def resolve_path(root, filename):
    """The real path of `filename` under `root`, or TftpError if it leads outside.

    Symbolic links are followed and the result must still lie under the real
    root, so a link inside the root that points elsewhere is refused.
    """
    relative = normalise_filename(filename)
    real_root = os.path.realpath(root)
    candidate = os.path.realpath(os.path.join(real_root, relative))

    if os.path.commonpath([real_root, candidate]) != real_root:
        raise TftpError(f"file name {filename!r} resolves outside the root", ACCESS_VIOLATION)
    return Path(candidate)


# --- one transfer ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """What the server must do now: send these packets, then wait until the deadline.

    `deadline` None means the transfer is over (see Transfer.outcome).
    """

    packets: list
    deadline: float | None


class Transfer:
    """One read transfer after the request was accepted (RFC 1350 section 6, RFC 7440).

    `read_at(offset, length)` returns file bytes; it is called once per window,
    and a window's packets are kept for retransmission rather than read again.
    Blocks are numbered from 1 without limit here and sent modulo 65536, so the
    block after 65535 is 0, as tftpd-hpa does and atftp and curl expect.
    """

    def __init__(self, read_at: Callable, file_size, negotiated, *, retries):
        self.negotiated = negotiated
        self.file_size = file_size
        self.retries = retries
        self.outcome = None
        self.failure_reason = None
        self.bytes_sent = 0
        self.retransmissions = 0

        self._read_at = read_at
        # The last block is the first one shorter than blksize, possibly empty.
        self._last_block = file_size // negotiated.block_size + 1
        self._base = 1
        self._window_end = 0
        self._waiting_for_oack_ack = bool(negotiated.acknowledged)
        self._window = []
        self._tries_left = retries
        self._deadline = None

    @property
    def deadline(self):
        return self._deadline

    def start(self, now):
        """The first packets: an OACK when options were acknowledged, else DATA block 1."""
        if self._waiting_for_oack_ack:
            self._window = [encode_oack(dict(self.negotiated.acknowledged))]
            return self._arm(list(self._window), now)
        return self._send_window(now)

    def timer_expired(self, now):
        if self.outcome is not None:
            return Step([], None)

        if self._tries_left <= 0:
            seconds = self.negotiated.timeout
            message = f"no acknowledgement after {self.retries} retries of {seconds:g} s"
            return self._fail("timeout", [encode_error(NOT_DEFINED, message)])

        self._tries_left -= 1
        self.retransmissions += 1
        self.bytes_sent += self._window_payload_bytes()
        return self._arm(list(self._window), now)

    def packet_received(self, data, now):
        if self.outcome is not None:
            return Step([], None)

        try:
            packet = parse_packet(data)
        except TftpError:
            # A garbled datagram from the peer is dropped; the timer still runs.
            return Step([], self._deadline)

        if isinstance(packet, TftpPacketERR):
            return self._fail(f"client error {packet.errorcode}", [])
        if not isinstance(packet, TftpPacketACK):
            message = f"expected ACK, got opcode {packet.opcode}"
            return self._fail("illegal operation", [encode_error(ILLEGAL_OPERATION, message)])

        return self._acknowledged(packet.blocknumber, now)

    def _acknowledged(self, block, now):
        if self._waiting_for_oack_ack:
            # RFC 2347: the client confirms the OACK with ACK 0; anything else is stale.
            if block != 0:
                return Step([], self._deadline)
            self._waiting_for_oack_ack = False
            self._tries_left = self.retries
            return self._send_window(now)

        # Map the 16-bit number onto the blocks in flight. A duplicate ACK of the
        # previous window is ignored rather than answered (RFC 1350's Sorcerer's
        # Apprentice problem); the timer retransmits if the window was lost.
        in_flight = self._window_end - (self._base - 1)
        delta = (block - (self._base - 1)) % BLOCK_MODULUS
        if delta == 0 or delta > in_flight:
            return Step([], self._deadline)

        acked = self._base - 1 + delta
        if acked == self._last_block:
            self.outcome = "completed"
            self._deadline = None
            return Step([], None)

        # RFC 7440 section 4: an ACK inside the window means the client lost the
        # block after it; the next window starts there.
        self._base = acked + 1
        self._tries_left = self.retries
        return self._send_window(now)

    def _send_window(self, now):
        size = self.negotiated.block_size
        first = self._base
        last = min(first + self.negotiated.window_size - 1, self._last_block)
        chunk = self._read_at((first - 1) * size, (last - first + 1) * size)

        packets = []
        for index, block in enumerate(range(first, last + 1)):
            payload = chunk[index * size : (index + 1) * size]
            # A short block before the last would tell the client the file ended.
            if len(payload) < size and block != self._last_block:
                message = "file changed during transfer"
                return self._fail("file changed", [encode_error(NOT_DEFINED, message)])
            packets.append(encode_data(block, payload))
            self.bytes_sent += len(payload)

        self._window = packets
        self._window_end = last
        return self._arm(list(packets), now)

    def _window_payload_bytes(self):
        if self._waiting_for_oack_ack:
            return 0
        return sum(len(packet) - 4 for packet in self._window)

    def _arm(self, packets, now):
        self._deadline = now + self.negotiated.timeout
        return Step(packets, self._deadline)

    def _fail(self, reason, packets):
        self.outcome = "failed"
        self.failure_reason = reason
        self._deadline = None
        return Step(packets, None)
