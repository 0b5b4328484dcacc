"""The bank's own DHCP server in the lab: dnsmasq handing out addresses only.

A bank's DHCP server gives servers an address and nothing about booting; the
appliance adds the boot information as a proxyDHCP server beside it. So this
dnsmasq is started with no boot options, no TFTP and no DNS. It runs in its own
namespace and must never be pointed at an interface outside the lab.
"""

import logging
import re
import subprocess
from pathlib import Path

from lab import netns

logger = logging.getLogger(__name__)


def argv(network, workdir):
    """dnsmasq's command line for network, with its files under workdir."""
    first, last = network.dhcp_range
    return [
        "dnsmasq",
        "--keep-in-foreground",
        # /etc/dnsmasq.conf on a developer's machine must not add options here.
        "--conf-file=/dev/null",
        f"--interface={network.dhcp_interface}",
        "--bind-interfaces",
        "--except-interface=lo",
        f"--dhcp-range={first},{last},255.255.255.0,1h",
        "--port=0",
        "--no-resolv",
        "--no-hosts",
        "--log-dhcp",
        f"--log-facility={workdir / 'dnsmasq.log'}",
        f"--dhcp-leasefile={workdir / 'dnsmasq.leases'}",
        f"--pid-file={workdir / 'dnsmasq.pid'}",
        # The lab directory belongs to root; the default user "nobody" could
        # not rewrite the lease file.
        "--user=root",
    ]


def start(network, workdir):
    """Start dnsmasq in the DHCP namespace; returns the Popen (it outlives the caller)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    out = open(workdir / "dnsmasq.out", "ab")  # noqa: SIM115 - handed to the child process
    process = subprocess.Popen(
        netns.ns_argv(network.dhcp_netns, argv(network, workdir)),
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    out.close()
    logger.info("dnsmasq started, pid %d", process.pid)
    return process


_OFFER = re.compile(r"DHCPOFFER\(\S+\) (\S+) ([0-9a-f:]{17})")
_ACK = re.compile(r"DHCPACK\(\S+\) (\S+) ([0-9a-f:]{17})")


def leases_in_log(text):
    """{mac: (event, address)} for each DHCPOFFER / DHCPACK line in dnsmasq's log."""
    seen = {}
    for line in text.splitlines():
        for event, pattern in (("offer", _OFFER), ("ack", _ACK)):
            match = pattern.search(line)
            if match:
                seen.setdefault(match.group(2), {})[event] = match.group(1)
    return seen
