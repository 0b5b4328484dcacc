"""RELP, the Reliable Event Logging Protocol of rsyslog and librelp, as a sans-I/O client.

RELP has no RFC; the protocol is the one librelp documents and rsyslog's
imrelp speaks. Every message is one frame:

    TXNR SP COMMAND SP DATALEN [SP DATA] TRAILER

TXNR is a decimal transaction number (1..999999999, then 1 again), COMMAND a
word of letters, DATALEN the decimal length of DATA in octets (0 means no SP
and no DATA) and TRAILER one LF. A client opens a session with `open` (its
offers, one per line: relp_version, relp_software, commands), sends each
syslog message as a `syslog` frame and ends with `close`. The server answers
every client frame with `rsp`, carrying the client's TXNR and DATA of
"CODE SP TEXT [LF more]": 200 means the message was taken (application
acknowledgement, after the collector's queue accepted it), 500 a refusal. A
server that shuts down sends `serverclose` with TXNR 0.

This module only turns bytes into frames and frames into outcomes, and keeps
the window of unacknowledged transactions: it never touches a socket, the
store or trio. appliance/core/audit_forward.py does the I/O.
"""

import collections
import dataclasses

MAX_TXNR = 999_999_999
# librelp's own limit is its maxDataSize (128 KiB by default in imrelp); a
# header longer than this cannot be a RELP header and is not waited for.
MAX_HEADER = 9 + 1 + 32 + 1 + 9 + 1
# What a client offers in `open`: protocol version 0 and the one command it uses.
RELP_VERSION = "0"
COMMANDS = "syslog"


class RelpProtocolError(Exception):
    """The peer sent something that is not RELP, or RELP this client cannot accept."""


@dataclasses.dataclass(frozen=True)
class Frame:
    txnr: int
    command: str
    data: bytes = b""


@dataclasses.dataclass(frozen=True)
class Response:
    """A server's `rsp` frame: the status code, its text and any further lines."""

    txnr: int
    code: int
    text: str
    extra: bytes = b""

    @property
    def ok(self):
        return self.code == 200


def encode_frame(txnr, command, data=b""):
    """One RELP frame as bytes."""
    if not 0 <= txnr <= MAX_TXNR:
        raise ValueError(f"RELP txnr must be 0-{MAX_TXNR}, got {txnr}")
    if not command.isalpha() or not command.isascii():
        raise ValueError(f"RELP command must be letters, got {command!r}")
    if not data:
        return f"{txnr} {command} 0\n".encode()
    return f"{txnr} {command} {len(data)} ".encode() + data + b"\n"


class FrameReader:
    """Collects received bytes and hands back whole frames as they complete."""

    def __init__(self, max_data=1 << 20):
        self.max_data = max_data
        self._buffer = bytearray()

    def feed(self, data):
        """Frames completed by `data`; RelpProtocolError for anything that is not RELP."""
        self._buffer += data
        frames = []
        while True:
            frame = self._next()
            if frame is None:
                return frames
            frames.append(frame)

    def _next(self):
        # 1. The header is three space-separated fields; DATALEN is followed by
        #    SP (data follows) or LF (DATALEN 0, no data).
        header_end = _header_end(self._buffer)
        if header_end is None:
            if len(self._buffer) > MAX_HEADER:
                raise RelpProtocolError(f"no RELP header in {bytes(self._buffer[:40])!r}")
            return None
        txnr, command, datalen = _parse_header(bytes(self._buffer[:header_end]))
        if datalen > self.max_data:
            raise RelpProtocolError(f"RELP frame of {datalen} octets exceeds {self.max_data}")

        # 2. Data, then the LF trailer. With DATALEN 0 the LF ends the header.
        if datalen == 0:
            if self._buffer[header_end : header_end + 1] != b"\n":
                raise RelpProtocolError(f"RELP frame {txnr} with DATALEN 0 must end in LF")
            del self._buffer[: header_end + 1]
            return Frame(txnr, command)
        end = header_end + 1 + datalen
        if len(self._buffer) < end + 1:
            return None
        if self._buffer[end] != 0x0A:
            raise RelpProtocolError(
                f"RELP frame {txnr} does not end in LF after {datalen} octets of data: "
                f"got {bytes(self._buffer[end : end + 1])!r}"
            )
        data = bytes(self._buffer[header_end + 1 : end])
        del self._buffer[: end + 1]
        return Frame(txnr, command, data)


def _header_end(buffer):
    """Index of the separator after DATALEN (SP or LF), or None while incomplete."""
    spaces = 0
    for index, octet in enumerate(buffer[:MAX_HEADER]):
        if octet == 0x20:
            spaces += 1
            if spaces == 3:
                return index
        elif octet == 0x0A and spaces == 2:
            return index
    return None


