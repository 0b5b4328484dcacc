"""Forward audit events to the bank's central log system as RFC 5424 syslog.

Transports: TLS over TCP (RFC 5425) or plain TCP, both with octet-counting
framing ("LEN SP MSG", RFC 5425 section 4.3, RFC 6587 section 3.4.1), and
UDP (RFC 5426) as best effort. The audit log is the queue: an event's id is
its sequence number (carried in the message as seq="..."), and the table
audit_forward_cursor keeps the last id the collector acknowledged. After
each batch the forwarder waits until the kernel reports that the collector's
TCP stack has acknowledged every byte (SIOCOUTQ empty on an established
connection) and only then moves the cursor, in the store. A connection that
fails before that is reopened and the batch is sent again from the cursor:
at-least-once, so the collector may see an event twice and can drop the
repeat by its seq. Plain syslog has no application acknowledgement: bytes
the collector's kernel acknowledged but the collector did not write before
it crashed are lost.

RELP (relp:// or relp+tls://, appliance/core/relp.py) closes that gap: the
collector answers each message with `rsp 200` for its transaction number,
and only that application acknowledgement moves the cursor, to the highest
event below which nothing is outstanding. Up to RELP_WINDOW messages are in
flight; whatever was not acknowledged when a connection ends is sent again
from the cursor on the next one, so here too a repeat carries the same seq.
A message the collector refuses (rsp 500) is never skipped: the connection is
dropped with an error log line and the event sent again after the retry delay.

UDP has no acknowledgement at all: the cursor moves once a datagram is
handed to the kernel.

This module must never drop an event from the queue that was not
acknowledged (TCP/TLS), and never block the appliance: a collector that is
down only makes the forwarder wait and retry.
"""

import fcntl
import json
import logging
import socket
import ssl
import struct
import termios
import urllib.parse
from dataclasses import dataclass

import trio

from appliance.core import audit, relp
from appliance.store import now

log = logging.getLogger(__name__)

# RFC 5424 section 6.2.1: facility 13 is "log audit".
FACILITY_LOG_AUDIT = 13
# Severity by result: informational, warning (a refused request), error.
SEVERITY = {"ok": 6, "denied": 4, "failed": 3}
# Structured data ID "name@enterprise": 32473 is the example private enterprise
# number of RFC 5612; a bank with its own number may ask for it to be changed.
SD_ID = "cloudboot@32473"
APP_NAME = "cloudboot"
BATCH = 200
ACK_TIMEOUT_SECONDS = 10.0
# A collector that accepts and then says nothing (a TLS handshake never answered, a
# receive window that never opens) would otherwise hold the forwarder for good: past
# this, the connection is dropped and opened again.
SEND_TIMEOUT_SECONDS = 30.0
TCP_ESTABLISHED = 1
# RELP messages sent and not yet acknowledged; rsyslog's omrelp uses the same order
# of magnitude (windowSize 128 by default).
RELP_WINDOW = 128
RELP_SOFTWARE = "cloudboot,1,https://cloudboot.invalid"


class ForwardError(Exception):
    """The forward target setting cannot be used."""


class CollectorRefused(Exception):
    """The collector answered a RELP message with an error code: it stays queued."""


@dataclass(frozen=True)
class Target:
    transport: str  # "tls", "tcp", "relp", "relp+tls" or "udp"
    host: str
    port: int

    @property
    def name(self):
        return f"{self.transport}://{self.host}:{self.port}"


def parse_target(text):
    """audit.forward_target as a Target; ForwardError names what is wrong."""
    parsed = urllib.parse.urlsplit(text)
    # RELP has no IANA port; 2514 is the one rsyslog's documentation uses.
    defaults = {"tls": 6514, "tcp": 514, "udp": 514, "relp": 2514, "relp+tls": 2514}
    if parsed.scheme not in defaults or not parsed.hostname:
        raise ForwardError(
            f"audit.forward_target must look like tls://host:6514, tcp://host:514, "
            f"relp://host:2514, relp+tls://host:2514 or udp://host:514, got {text!r}"
        )
    try:
        port = parsed.port or defaults[parsed.scheme]
    except ValueError:
        raise ForwardError(f"audit.forward_target has a bad port: {text!r}") from None
    return Target(parsed.scheme, parsed.hostname, port)


# -- RFC 5424 message ---------------------------------------------------------------


def _sd_value(value):
    # RFC 5424 section 6.3.3: '"', '\' and ']' are escaped inside PARAM-VALUE.
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _token(value, limit):
    """A header field: printable US-ASCII without spaces, or the NILVALUE '-'."""
    text = "".join(c for c in str(value or "") if 33 <= ord(c) <= 126)[:limit]
    return text or "-"


