"""Granted network destinations: the provider's side in its namespace, the relay outside.

A provider never shares the host's network namespace. For each destination it was granted
(an IPv4 address, a port and "tcp" or "udp"), its init, still root inside the new namespace,
brings up `lo`, gives it the destination's address, and binds that address and port. The
sockets go to the launcher, which stays in the host's namespace:

- TCP: it accepts each connection and opens the real one to the same address and port,
  copying bytes both ways;
- UDP (IPMI's RMCP+ on 623): each datagram the provider sends to the destination arrives on
  the bound socket; the launcher sends it on from an outside socket connected to the real
  destination (one per provider-side source port, so concurrent sessions stay apart), and
  sends every answer back from the destination's own address and port, as the provider
  expects. A connected UDP socket only receives datagrams from its peer (udp(7)), so no
  other host can inject answers.

The provider talks to the address it was told as usual; any other address or port finds
nothing (no route, or nobody listening), so destinations are enforced outside the provider,
where seccomp (which cannot read connect() or sendto() arguments) could not.

This module must never send anything anywhere but a granted destination.
"""

import contextlib
import fcntl
import ipaddress
import selectors
import socket
import struct
import threading
import time

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCSIFADDR = 0x8916
IFF_UP = 0x1
IFREQ_FLAGS = "16sH22x"
CONNECT_TIMEOUT = 10.0
CHUNK = 65536
PROTOCOLS = ("tcp", "udp")
# A provider-side UDP source that has been silent this long has its outside socket closed.
UDP_IDLE_SECONDS = 60.0
# At most this many outside UDP sockets per destination: a provider cannot make the
# launcher open sockets without bound by sending from ever new source ports.
MAX_UDP_PEERS = 64


def resolve(destinations):
    """Keep the destinations whose host is an IPv4 address (names are not resolved here).

    Each comes back as {"host", "port", "protocol"}; the protocol is "tcp" unless it says
    "udp". Duplicates are dropped: one address and port can be bound only once.
    """
    kept = []
    for destination in destinations:
        try:
            address = ipaddress.IPv4Address(destination["host"])
        except ValueError:
            continue
        protocol = destination.get("protocol", "tcp")
        if protocol not in PROTOCOLS:
            continue
        entry = {"host": str(address), "port": destination["port"], "protocol": protocol}
        if entry not in kept:
            kept.append(entry)
    return kept


def listen_inside(destinations):
    """In the provider's new network namespace: lo up, addresses, one listener each."""
    control = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        _interface_up(control, b"lo")
        aliases = 0
        for destination in destinations:
            if not ipaddress.IPv4Address(destination["host"]).is_loopback:
                # A labelled address on lo ("lo:N"), added with the classic ioctl so no
                # netlink code or `ip` binary is needed.
                _add_address(control, f"lo:{aliases}".encode(), destination["host"])
                aliases += 1
    finally:
        control.close()
    listeners = []
    for destination in destinations:
        if destination.get("protocol") == "udp":
            server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            server.bind((destination["host"], destination["port"]))
        else:
            server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind((destination["host"], destination["port"]))
            server.listen(16)
        listeners.append(server)
    return listeners


def _interface_up(control, name):
    # struct ifreq: a 16-byte name and a 24-byte union (40 bytes on 64-bit Linux).
    request = struct.pack(IFREQ_FLAGS, name, 0)
    flags = struct.unpack(IFREQ_FLAGS, fcntl.ioctl(control, SIOCGIFFLAGS, request))[1]
    fcntl.ioctl(control, SIOCSIFFLAGS, struct.pack(IFREQ_FLAGS, name, flags | IFF_UP))


def _add_address(control, name, host):
    sockaddr = struct.pack("=H2s4s8x", socket.AF_INET, b"\0\0", socket.inet_aton(host))
    fcntl.ioctl(control, SIOCSIFADDR, struct.pack("16s16s8x", name, sockaddr))


