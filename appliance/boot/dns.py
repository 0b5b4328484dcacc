"""A small authoritative DNS server for the PXE network (off unless dns.enabled).

It answers A queries for the appliance's service name (bare, and under
dns.domain) and for provisioned machines' host names (asked of the core through
`lookup`). It is never a resolver: recursion is not offered (RA=0) and every
other name is REFUSED, so it cannot be used to reach or amplify anything else.
A packet that does not parse is dropped and counted; nothing a client sends
can stop the server.
"""

import inspect
import ipaddress
import logging
import socket

import trio
from dnslib import AAAA, QTYPE, RCODE, RR, A, DNSError, DNSRecord
from dnslib.label import DNSLabelError

logger = logging.getLogger(__name__)

_MAX_PACKET = 4096
_OPCODE_QUERY = 0


class DnsStats:
    def __init__(self):
        self.queries = 0
        self.answered = 0
        self.refused = 0
        self.malformed = 0
        self.send_failures = 0


class Zone:
    """The names this server is authoritative for, and how to answer them."""

    def __init__(self, service_name, domain, address, ttl, lookup=None):
        self.domain = domain.strip(".").lower()
        self.service_names = {service_name.lower(), f"{service_name}.{self.domain}".lower()}
        self.address = address
        self.ttl = ttl
        self.lookup = lookup

    async def address_for(self, name):
        """The IP for a queried name, or None when it is not ours."""
        if name in self.service_names:
            return self.address
        host = self._host_part(name)
        if host is None or self.lookup is None:
            return None
        found = self.lookup(host)
        if inspect.isawaitable(found):
            found = await found
        return found

    def _host_part(self, name):
        # A provisioned machine is known by its host name, asked bare or under our domain.
        if name.endswith("." + self.domain):
            name = name[: -len(self.domain) - 1]
        return name if name and "." not in name else None


async def build_reply(packet, zone):
    """The reply bytes for a query packet, or None to drop it. Raises DNSError if malformed."""
    query = DNSRecord.parse(packet)
    if query.header.qr:
        # A response sent to us: answering could start a loop between two servers.
        return None

    reply = query.reply(ra=0, aa=1)
    if query.header.opcode != _OPCODE_QUERY:
        reply.header.rcode = RCODE.NOTIMP
        return reply.pack()
    if len(query.questions) != 1:
        reply.header.rcode = RCODE.FORMERR
        return reply.pack()

    question = query.q
    name = str(question.qname).rstrip(".").lower()
    address = await zone.address_for(name)
    if address is None:
        reply.header.aa = 0
        reply.header.rcode = RCODE.REFUSED
        return reply.pack()

    rdata = _rdata_for(question.qtype, address)
    if rdata is not None:
        reply.add_answer(RR(question.qname, question.qtype, rdata=rdata, ttl=zone.ttl))
    # A name we know asked for another type gets NOERROR with no answer (RFC 2308 NODATA).
    return reply.pack()


def _rdata_for(qtype, address):
    ip = ipaddress.ip_address(address)
    if qtype in (QTYPE.A, QTYPE.ANY) and ip.version == 4:
        return A(str(ip))
    if qtype == QTYPE.AAAA and ip.version == 6:
        return AAAA(str(ip))
    return None


async def serve(
    settings, address, lookup=None, *, stats=None, task_status=trio.TASK_STATUS_IGNORED
):
    """Answer DNS on UDP address:settings.dns.port until cancelled (nothing if disabled).

    `lookup(host_name) -> ip or None` (plain or async) gives provisioned machines'
    addresses. task_status.started() receives the bound (address, port).
    """
    if not settings.dns.enabled:
        logger.info("DNS server disabled (dns.enabled = false)")
        task_status.started(None)
        return

    stats = stats or DnsStats()
    zone = Zone(
        settings.server.service_name,
        settings.dns.domain,
        address,
        settings.dns.ttl_seconds,
        lookup,
    )
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with trio.socket.socket(family, socket.SOCK_DGRAM) as sock:
        await sock.bind((address, settings.dns.port))
        bound = sock.getsockname()
        logger.info("DNS server answering for %s on %s:%s", sorted(zone.service_names), *bound[:2])
        task_status.started(bound[:2])
        while True:
            packet, peer = await sock.recvfrom(_MAX_PACKET)
            await _answer(sock, packet, peer, zone, stats)


async def _answer(sock, packet, peer, zone, stats):
    stats.queries += 1
    try:
        reply = await build_reply(packet, zone)
    # DNSLabelError (a name over RFC 1035's 255 octets, found only when the
    # reply is packed) is not a DNSError, but it is the sender's malformed name.
    except (DNSError, DNSLabelError, ValueError, IndexError, UnicodeError) as e:
        stats.malformed += 1
        logger.debug("dropped malformed DNS packet from %s: %s", peer[0], e)
        return
    except Exception:
        stats.malformed += 1
        logger.exception("DNS query from %s could not be answered", peer[0])
        return

    if reply is None:
        return
    # Counted before sending: the rcode is in the low four bits of byte 3.
    if reply[3] & 0x0F == RCODE.REFUSED:
        stats.refused += 1
    else:
        stats.answered += 1
    try:
        await sock.sendto(reply, peer)
    except OSError as e:
        stats.send_failures += 1
        logger.debug("DNS reply to %s failed: %s", peer[0], e)
