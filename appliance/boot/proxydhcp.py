"""The proxyDHCP server: two UDP sockets around appliance.boot.pxe_policy.

Port 67 hears the firmware's broadcast DHCPDISCOVER on the PXE interface only
(SO_BINDTODEVICE), so the bank's own DHCP server can run on other interfaces
of the same host. Port 4011 hears PXE boot-server requests on the appliance
address. What to answer is decided by PxePolicy; this module only moves bytes,
logs and counts.

It must never offer an address, never stop because of one bad packet, and
never send anywhere the packet itself does not name (RFC 2131 section 4.1).
"""

import logging
import socket

import trio
from prometheus_client import Counter

from appliance import log
from appliance.boot.pxe_policy import Ignore, PxePolicy
from appliance.proto import dhcp

logger = logging.getLogger(__name__)

IGNORED = Counter(
    "cloudboot_proxydhcp_ignored",
    "DHCP packets the proxyDHCP did not answer, by reason.",
    ["reason"],
)
REPLIES = Counter(
    "cloudboot_proxydhcp_replies",
    "Proxy DHCPOFFER and DHCPACK messages sent, by kind.",
    ["kind"],
)

# The largest UDP payload; DHCP messages are far smaller, but a truncated read
# would turn a valid packet into a decode error.
MAX_DATAGRAM = 65535


async def serve(settings, address, interface, *, task_status=trio.TASK_STATUS_IGNORED):
    """Answer PXE and HTTP-boot clients on interface until cancelled.

    address is the appliance's IPv4 address on that interface: port 4011 binds
    to it, and offers name it unless server.advertise_address says otherwise.
    """
    advertised = settings.server.advertise_address or address
    policy = PxePolicy(settings.dhcp, advertised, settings.server.http_port)

    with (
        await _broadcast_socket(settings.dhcp.port, interface) as dhcp_socket,
        await _pxe_socket(address, settings.dhcp.pxe_port) as pxe_socket,
    ):
        logger.info(
            "proxyDHCP listening on %s port %d and %s port %d",
            interface,
            settings.dhcp.port,
            address,
            settings.dhcp.pxe_port,
        )
        task_status.started()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_receive, dhcp_socket, dhcp_socket, policy, False)
            nursery.start_soon(_receive, pxe_socket, dhcp_socket, policy, True)


async def _broadcast_socket(port, interface):
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        # Clients without an address broadcast to 255.255.255.255: binding to
        # the device keeps this socket from hearing (or answering) other LANs.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
        await sock.bind(("0.0.0.0", port))
    except OSError as e:
        sock.close()
        raise OSError(
            e.errno,
            f"proxyDHCP cannot listen on UDP port {port} of interface {interface!r}: "
            f"{e.strerror} (needs root or CAP_NET_RAW and CAP_NET_BIND_SERVICE)",
        ) from None
    except BaseException:
        sock.close()
        raise
    return sock


async def _pxe_socket(address, port):
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        await sock.bind((address, port))
    except OSError as e:
        sock.close()
        raise OSError(
            e.errno, f"proxyDHCP cannot listen on {address} UDP port {port}: {e.strerror}"
        ) from None
    except BaseException:
        sock.close()
        raise
    return sock


async def _receive(sock, dhcp_socket, policy, on_pxe_port):
    while True:
        try:
            data, source = await sock.recvfrom(MAX_DATAGRAM)
        except OSError as e:
            # ICMP errors from earlier sends surface here on Linux; keep listening.
            logger.debug("receive failed: %s", e)
            continue

        # The 4011 answer leaves from port 4011 (the client expects that
        # source port); broadcast and relay answers leave from port 67.
        reply_socket = sock if on_pxe_port else dhcp_socket
        await handle_datagram(data, source, policy, reply_socket, on_pxe_port)


async def handle_datagram(data, source, policy, reply_socket, on_pxe_port):
    """Decode, decide, send: one packet, whose failure never reaches the loop."""
    try:
        packet = dhcp.decode(data)
    except dhcp.DhcpDecodeError as e:
        IGNORED.labels(reason="malformed").inc()
        logger.debug("malformed packet from %s:%d: %s", source[0], source[1], e)
        return

    with log.context(mac=packet.mac, xid=f"0x{packet.xid:08x}"):
        try:
            decision = policy.decide(
                packet, on_pxe_port=on_pxe_port, source=source, now=trio.current_time()
            )
            if isinstance(decision, Ignore):
                IGNORED.labels(reason=decision.reason).inc()
                logger.log(
                    decision.level, "not answered (%s): %s", decision.reason, decision.message
                )
                return
            await _send(decision, reply_socket)
        except Exception:
            IGNORED.labels(reason="internal_error").inc()
            logger.exception("could not handle packet from %s:%d", source[0], source[1])


async def _send(reply, reply_socket):
    if reply.warning:
        logger.warning("%s", reply.warning)

    payload = dhcp.encode(reply.packet)
    try:
        await reply_socket.sendto(payload, (reply.address, reply.port))
    except OSError as e:
        IGNORED.labels(reason="send_failed").inc()
        logger.warning("sending %s to %s:%d failed: %s", reply.kind, reply.address, reply.port, e)
        return

    REPLIES.labels(kind=reply.kind).inc()
    logger.info(
        "sent proxy %s with boot file %s to %s:%d",
        reply.kind,
        reply.boot_file,
        reply.address,
        reply.port,
    )
