"""A firmware-like DHCP client for the namespace test: run inside the client namespace.

python -m tests.dhcp_netns_client broadcast IFACE
    broadcasts three DISCOVERs from 0.0.0.0:68 (UEFI PXE with a GUID, UEFI
    HTTP boot, iPXE) and prints each answer as "xid hex" on one line.
python -m tests.dhcp_netns_client pxe IFACE SERVER CLIENT_ADDRESS
    sends a boot-server DHCPREQUEST to SERVER:4011 from port 68 (ciaddr
    CLIENT_ADDRESS) and prints the answer the same way.
"""

import socket
import sys

from appliance.proto import dhcp
from tests.dhcp_requests import AMI_GUID, HTTP_X64, UEFI_X64, request

MAC = bytes.fromhex("5254000a0b0c")

DISCOVERS = {
    0x11110001: request(mac=MAC, xid=0x11110001, option_97=AMI_GUID),
    0x11110002: request(mac=MAC, xid=0x11110002, vendor_class=HTTP_X64, arch=b"\x00\x10"),
    0x11110003: request(mac=MAC, xid=0x11110003, option_77=b"iPXE", option_175=b"\xb1\x01\x01"),
}


def pxe_request(client_address):
    return request(
        message_type=dhcp.REQUEST,
        mac=MAC,
        xid=0x11110004,
        ciaddr=client_address,
        vendor_class=UEFI_X64,
        option_43=dhcp.encode_suboptions({dhcp.PXE_BOOT_ITEM: b"\x80\x00\x00\x00"}),
    )


def client_socket(interface):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
    sock.bind(("0.0.0.0", 68))
    sock.settimeout(10)
    return sock


def exchange(sock, packets, destination):
    for packet in packets.values():
        sock.sendto(dhcp.encode(packet), destination)

    answered = set()
    while answered != set(packets):
        data = sock.recv(4096)
        reply = dhcp.decode(data)
        if reply.op == dhcp.BOOTREPLY and reply.xid in packets:
            answered.add(reply.xid)
            print(f"{reply.xid:08x} {data.hex()}", flush=True)


def main(mode, interface, server=None, client_address=None):
    with client_socket(interface) as sock:
        if mode == "broadcast":
            exchange(sock, DISCOVERS, ("255.255.255.255", 67))
        else:
            packet = pxe_request(client_address)
            exchange(sock, {packet.xid: packet}, (server, 4011))


if __name__ == "__main__":
    main(*sys.argv[1:])
