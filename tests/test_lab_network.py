"""The lab's network without VMs: namespaces, bridge, and dnsmasq handing out addresses only.

A busybox DHCP client in a third namespace, joined to the lab bridge by a veth
pair, stands in for a server's NIC. It must get an address from the lab range
and no boot information (no boot file, no TFTP server): the bank's DHCP server
in the lab leaves booting to the appliance. Afterwards the namespaces are gone.
"""

import secrets
import shutil

import pytest

from lab import dnsmasq, netns
from tests import vmlab

pytestmark = pytest.mark.netns

CLIENT_SCRIPT = """#!/bin/sh
env | sort > "$(dirname "$0")/udhcpc-$1.env"
"""


@pytest.fixture
def lab_network(tmp_path):
    vmlab.require_root_and("dnsmasq", "busybox")
    suffix = secrets.token_hex(3)
    network = netns.LabNetwork(netns=f"cbl-{suffix}", dhcp_netns=f"cbl-{suffix}-d")
    client_ns = f"cbl-{suffix}-c"
    server = None
    try:
        netns.build(network)
        server = dnsmasq.start(network, tmp_path)
        _add_client(network, client_ns)
        yield network, client_ns
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
        netns.teardown(network)
        netns.delete(client_ns)


def _add_client(network, client_ns):
    netns.create(client_ns)
    netns.in_ns(network.netns, "ip", "link", "add", "cli0", "type", "veth", "peer", "name", "eth0")
    netns.in_ns(network.netns, "ip", "link", "set", "eth0", "netns", client_ns)
    netns.in_ns(network.netns, "ip", "link", "set", "cli0", "master", network.bridge, "up")
    netns.in_ns(client_ns, "ip", "link", "set", "eth0", "up")


def test_dnsmasq_leases_an_address_without_boot_options(lab_network, tmp_path):
    network, client_ns = lab_network
    script = tmp_path / "udhcpc.sh"
    script.write_text(CLIENT_SCRIPT)
    script.chmod(0o755)

    busybox = shutil.which("busybox")
    result = netns.in_ns(
        client_ns,
        busybox,
        "udhcpc",
        "-i",
        "eth0",
        "-n",
        "-q",
        "-t",
        "5",
        "-s",
        str(script),
        check=False,
    )

    assert result.returncode == 0, result.stderr
    lease = dict(
        line.split("=", 1) for line in (tmp_path / "udhcpc-bound.env").read_text().splitlines()
    )
    first, last = network.dhcp_range
    host = int(lease["ip"].rsplit(".", 1)[1])
    assert int(first.rsplit(".", 1)[1]) <= host <= int(last.rsplit(".", 1)[1])
    assert lease["serverid"] == network.dhcp_address
    assert "boot_file" not in lease and "bootfile" not in lease and "tftp" not in lease
    # dnsmasq puts its own address in siaddr even without a boot file; with no
    # file name to fetch, firmware takes the boot server from the proxy answer.

    leases = dnsmasq.leases_in_log((tmp_path / "dnsmasq.log").read_text())
    assert any(seen.get("ack") == lease["ip"] for seen in leases.values())


def test_teardown_removes_the_namespaces(lab_network):
    network, _ = lab_network
    netns.teardown(network)

    assert not netns.exists(network.netns)
    assert not netns.exists(network.dhcp_netns)