def format_message(event, hostname):
    """One audit event (a dict from audit.as_dict) as an RFC 5424 message (bytes)."""
    pri = FACILITY_LOG_AUDIT * 8 + SEVERITY.get(event["result"], 5)
    params = {
        "seq": event["id"],
        "actor": event["actor"],
        "action": event["action"],
        "resource": f"{event['resource_type']}/{event['resource_id'] or ''}",
        "result": event["result"],
        "trace": event["trace_id"],
        "source": event["source"],
        "hash": event["hash"],
    }
    sd = " ".join(f'{name}="{_sd_value(value)}"' for name, value in params.items())
    header = (
        f"<{pri}>1 {event['at']} {_token(hostname, 255)} {APP_NAME} - "
        f"{_token(event['action'], 32)} [{SD_ID} {sd}]"
    )
    # MSG is UTF-8 and so starts with the BOM (RFC 5424 section 6.4).
    body = json.dumps(event["details"], sort_keys=True, ensure_ascii=False)
    return header.encode() + b" \xef\xbb\xbf" + body.encode()


def frame(message):
    """Octet-counting framing: the length in decimal, a space, the message."""
    return str(len(message)).encode() + b" " + message


# -- the queue ----------------------------------------------------------------------


def cursor(conn, target_name):
    rows = conn.execute(
        "SELECT last_sent_id FROM audit_forward_cursor WHERE target = ?", (target_name,)
    ).fetchall()
    return rows[0][0] if rows else 0


def pending(conn, target_name, limit=BATCH):
    """The next events after the target's cursor, oldest first (a read function)."""
    after = cursor(conn, target_name)
    rows = audit.iter_events(conn, after_id=after, batch=limit)
    return [audit.as_dict(row) for _, row in zip(range(limit), rows, strict=False)]


def pending_after(conn, after_id, limit):
    """Up to `limit` events after `after_id`, oldest first (a read function)."""
    rows = audit.iter_events(conn, after_id=after_id, batch=limit)
    return [audit.as_dict(row) for _, row in zip(range(limit), rows, strict=False)]


def advance(conn, target_name, last_id):
    """Write function: the collector has everything up to last_id."""
    conn.execute(
        "INSERT INTO audit_forward_cursor (target, last_sent_id, updated_at) VALUES (?, ?, ?)"
        " ON CONFLICT (target) DO UPDATE SET last_sent_id = MAX(last_sent_id,"
        " excluded.last_sent_id), updated_at = excluded.updated_at",
        (target_name, last_id, now()),
    )


# -- the forwarder ------------------------------------------------------------------


def _unacknowledged(sock):
    """(bytes the peer has not acknowledged yet, connection still established)."""
    outq = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
    state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
    return outq, state == TCP_ESTABLISHED


