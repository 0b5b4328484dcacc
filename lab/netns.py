"""Network namespaces, bridges, veth pairs and tap devices for the virtual PXE lab.

The lab's whole network lives inside namespaces it creates itself: a bridge that
stands for the server VLAN, the appliance's address on that bridge, a second
namespace for the bank's DHCP server joined to the bridge by a veth pair, and a
tap device per virtual server. Deleting the namespaces deletes every device in
them. This module must never add an address, route or device to the host's own
namespace: nothing the lab does may reach a real network.
"""

import contextlib
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass

logger = logging.getLogger(__name__)


class NetnsError(Exception):
    """An `ip` command failed; carries the command and what it printed."""


def run(argv, check=True):
    """Run one command, raising NetnsError with its stderr when it fails."""
    result = subprocess.run(argv, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise NetnsError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def ns_argv(netns, argv):
    """The argv that runs argv inside netns."""
    return ["ip", "netns", "exec", netns, *argv]


def in_ns(netns, *argv, check=True):
    return run(ns_argv(netns, list(argv)), check=check)


def exists(netns):
    names = run(["ip", "netns", "list"]).stdout.split("\n")
    return any(line.split(" ")[0] == netns for line in names if line)


def create(netns):
    """Make a namespace with loopback up (trio and curl inside it need 127.0.0.1)."""
    run(["ip", "netns", "add", netns])
    in_ns(netns, "ip", "link", "set", "lo", "up")


def delete(netns):
    """End the processes left in a lab namespace, then delete it; a missing one is fine.

    Only namespaces the lab made are ever passed here. A process left in one
    (a lab whose driver was killed) would otherwise run on in a namespace
    nobody can name any more.
    """
    if not exists(netns):
        return
    stop_processes(netns)
    run(["ip", "netns", "delete", netns])


def stop_processes(netns, grace_seconds=10):
    """SIGTERM every process in netns, SIGKILL those still there after grace_seconds."""
    pids = _pids(netns)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while pids and time.monotonic() < deadline:
        time.sleep(0.2)
        pids = _pids(netns)
    for pid in pids:
        logger.warning("pid %d in %s ignored SIGTERM; killing it", pid, netns)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _pids(netns):
    result = run(["ip", "netns", "pids", netns], check=False)
    return [int(word) for word in result.stdout.split()]


@dataclass
class LabNetwork:
    """Names and addresses of one lab network (all inside its namespaces)."""

    netns: str
    dhcp_netns: str
    bridge: str = "br0"
    # A second bridge with nothing else on it, for each server's second NIC.
    isolated_bridge: str = "br1"
    prefix: str = "10.77.0"
    appliance_address: str = "10.77.0.1"
    dhcp_address: str = "10.77.0.2"
    dhcp_interface: str = "eth0"

    @property
    def dhcp_range(self):
        return f"{self.prefix}.100", f"{self.prefix}.200"


def build(network):
    """Create the namespaces, the bridges, the appliance address and the DHCP server's link."""
    create(network.netns)
    create(network.dhcp_netns)
    ns = network.netns

    for bridge in (network.bridge, network.isolated_bridge):
        in_ns(ns, "ip", "link", "add", bridge, "type", "bridge")
        # STP and the forward delay would hold the ports silent for 15 s after a
        # VM starts; firmware sends its first DISCOVER before that.
        in_ns(
            ns,
            "ip",
            "link",
            "set",
            bridge,
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        )
        in_ns(ns, "ip", "link", "set", bridge, "up")
    in_ns(ns, "ip", "addr", "add", f"{network.appliance_address}/24", "dev", network.bridge)

    # The veth pair is made in the lab namespace and one end moved out, so no
    # device ever appears in the host's namespace.
    in_ns(ns, "ip", "link", "add", "dhcp0", "type", "veth", "peer", "name", network.dhcp_interface)
    in_ns(ns, "ip", "link", "set", network.dhcp_interface, "netns", network.dhcp_netns)
    in_ns(ns, "ip", "link", "set", "dhcp0", "master", network.bridge, "up")
    dns = network.dhcp_netns
    in_ns(dns, "ip", "addr", "add", f"{network.dhcp_address}/24", "dev", network.dhcp_interface)
    in_ns(dns, "ip", "link", "set", network.dhcp_interface, "up")
    logger.info("lab network %s ready on %s", ns, network.bridge)


def add_tap(netns, tap, bridge):
    """A tap device for one VM NIC, enslaved to bridge, inside netns."""
    in_ns(netns, "ip", "tuntap", "add", "dev", tap, "mode", "tap")
    in_ns(netns, "ip", "link", "set", tap, "master", bridge, "up")


def teardown(network):
    delete(network.netns)
    delete(network.dhcp_netns)
