"""The read-only TFTP server of the boot plane (trio).

Listens on settings.tftp.port, accepts read requests for files under
settings.tftp_root and runs each transfer as its own task on its own socket (a
new ephemeral port: the server's transfer ID, RFC 1350 section 4). The protocol
itself lives in appliance/proto/tftp.py; this module only moves datagrams,
keeps time, opens files and counts.

It must never write a file, serve anything outside the root, or let one
transfer's failure stop the server.
"""

import ipaddress
import logging
import os
import socket
import stat
import time

import psutil
import trio
from prometheus_client import Counter, Gauge

from appliance import log
from appliance.proto import tftp

logger = logging.getLogger(__name__)

TRANSFERS_STARTED = Counter("cloudboot_tftp_transfers_started", "TFTP transfers started")
TRANSFERS_COMPLETED = Counter("cloudboot_tftp_transfers_completed", "TFTP transfers completed")
TRANSFERS_FAILED = Counter(
    "cloudboot_tftp_transfers_failed", "TFTP transfers that did not complete", ["reason"]
)
TRANSFERS_ACTIVE = Gauge("cloudboot_tftp_transfers_active", "TFTP transfers in progress")
BYTES_SENT = Counter("cloudboot_tftp_bytes_sent", "TFTP file bytes sent, retransmissions included")
ERRORS = Counter("cloudboot_tftp_errors", "TFTP requests refused or datagrams dropped", ["reason"])

# Large enough for any datagram, so an oversized one is read whole and refused.
_RECEIVE_SIZE = 65536

# A client-chosen timeout above this is declined (the client keeps its own default):
# with the retries, an unanswered transfer holds its slot at most about a minute.
MAX_CLIENT_TIMEOUT = 10
# One client address may hold at most 1/PER_CLIENT_SHARE of max_transfers (never fewer
# than MIN_PER_CLIENT): one host that never acknowledges must not fill the server.
PER_CLIENT_SHARE = 4
MIN_PER_CLIENT = 4


async def serve(settings, address: str, *, task_status=trio.TASK_STATUS_IGNORED):
    """Serve TFTP on (address, settings.tftp.port) until cancelled.

    task_status.started() is given the bound port (useful with port 0 in tests).
    """
    server = TftpServer(settings, address)
    await server.run(task_status=task_status)


