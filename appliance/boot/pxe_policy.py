"""What the proxyDHCP answers to one decoded packet, and why it stays silent.

`PxePolicy.decide` takes a decoded packet and where it arrived, and returns a
`Reply` (the packet to send and where to) or an `Ignore` (a reason for the
counter and a message for the log). It does no I/O: the server in
appliance/boot/proxydhcp.py owns the sockets, the log and the counters.

A proxyDHCP (PXE 2.1) never offers an address: the bank's own
DHCP server does that. It must never answer a client that is not network
booting, and never hand a boot program built for another architecture.
"""

import ipaddress
import logging
from collections import OrderedDict, deque
from dataclasses import dataclass

from appliance.proto import dhcp
from appliance.proto.bootparams import normalize_mac

BROADCAST = "255.255.255.255"

# How many clients the once-per-client log and the boot-loop watch remember.
# A bound keeps a flood of made-up MACs from growing memory.
REMEMBERED_CLIENTS = 4096

# PXE 2.1: discovery control bit 3, "use the boot file in this
# offer, skip boot server discovery". Strict UEFI firmware takes a proxy
# offer that carries no boot-server list only with this bit set.
DISCOVERY_CONTROL_USE_BOOT_FILE = b"\x08"


@dataclass(frozen=True)
class Firmware:
    """A client system architecture (RFC 4578 section 2.1, IANA registry)."""

    name: str
    family: str
    http: bool


ARCHITECTURES = {
    0: Firmware("BIOS", "bios", http=False),
    6: Firmware("32-bit x86 UEFI", "ia32", http=False),
    7: Firmware("x86-64 UEFI", "x64", http=False),
    # Type 9 is "EFI x86-64" in RFC 4578's list; some firmware sends it for x86-64.
    9: Firmware("x86-64 UEFI", "x64", http=False),
    11: Firmware("ARM64 UEFI", "arm64", http=False),
    15: Firmware("32-bit x86 UEFI HTTP", "ia32", http=True),
    16: Firmware("x86-64 UEFI HTTP", "x64", http=True),
    19: Firmware("ARM64 UEFI HTTP", "arm64", http=True),
}


@dataclass(frozen=True)
class Reply:
    """Send `packet` to (address, port). `warning`, when set, is logged once."""

    packet: dhcp.Packet
    address: str
    port: int
    kind: str
    boot_file: str
    warning: str | None = None


@dataclass(frozen=True)
class Ignore:
    """Send nothing. `reason` labels the counter; `message` goes to the log at `level`."""

    reason: str
    message: str
    level: int = logging.DEBUG


