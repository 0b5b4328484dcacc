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
it crashed are lost (RELP would close that gap; see docs/limitations.md).

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

from appliance.core import audit
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


class ForwardError(Exception):
    """The forward target setting cannot be used."""


@dataclass(frozen=True)
class Target:
    transport: str  # "tls", "tcp" or "udp"
    host: str
    port: int

    @property
    def name(self):
        return f"{self.transport}://{self.host}:{self.port}"


def parse_target(text):
    """audit.forward_target as a Target; ForwardError names what is wrong."""
    parsed = urllib.parse.urlsplit(text)
    defaults = {"tls": 6514, "tcp": 514, "udp": 514}
    if parsed.scheme not in defaults or not parsed.hostname:
        raise ForwardError(
            f"audit.forward_target must look like tls://host:6514, tcp://host:514 or "
            f"udp://host:514, got {text!r}"
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

    async def run(self, retry_seconds=2.0):
        """Forward forever; reconnect after every failure (serve.py runs this in its nursery)."""
        while True:
            try:
                if self.target.transport == "udp":
                    await self._run_udp()
                else:
                    await self._run_stream()
            except (OSError, trio.BrokenResourceError, trio.TooSlowError, ssl.SSLError) as e:
                self.reconnects += 1
                log.warning("audit forwarding to %s interrupted: %s", self.target.name, e)
            await trio.sleep(retry_seconds)

    async def _connect(self):
        host, port = self.target.host, self.target.port
        if self.target.transport == "tls":
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
    if target.transport == "tls":
        try:
            context = ssl.create_default_context(cafile=settings.audit.forward_ca_file or None)
        except (OSError, ssl.SSLError) as e:
            raise ForwardError(f"audit.forward_ca_file cannot be used: {e}") from None
    return Forwarder(store, target, settings.server.service_name, context)