class TftpServer:
    def __init__(self, settings, address):
        self.config = settings.tftp
        self.root = settings.tftp_root
        self.address = address
        self.family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self.block_size_cap = tftp.block_size_cap(
            interface_mtu(address),
            family=6 if self.family == socket.AF_INET6 else 4,
            max_block_size=self.config.max_block_size,
        )
        self.active = 0
        self._busy_logged = False
        # Transfers in progress per client address.
        self._per_client = {}
        self.per_client_cap = max(MIN_PER_CLIENT, self.config.max_transfers // PER_CLIENT_SHARE)

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED):
        with trio.socket.socket(self.family, socket.SOCK_DGRAM) as sock:
            await sock.bind((self.address, self.config.port))
            port = sock.getsockname()[1]
            logger.info(
                "TFTP serving %s on %s port %d (block size cap %d)",
                self.root,
                self.address,
                port,
                self.block_size_cap,
            )

            async with trio.open_nursery() as nursery:
                task_status.started(port)
                while True:
                    try:
                        data, peer = await sock.recvfrom(_RECEIVE_SIZE)
                    except OSError as e:
                        # A queued ICMP error can surface here; it concerns no request.
                        ERRORS.labels("receive_failed").inc()
                        logger.debug("TFTP receive failed: %s", e)
                        continue
                    try:
                        await self._handle_request(sock, nursery, data, peer)
                    except Exception:
                        # The listener must outlive any one bad request.
                        ERRORS.labels("internal").inc()
                        logger.exception("TFTP request from %s failed", _format_peer(peer))

    async def _handle_request(self, sock, nursery, data, peer):
        client = _format_peer(peer)
        try:
            request = tftp.parse_request(data)
        except tftp.TftpError as e:
            await self._refuse_malformed(sock, data, peer, e)
            return

        with log.context(client=client, file=request.filename):
            if request.opcode == tftp.WRQ:
                logger.info("TFTP write request refused")
                await self._refuse(
                    sock, peer, tftp.ACCESS_VIOLATION, "server is read-only", "write"
                )
                return

            if self.active >= self.config.max_transfers:
                await self._refuse_busy(sock, peer)
                return
            self._busy_logged = False
            if self._per_client.get(peer[0], 0) >= self.per_client_cap:
                await self._refuse(
                    sock, peer, tftp.NOT_DEFINED, "too many transfers from this client", "busy"
                )
                return

            try:
                fd, size = self._open(request.filename)
            except tftp.TftpError as e:
                await self._refuse_path(sock, peer, e)
                return

            self.active += 1
            self._per_client[peer[0]] = self._per_client.get(peer[0], 0) + 1
            TRANSFERS_ACTIVE.inc()
            nursery.start_soon(self._transfer, request, peer, fd, size)

    def _open(self, filename):
        path = tftp.resolve_path(self.root, filename)
        try:
            # O_NONBLOCK so a FIFO planted in the root cannot stall the server;
            # O_NOFOLLOW so a symlink swapped in after resolve_path is not followed.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise tftp.TftpError(f"{filename!r} not found", tftp.FILE_NOT_FOUND) from None
        except OSError as e:
            message = f"{filename!r} cannot be opened: {e.strerror}"
            raise tftp.TftpError(message, tftp.ACCESS_VIOLATION) from None

        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            os.close(fd)
            raise tftp.TftpError(f"{filename!r} is not a regular file", tftp.FILE_NOT_FOUND)
        return fd, status.st_size

    async def _refuse_malformed(self, sock, data, peer, error):
        ERRORS.labels("malformed").inc()
        # Only something that looks like a request gets an answer: a reply to
        # every stray datagram would turn a flood into a reflected one.
        if data[:2] in (b"\x00\x01", b"\x00\x02"):
            logger.debug("malformed TFTP request from %s: %s", _format_peer(peer), error)
            await _send_error(sock, peer, error.code, error.message)

    async def _refuse_busy(self, sock, peer):
        if not self._busy_logged:
            logger.warning(
                "TFTP at max_transfers (%d): refusing new requests", self.config.max_transfers
            )
            self._busy_logged = True
        await self._refuse(sock, peer, tftp.NOT_DEFINED, "server busy", "busy")

    async def _refuse_path(self, sock, peer, error):
        if error.code == tftp.ACCESS_VIOLATION:
            logger.warning("TFTP request refused: %s", error.message)
            reason = "access_violation"
        else:
            logger.info("TFTP request refused: %s", error.message)
            reason = "not_found"
        await self._refuse(sock, peer, error.code, error.message, reason)

    async def _refuse(self, sock, peer, code, message, reason):
        ERRORS.labels(reason).inc()
        await _send_error(sock, peer, code, message)

    async def _transfer(self, request, peer, fd, size):
        try:
            with _transfer_socket(self.family, self.address, peer) as sock:
                tid = sock.getsockname()[1]
                with log.context(client=_format_peer(peer), file=request.filename, tid=tid):
                    await self._run_transfer(sock, request, fd, size)
        except Exception:
            TRANSFERS_FAILED.labels("internal").inc()
            logger.exception("TFTP transfer of %r failed", request.filename)
        finally:
            os.close(fd)
            self.active -= 1
            left = self._per_client.pop(peer[0]) - 1
            if left:
                self._per_client[peer[0]] = left
            TRANSFERS_ACTIVE.dec()

    async def _run_transfer(self, sock, request, fd, size):
        negotiated = tftp.negotiate(
            request.options,
            file_size=size,
            block_size_cap=self.block_size_cap,
            max_window_size=self.config.max_window_size,
            default_timeout=self.config.timeout_seconds,
            max_timeout=MAX_CLIENT_TIMEOUT,
        )
        transfer = tftp.Transfer(
            lambda offset, length: os.pread(fd, length, offset),
            size,
            negotiated,
            retries=self.config.retries,
        )
        TRANSFERS_STARTED.inc()
        started = time.monotonic()

        try:
            await self._drive(sock, transfer)
        except OSError as e:
            # ICMP port unreachable comes back as ECONNREFUSED on a connected socket.
            transfer.outcome, transfer.failure_reason = "failed", f"socket: {e.strerror}"

        seconds = time.monotonic() - started
        if transfer.outcome == "completed":
            TRANSFERS_COMPLETED.inc()
            logger.info(
                "TFTP sent %d bytes in %.3f s (blksize %d, windowsize %d, %d retransmissions)",
                size,
                seconds,
                negotiated.block_size,
                negotiated.window_size,
                transfer.retransmissions,
            )
        else:
            TRANSFERS_FAILED.labels(_reason_label(transfer.failure_reason)).inc()
            logger.info("TFTP transfer ended: %s after %.3f s", transfer.failure_reason, seconds)

    async def _drive(self, sock, transfer):
        step = transfer.start(trio.current_time())
        counted = 0
        try:
            while True:
                await _send_all(sock, step.packets)
                # Count per window, not per block: cheap and still live.
                BYTES_SENT.inc(transfer.bytes_sent - counted)
                counted = transfer.bytes_sent
                if step.deadline is None:
                    return
                step = await self._next_step(sock, transfer, step.deadline)
        finally:
            BYTES_SENT.inc(transfer.bytes_sent - counted)

    async def _next_step(self, sock, transfer, deadline):
        data = None
        with trio.move_on_at(deadline):
            data = await _receive(sock)

        now = trio.current_time()
        if data is None:
            return transfer.timer_expired(now)
        return transfer.packet_received(data, now)