class PxePolicy:
    """Decides per packet; remembers only what the log and boot-loop watch need."""

    def __init__(self, dhcp_settings, address, http_port):
        self.settings = dhcp_settings
        self.address = str(ipaddress.IPv4Address(address))
        self.http_port = http_port
        self.ignored_macs = {normalize_mac(m) for m in dhcp_settings.ignore_pxe_macs}
        self._told = OrderedDict()
        self._boot_loops = BootLoopWatch(
            dhcp_settings.boot_loop_count, dhcp_settings.boot_loop_window_seconds
        )

    def decide(self, packet, *, on_pxe_port, source, now):
        """Reply or Ignore for one request that arrived on port 67 or 4011 from source."""
        refusal = self._check_request(packet, on_pxe_port)
        if refusal is not None:
            return refusal

        http = packet.options[dhcp.OPTION_VENDOR_CLASS].startswith(b"HTTPClient")
        if is_ipxe(packet):
            return self._reply(packet, on_pxe_port, source, self.script_url(packet.mac), http)

        # Checked after iPXE: the point of the list is that the firmware's PXE
        # falls through to HTTP boot, whose iPXE must then still get its script.
        if not http and packet.mac in self.ignored_macs:
            return Ignore("mac_ignored", "MAC is in dhcp.ignore_pxe_macs; PXE request ignored")

        return self._boot_program_reply(packet, on_pxe_port, source, now, http)

    def script_url(self, mac):
        """The per-machine iPXE script (docs/architecture.md, URL layout)."""
        return f"http://{self.address}:{self.http_port}/ipxe/{mac.replace(':', '-')}.ipxe"

    # Steps of decide

    def _check_request(self, packet, on_pxe_port):
        if packet.op != dhcp.BOOTREQUEST:
            return Ignore("not_request", "BOOTREPLY from another server")
        if packet.message_type is None:
            return Ignore("not_dhcp", "plain BOOTP request without option 53")

        vendor_class = packet.options.get(dhcp.OPTION_VENDOR_CLASS, b"")
        if not vendor_class.startswith((b"PXEClient", b"HTTPClient")):
            return Ignore("not_pxe_client", f"vendor class {vendor_class!r} is not network boot")

        refusal = self._check_message_type(packet, on_pxe_port)
        if refusal is not None:
            return refusal

        # The script URL and the boot-loop watch are keyed by an Ethernet MAC.
        if packet.htype != 1 or packet.hlen != 6:
            return Ignore(
                "not_ethernet", f"hardware type {packet.htype} length {packet.hlen} not Ethernet"
            )
        return None

    def _check_message_type(self, packet, on_pxe_port):
        kind = packet.message_type
        name = dhcp.MESSAGE_TYPE_NAMES.get(kind, f"message type {kind}")

        # PXE 2.1: port 4011 takes only boot server DHCPREQUESTs.
        if on_pxe_port:
            if kind == dhcp.REQUEST:
                return None
            return Ignore("unexpected_message_type", f"{name} on the PXE port")

        if kind == dhcp.DISCOVER:
            return None
        if kind != dhcp.REQUEST:
            return Ignore("unexpected_message_type", f"{name} on the DHCP port")

        # A DHCPREQUEST on port 67 selects the server named in option 54 (RFC
        # 2131 section 4.3.2). A PXE client that accepted the bank's address
        # offer names the bank's server, and that server answers it. Only a
        # client that names this appliance (firmware that treats the proxy
        # offer as selectable) gets a proxy DHCPACK.
        server_id = packet.options.get(dhcp.OPTION_SERVER_ID)
        if server_id is None or str(ipaddress.IPv4Address(server_id)) != self.address:
            return Ignore("request_for_other_server", "DHCPREQUEST names another server")
        return None

    def _boot_program_reply(self, packet, on_pxe_port, source, now, http):
        firmware, code = client_firmware(packet)
        if firmware is None:
            return self._ignore_once(
                packet.mac,
                "unknown_arch",
                f"client architecture {code!r} is not one this appliance boots; no answer",
            )

        boot_file = self.boot_program(firmware, http)
        if boot_file is None:
            setting = {"arm64": "uefi_arm64_boot_file", "ia32": "uefi_ia32_boot_file"}
            return self._ignore_once(
                packet.mac,
                "no_boot_program",
                f"{firmware.name} client ({'HTTP' if http else 'PXE'}) but no boot program "
                f"for it is configured (dhcp.{setting.get(firmware.family, '?')}); no answer",
            )

        warning = None
        if packet.message_type == dhcp.DISCOVER:
            warning = self._boot_loops.record(packet.mac, packet.xid, now)

        reply = self._reply(packet, on_pxe_port, source, boot_file, http)
        return Reply(reply.packet, reply.address, reply.port, reply.kind, boot_file, warning)

    def boot_program(self, firmware, http):
        """The TFTP file name or HTTP URL of the iPXE build for firmware, or None."""
        tftp_files = {
            "bios": self.settings.bios_boot_file,
            "x64": self.settings.uefi_x64_boot_file,
            "arm64": self.settings.uefi_arm64_boot_file,
            "ia32": self.settings.uefi_ia32_boot_file,
        }
        if not http:
            return tftp_files[firmware.family] or None

        # UEFI HTTP boot fetches the program from the boot root over HTTP;
        # BIOS has no HTTP boot.
        http_paths = {
            "x64": "ipxe/ipxe.efi",
            "arm64": self.settings.uefi_arm64_boot_file,
            "ia32": self.settings.uefi_ia32_boot_file,
        }
        path = http_paths.get(firmware.family)
        if not path:
            return None
        return f"http://{self.address}:{self.http_port}/boot/{path.lstrip('/')}"

    def _ignore_once(self, mac, reason, message):
        # Firmware retries every few seconds for minutes: one warning per
        # client is enough, the rest go to debug and the counter.
        key = (reason, mac)
        first = key not in self._told
        self._told[key] = True
        self._told.move_to_end(key)
        while len(self._told) > REMEMBERED_CLIENTS:
            self._told.popitem(last=False)
        return Ignore(reason, message, logging.WARNING if first else logging.DEBUG)

    def _reply(self, request, on_pxe_port, source, boot_file, http):
        kind = "ack" if request.message_type == dhcp.REQUEST else "offer"
        packet = build_reply(request, kind, self.address, boot_file, http)
        address, port = self._destination(request, on_pxe_port, source)
        return Reply(packet, address, port, kind, boot_file)

    def _destination(self, request, on_pxe_port, source):
        # RFC 2131 section 4.1, in its order: relay first, then the client's
        # own address, then broadcast (this server offers no yiaddr to unicast
        # to). PXE 2.1: the port 4011 answer goes back to the
        # address and port the request came from.
        if request.relayed:
            return request.giaddr, self.settings.relay_port
        if on_pxe_port:
            return source[0], source[1]
        if request.ciaddr != dhcp.ZERO_ADDRESS:
            return request.ciaddr, self.settings.client_port
        return BROADCAST, self.settings.client_port