class Forwarder:
    """Sends the audit log to one collector, from its cursor on, for as long as it runs."""

    def __init__(self, store, target, hostname, ssl_context=None, poll_seconds=1.0):
        self.store = store
        self.target = target
        self.hostname = hostname
        self.ssl_context = ssl_context
        self.poll_seconds = poll_seconds
        self.sent = 0
        self.reconnects = 0
        # RELP: set (and replaced) each time the collector's answers are taken in.
        self._progress = None

    async def run(self, retry_seconds=2.0):
        """Forward forever; reconnect after every failure (serve.py runs this in its nursery)."""
        while True:
            try:
                await self._run_once()
            except (OSError, trio.BrokenResourceError, trio.TooSlowError, ssl.SSLError) as e:
                self.reconnects += 1
                log.warning("audit forwarding to %s interrupted: %s", self.target.name, e)
            except (relp.RelpProtocolError, CollectorRefused) as e:
                self.reconnects += 1
                log.error(
                    "audit forwarding to %s stopped, events stay queued and are sent again"
                    " in %.1f s: %s",
                    self.target.name,
                    retry_seconds,
                    e,
                )
            await trio.sleep(retry_seconds)

    async def _run_once(self):
        if self.target.transport == "udp":
            await self._run_udp()
        elif self.target.transport.startswith("relp"):
            try:
                await self._run_relp()
            except BaseExceptionGroup as group:
                # The sender and the acknowledgement reader run as two tasks; report
                # the failure that ended the session, not the group around it.
                failure = _first_failure(group)
                if failure is None:
                    raise
                raise failure from None
        else:
            await self._run_stream()

    async def _connect(self):
        host, port = self.target.host, self.target.port
        if self.target.transport in ("tls", "relp+tls"):
            context = self.ssl_context or ssl.create_default_context()
            return await trio.open_ssl_over_tcp_stream(host, port, ssl_context=context)
        return await trio.open_tcp_stream(host, port)

    async def _run_stream(self):
        with trio.fail_after(SEND_TIMEOUT_SECONDS):
            stream = await self._connect()
        raw = stream.transport_stream if self.target.transport == "tls" else stream
        log.info("audit forwarding connected to %s", self.target.name)
        async with stream:
            while True:
                events = await self.store.read(pending, self.target.name)
                if not events:
                    await trio.sleep(self.poll_seconds)
                    continue
                payload = b"".join(frame(format_message(e, self.hostname)) for e in events)
                with trio.fail_after(SEND_TIMEOUT_SECONDS):
                    await stream.send_all(payload)
                await self._wait_acknowledged(raw.socket)
                await self.store.write(advance, self.target.name, events[-1]["id"])
                self.sent += len(events)

    async def _wait_acknowledged(self, sock):
        with trio.fail_after(ACK_TIMEOUT_SECONDS):
            while True:
                outq, established = _unacknowledged(sock)
                if not established:
                    raise OSError("the collector closed the connection before acknowledging")
                if outq == 0:
                    return
                await trio.sleep(0.01)

    async def _run_relp(self):
        with trio.fail_after(SEND_TIMEOUT_SECONDS):
            stream = await self._connect()
        session = relp.ClientSession(RELP_SOFTWARE)
        self._progress = trio.Event()
        async with stream:
            await self._relp_open(stream, session)
            log.info("audit forwarding connected to %s", self.target.name)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._relp_acknowledgements, stream, session)
                await self._relp_send(stream, session)

    async def _relp_open(self, stream, session):
        with trio.fail_after(ACK_TIMEOUT_SECONDS):
            await stream.send_all(session.open())
            while not session.is_open:
                data = await stream.receive_some(65536)
                if not data:
                    raise OSError("the collector closed the connection during RELP open")
                for outcome in session.receive(data):
                    if isinstance(outcome, relp.ServerClosing):
                        raise OSError("the collector sent serverclose during RELP open")

    async def _relp_send(self, stream, session):
        # Events go out after the last one sent on this connection, which starts
        # at the cursor: everything unacknowledged on an earlier one is sent again.
        last_sent = await self.store.read(cursor, self.target.name)
        while True:
            room = RELP_WINDOW - session.outstanding
            events = []
            if room > 0:
                events = await self.store.read(pending_after, last_sent, room)
            if not events:
                await self._relp_wait(session)
                continue
            payload = b"".join(
                session.syslog(format_message(e, self.hostname), e["id"]) for e in events
            )
            with trio.fail_after(SEND_TIMEOUT_SECONDS):
                await stream.send_all(payload)
            last_sent = events[-1]["id"]

    async def _relp_wait(self, session):
        """Wait for an acknowledgement when any is due (bounded), else poll the queue."""
        if not session.outstanding:
            await trio.sleep(self.poll_seconds)
            return
        progress = self._progress
        with trio.fail_after(ACK_TIMEOUT_SECONDS):
            await progress.wait()

    async def _relp_acknowledgements(self, stream, session):
        while True:
            data = await stream.receive_some(65536)
            if not data:
                raise OSError(
                    f"the collector closed the connection with {session.outstanding}"
                    " messages unacknowledged"
                )
            outcomes = session.receive(data)
            for outcome in outcomes:
                await self._relp_outcome(outcome)
            # Only an answer is progress: a collector dripping bytes that never make a
            # frame must not keep restarting the acknowledgement timeout.
            if outcomes:
                self._progress.set()
                self._progress = trio.Event()

    async def _relp_outcome(self, outcome):
        if isinstance(outcome, relp.Delivered):
            await self.store.write(advance, self.target.name, outcome.seq)
            self.sent += outcome.count
        elif isinstance(outcome, relp.Refused):
            raise CollectorRefused(
                f"the collector refused audit event seq={outcome.seq}:"
                f" {outcome.code} {outcome.text}"
            )
        elif isinstance(outcome, relp.ServerClosing):
            raise OSError("the collector sent serverclose")

    async def _run_udp(self):
        family = socket.AF_INET6 if ":" in self.target.host else socket.AF_INET
        with trio.socket.socket(family, socket.SOCK_DGRAM) as sock:
            await sock.connect((self.target.host, self.target.port))
            while True:
                events = await self.store.read(pending, self.target.name)
                if not events:
                    await trio.sleep(self.poll_seconds)
                    continue
                for event in events:
                    # RFC 5426: one message per datagram, no framing.
                    await sock.send(format_message(event, self.hostname))
                await self.store.write(advance, self.target.name, events[-1]["id"])
                self.sent += len(events)


def forwarder_from_settings(store, settings):
    """A Forwarder for audit.forward_target, or None when forwarding is off."""
    if not settings.audit.forward_target:
        return None
    target = parse_target(settings.audit.forward_target)
    context = None
    if target.transport in ("tls", "relp+tls"):
        context = _tls_context(settings.audit)
    return Forwarder(store, target, settings.server.service_name, context)


def _tls_context(audit_settings):
    try:
        context = ssl.create_default_context(cafile=audit_settings.forward_ca_file or None)
    except (OSError, ssl.SSLError) as e:
        raise ForwardError(f"audit.forward_ca_file cannot be used: {e}") from None
    if not audit_settings.forward_cert_file:
        return context
    try:
        context.load_cert_chain(
            audit_settings.forward_cert_file, audit_settings.forward_key_file or None
        )
    except (OSError, ssl.SSLError) as e:
        raise ForwardError(
            f"audit.forward_cert_file / forward_key_file cannot be used: {e}"
        ) from None
    return context


def _first_failure(group):
    """The first exception in a (nested) exception group that is not a cancellation."""
    for exception in group.exceptions:
        found = exception
        if isinstance(exception, BaseExceptionGroup):
            found = _first_failure(exception)
        if found is not None and not isinstance(found, trio.Cancelled):
            return found
    return None
