"""Granted network destinations: the provider's side in its namespace, the relay outside.

A provider never shares the host's network namespace. For each destination it was granted
(an IPv4 address and a TCP port), its init, still root inside the new namespace, brings up
`lo`, gives it the destination's address, and listens on that address and port. The
listening sockets go to the launcher, which stays in the host's namespace: it accepts each
connection and opens the real one to the same address and port, copying bytes both ways.
The provider connects to the address it was told as usual; any other address or port finds
nothing (no route, or nobody listening), so destinations are enforced outside the provider,
where seccomp (which cannot read connect() arguments) could not.

This module must never connect anywhere but a granted destination.
"""

import contextlib
import fcntl
import ipaddress
import selectors
import socket
import struct
import threading

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCSIFADDR = 0x8916
IFF_UP = 0x1
IFREQ_FLAGS = "16sH22x"
CONNECT_TIMEOUT = 10.0
CHUNK = 65536


def resolve(destinations):
    """Keep the destinations whose host is an IPv4 address (names are not resolved here)."""
    kept = []
    for destination in destinations:
        try:
            address = ipaddress.IPv4Address(destination["host"])
        except ValueError:
            continue
        kept.append({"host": str(address), "port": destination["port"]})
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
    """The launcher's side: accept on the provider's listeners, connect out, copy."""

    def __init__(self, listeners, destinations, on_connection):
        self.pairs = list(zip(listeners, destinations, strict=True))
        self.on_connection = on_connection
        self.threads = []

    def fds(self):
        return [listener.fileno() for listener, _ in self.pairs]

    def accept(self, fd):
        for listener, destination in self.pairs:
            if listener.fileno() == fd:
                inside, _ = listener.accept()
                thread = threading.Thread(
                    target=self._serve, args=(inside, destination), daemon=True
                )
                thread.start()
                self.threads.append(thread)

    def _serve(self, inside, destination):
        record = {"host": destination["host"], "port": destination["port"]}
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
        for thread in self.threads:
            thread.join(wait)
        for listener, _ in self.pairs:
            listener.close()


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