class Relay:
    """The launcher's side: accept on the provider's listeners, connect out, copy.

    UDP destinations are served by a _DatagramRelay each; `accept(fd)` on one of their
    sockets forwards the datagram waiting there.
    """

    def __init__(self, listeners, destinations, on_connection):
        self.pairs = list(zip(listeners, destinations, strict=True))
        self.on_connection = on_connection
        self.threads = []
        self.datagrams = {
            listener.fileno(): _DatagramRelay(listener, destination, on_connection)
            for listener, destination in self.pairs
            if listener.type == socket.SOCK_DGRAM
        }

    def fds(self):
        return [listener.fileno() for listener, _ in self.pairs]

    def accept(self, fd):
        if fd in self.datagrams:
            self.datagrams[fd].forward()
            return
        for listener, destination in self.pairs:
            if listener.fileno() == fd:
                inside, _ = listener.accept()
                thread = threading.Thread(
                    target=self._serve, args=(inside, destination), daemon=True
                )
                thread.start()
                self.threads.append(thread)

    def _serve(self, inside, destination):
        record = {"host": destination["host"], "port": destination["port"], "protocol": "tcp"}
        try:
            outside = socket.create_connection(
                (destination["host"], destination["port"]), timeout=CONNECT_TIMEOUT
            )
        except OSError as exc:
            inside.close()
            self.on_connection({**record, "error": exc.strerror or str(exc)})
            return
        sent, received = _copy_both_ways(inside, outside)
        self.on_connection({**record, "bytes_out": sent, "bytes_in": received})

    def close(self, wait=2.0):
        for datagram_relay in self.datagrams.values():
            datagram_relay.close(wait)
        for thread in self.threads:
            thread.join(wait)
        for listener, _ in self.pairs:
            listener.close()


class _DatagramRelay:
    """One granted UDP destination: datagrams out through a socket per provider source."""

    def __init__(self, inside, destination, on_connection):
        self.inside = inside
        self.destination = (destination["host"], destination["port"])
        self.on_connection = on_connection
        self.peers = {}  # provider-side (address, port) -> outside socket
        self.counts = {"datagrams_out": 0, "datagrams_in": 0, "bytes_out": 0, "bytes_in": 0}
        self.errors = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = []

    def forward(self):
        """One datagram from the provider, sent on to the destination."""
        try:
            data, source = self.inside.recvfrom(CHUNK)
        except OSError:
            return
        outside = self._outside_for(source)
        if outside is None:
            return
        try:
            outside.send(data)
        except OSError as exc:
            self._error(exc)
            return
        with self.lock:
            self.counts["datagrams_out"] += 1
            self.counts["bytes_out"] += len(data)

    def _outside_for(self, source):
        outside = self.peers.get(source)
        if outside is not None:
            return outside
        if len(self.peers) >= MAX_UDP_PEERS:
            self._error(OSError(f"more than {MAX_UDP_PEERS} provider-side UDP sources"))
            return None
        outside = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            outside.connect(self.destination)
        except OSError as exc:
            outside.close()
            self._error(exc)
            return None
        self.peers[source] = outside
        thread = threading.Thread(target=self._answers, args=(outside, source), daemon=True)
        thread.start()
        self.threads.append(thread)
        return outside

    def _answers(self, outside, source):
        """Answers from the destination, back to the provider's socket that asked."""
        selector = selectors.DefaultSelector()
        selector.register(outside, selectors.EVENT_READ)
        idle_since = time.monotonic()
        try:
            while not self.stopping.is_set():
                if time.monotonic() - idle_since > UDP_IDLE_SECONDS:
                    return
                if not selector.select(0.25):
                    continue
                try:
                    data = outside.recv(CHUNK)
                    self.inside.sendto(data, source)
                except OSError as exc:
                    # ECONNREFUSED: the destination answered with ICMP port unreachable.
                    self._error(exc)
                    continue
                idle_since = time.monotonic()
                with self.lock:
                    self.counts["datagrams_in"] += 1
                    self.counts["bytes_in"] += len(data)
        finally:
            selector.close()

    def _error(self, exc):
        with self.lock:
            text = exc.strerror or str(exc)
            if text not in self.errors:
                self.errors.append(text)

    def close(self, wait):
        self.stopping.set()
        for thread in self.threads:
            thread.join(wait)
        for outside in self.peers.values():
            outside.close()
        if self.peers or self.errors:
            record = {"host": self.destination[0], "port": self.destination[1]}
            record.update(protocol="udp", **self.counts)
            if self.errors:
                record["error"] = "; ".join(self.errors)
            self.on_connection(record)


def _copy_both_ways(inside, outside):
    counts = {inside: 0, outside: 0}
    peer = {inside: outside, outside: inside}
    selector = selectors.DefaultSelector()
    for sock in (inside, outside):
        sock.setblocking(True)
        selector.register(sock, selectors.EVENT_READ)
    try:
        while selector.get_map():
            for key, _ in selector.select():
                sock = key.fileobj
                try:
                    data = sock.recv(CHUNK)
                except OSError:
                    data = b""
                if not data:
                    selector.unregister(sock)
                    _shutdown_write(peer[sock])
                    continue
                counts[sock] += len(data)
                peer[sock].sendall(data)
    except OSError:
        pass
    finally:
        selector.close()
        inside.close()
        outside.close()
    return counts[inside], counts[outside]


def _shutdown_write(sock):
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