def _transfer_socket(family, address, peer):
    """A new socket on an ephemeral port (our transfer ID), connected to the client.

    connect() makes the kernel drop datagrams from any other address or port,
    which RFC 1350 section 4 asks us to ignore. The socket is a plain
    non-blocking one driven by trio's wait_readable/wait_writable: trio's
    socket wrapper passes through the scheduler after every datagram, and a
    window of blocks should leave in one pass.
    """
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.bind((address, 0))
        sock.connect(peer)
    except BaseException:
        sock.close()
        raise
    return sock


async def _send_all(sock, packets):
    for packet in packets:
        while True:
            try:
                sock.send(packet)
                break
            except BlockingIOError:
                await trio.lowlevel.wait_writable(sock)


async def _receive(sock):
    while True:
        await trio.lowlevel.wait_readable(sock)
        try:
            return sock.recv(_RECEIVE_SIZE)
        except BlockingIOError:
            continue


def _reason_label(reason):
    # Keep label values few: the free text stays in the log line.
    reason = reason or "unknown"
    for label in ("timeout", "client error", "socket", "illegal operation", "file changed"):
        if reason.startswith(label):
            return label.replace(" ", "_")
    return "other"


async def _send_error(sock, peer, code, message):
    try:
        await sock.sendto(tftp.encode_error(code, message), peer)
    except (BlockingIOError, OSError):
        # A full send buffer or an unreachable client: the error packet is a courtesy.
        ERRORS.labels("send_failed").inc()


def _format_peer(peer):
    return f"[{peer[0]}]:{peer[1]}" if ":" in peer[0] else f"{peer[0]}:{peer[1]}"


def interface_mtu(address):
    """MTU of the interface holding `address`; for a wildcard address the smallest MTU up.

    None when it cannot be found (the block size is then capped by settings only).
    """
    stats = psutil.net_if_stats()
    try:
        wildcard = ipaddress.ip_address(address).is_unspecified
    except ValueError:
        return None

    if wildcard:
        mtus = [s.mtu for s in stats.values() if s.isup and s.mtu > 0]
        return min(mtus, default=None)

    for name, addresses in psutil.net_if_addrs().items():
        for entry in addresses:
            if entry.address.split("%")[0] == address and name in stats:
                return stats[name].mtu
    return None