def _parse_header(header):
    parts = header.split(b" ")
    if len(parts) != 3 or not all(parts):
        raise RelpProtocolError(f"RELP header must be TXNR COMMAND DATALEN, got {header!r}")
    txnr, command, datalen = parts
    if not txnr.isdigit() or len(txnr) > 9:
        raise RelpProtocolError(f"RELP txnr must be 1-9 digits, got {txnr!r}")
    if not command.isalpha() or len(command) > 32:
        raise RelpProtocolError(f"RELP command must be letters, got {command!r}")
    if not datalen.isdigit() or len(datalen) > 9:
        raise RelpProtocolError(f"RELP DATALEN must be 1-9 digits, got {datalen!r}")
    return int(txnr), command.decode("ascii"), int(datalen)


def parse_response(frame):
    """An `rsp` frame's DATA as a Response: "CODE SP TEXT" then optional LF and more."""
    first, _, extra = frame.data.partition(b"\n")
    code, _, text = first.partition(b" ")
    if len(code) != 3 or not code.isdigit():
        raise RelpProtocolError(
            f"RELP rsp for txnr {frame.txnr} must start with a 3-digit code, "
            f"got {frame.data[:40]!r}"
        )
    return Response(frame.txnr, int(code), text.decode("utf-8", "replace"), extra)


# -- the client session -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Opened:
    """The server accepted `open`; `offers` are its answer's key=value lines."""

    offers: dict


@dataclasses.dataclass(frozen=True)
class Delivered:
    """Every message up to and including `seq` is acknowledged, none missing before it;
    `count` messages became delivered with this answer."""

    seq: int
    count: int


@dataclasses.dataclass(frozen=True)
class Refused:
    """The server answered a syslog frame with an error code: the message was not taken."""

    seq: int
    code: int
    text: str


@dataclasses.dataclass(frozen=True)
class ServerClosing:
    """The server said it is going away (`serverclose`); unacknowledged frames must be resent."""


class ClientSession:
    """The client side of one RELP connection: txnrs, the window and acknowledgements.

    `seq` is the caller's sequence number for a message (the audit event id):
    acknowledgements are reported as the highest seq below which nothing is
    outstanding, so the caller can move a single cursor.
    """

    def __init__(self, software="cloudboot"):
        self.software = software
        self.is_open = False
        self._next_txnr = 1
        self._open_txnr = None
        self._close_txnr = None
        # txnr -> [seq, acknowledged], in the order sent.
        self._unacked = collections.OrderedDict()
        self._reader = FrameReader()

    @property
    def outstanding(self):
        return len(self._unacked)

    def _take_txnr(self):
        txnr = self._next_txnr
        self._next_txnr = 1 if txnr == MAX_TXNR else txnr + 1
        return txnr

    def open(self):
        self._open_txnr = self._take_txnr()
        offers = f"relp_version={RELP_VERSION}\nrelp_software={self.software}\ncommands={COMMANDS}"
        return encode_frame(self._open_txnr, "open", offers.encode())

    def syslog(self, message, seq):
        if not self.is_open:
            raise RelpProtocolError("a RELP session must be open before syslog frames")
        txnr = self._take_txnr()
        self._unacked[txnr] = [seq, False]
        return encode_frame(txnr, "syslog", message)

    def close(self):
        self._close_txnr = self._take_txnr()
        return encode_frame(self._close_txnr, "close")

    def receive(self, data):
        """Outcomes (Opened, Delivered, Refused, ServerClosing) of the bytes received."""
        outcomes = []
        for frame in self._reader.feed(data):
            outcomes.extend(self._handle(frame))
        return outcomes

    def _handle(self, frame):
        if frame.command == "serverclose":
            return [ServerClosing()]
        if frame.command != "rsp":
            raise RelpProtocolError(f"a RELP server sent {frame.command!r}; a client expects rsp")
        # librelp answers `close` with an rsp of DATALEN 0, not "200 OK".
        if frame.txnr == self._close_txnr:
            return []
        response = parse_response(frame)

        if frame.txnr == self._open_txnr:
            return [self._opened(response)]
        if frame.txnr not in self._unacked:
            raise RelpProtocolError(f"RELP rsp for txnr {frame.txnr}, which is not outstanding")
        if not response.ok:
            seq = self._unacked[frame.txnr][0]
            return [Refused(seq, response.code, response.text)]
        self._unacked[frame.txnr][1] = True
        return self._delivered()

    def _opened(self, response):
        self._open_txnr = None
        if not response.ok:
            raise RelpProtocolError(f"RELP open refused: {response.code} {response.text}")
        offers = {}
        for line in response.extra.decode("utf-8", "replace").splitlines():
            name, _, value = line.partition("=")
            offers[name.strip()] = value.strip()
        commands = offers.get("commands", COMMANDS).split(",")
        if "syslog" not in commands:
            raise RelpProtocolError(f"RELP server does not offer the syslog command: {offers!r}")
        self.is_open = True
        return Opened(offers)

    def _delivered(self):
        # Move past the acknowledged prefix only: a later rsp cannot cover an earlier
        # message that is still outstanding.
        last, count = None, 0
        while self._unacked:
            txnr, (seq, acked) = next(iter(self._unacked.items()))
            if not acked:
                break
            del self._unacked[txnr]
            last, count = seq, count + 1
        return [] if last is None else [Delivered(last, count)]