def is_ipxe(packet):
    """True for iPXE: user class "iPXE" (raw or RFC 3004) or iPXE's option 175."""
    if dhcp.OPTION_IPXE_ENCAPSULATED in packet.options:
        return True
    user_class = packet.options.get(dhcp.OPTION_USER_CLASS)
    return user_class is not None and b"iPXE" in dhcp.user_classes(user_class)


def client_firmware(packet):
    """(Firmware or None, the code seen). Option 93 first, else "Arch:" in option 60."""
    codes = dhcp.client_architectures(packet)
    code = codes[0] if codes else dhcp.vendor_class_architecture(packet)
    return ARCHITECTURES.get(code), code


def build_reply(request, kind, address, boot_file, http):
    """The proxy OFFER or ACK: boot information only, never an address."""
    options = {
        dhcp.OPTION_MESSAGE_TYPE: bytes((dhcp.ACK if kind == "ack" else dhcp.OFFER,)),
        dhcp.OPTION_SERVER_ID: ipaddress.IPv4Address(address).packed,
        # PXE 2.1 and the UEFI HTTP boot chapter: the client accepts a
        # proxy offer only when option 60 names its own boot method.
        dhcp.OPTION_VENDOR_CLASS: b"HTTPClient" if http else b"PXEClient",
    }

    # RFC 4578 section 2.3 / PXE 2.1: echo the client's GUID exactly; never make one up.
    guid = request.options.get(dhcp.OPTION_CLIENT_GUID)
    if guid is not None:
        options[dhcp.OPTION_CLIENT_GUID] = guid

    encoded_file = boot_file.encode()
    if http or len(encoded_file) > 127:
        # EDK II's HTTP boot guide takes the URI from the file field or option
        # 67, so both carry it; a name too long for the file field goes only here.
        options[dhcp.OPTION_BOOT_FILE] = encoded_file
    if not http:
        options[dhcp.OPTION_VENDOR_SPECIFIC] = _pxe_vendor_options(request, kind)

    # RFC 3046 section 2.2: the relay agent information comes back unchanged, last.
    relay_info = request.options.get(dhcp.OPTION_RELAY_AGENT)
    if relay_info is not None:
        options[dhcp.OPTION_RELAY_AGENT] = relay_info

    return dhcp.Packet(
        op=dhcp.BOOTREPLY,
        htype=request.htype,
        hlen=request.hlen,
        xid=request.xid,
        flags=request.flags,
        # RFC 2131 table 3: ciaddr 0 in an OFFER, the client's in an ACK.
        ciaddr=request.ciaddr if kind == "ack" else dhcp.ZERO_ADDRESS,
        siaddr=address,
        giaddr=request.giaddr,
        chaddr=request.chaddr,
        file=encoded_file if len(encoded_file) <= 127 else b"",
        options=options,
    )


def _pxe_vendor_options(request, kind):
    suboptions = {dhcp.PXE_DISCOVERY_CONTROL: DISCOVERY_CONTROL_USE_BOOT_FILE}
    if kind == "ack":
        # PXE 2.1: the boot server ACK names the boot item it answers.
        item = _requested_boot_item(request)
        if item is not None:
            suboptions[dhcp.PXE_BOOT_ITEM] = item
    return dhcp.encode_suboptions(suboptions)


def _requested_boot_item(request):
    value = request.options.get(dhcp.OPTION_VENDOR_SPECIFIC)
    if value is None:
        return None
    try:
        return dhcp.decode_suboptions(value).get(dhcp.PXE_BOOT_ITEM)
    except dhcp.DhcpDecodeError:
        return None


class BootLoopWatch:
    """Notices a MAC fetching the iPXE binary again and again.

    A machine that keeps coming back for the boot program never got as far as
    iPXE's script: a broken loader, a wrong architecture or a firewall on the
    HTTP port. Each boot attempt is counted once per transaction id, because
    firmware resends an unanswered DISCOVER with the same xid.
    """

    def __init__(self, count, window_seconds):
        self.count = count
        self.window = window_seconds
        self._seen = OrderedDict()

    def record(self, mac, xid, now):
        """Record one request; return a warning the first time a loop is seen."""
        attempts, warned = self._seen.pop(mac, (deque(maxlen=max(self.count, 1)), False))
        while attempts and now - attempts[0][0] > self.window:
            attempts.popleft()
        if not attempts:
            warned = False
        if all(seen_xid != xid for _, seen_xid in attempts):
            attempts.append((now, xid))

        looping = len(attempts) >= self.count
        self._seen[mac] = (attempts, warned or looping)
        while len(self._seen) > REMEMBERED_CLIENTS:
            self._seen.popitem(last=False)

        if looping and not warned:
            return (
                f"boot loop: {len(attempts)} requests for the iPXE binary within "
                f"{self.window} s; the client never reached its iPXE script"
            )
        return None
