"""Benchmark: proxyDHCP DISCOVER to OFFER rate and latency, CloudBoot vs dnsmasq in proxy mode.

Run by hand, as root; never from the test suite. The script makes two network
namespaces of its own (a server and a client, joined by a veth pair on
10.91.0.0/24) and deletes them at the end, also on an error or Ctrl-C. Nothing
leaves those namespaces.

In the server namespace runs CloudBoot's proxyDHCP alone
(appliance.boot.proxydhcp.serve, started by this script, logging to a file as
`cloudboot serve` does), dnsmasq with `--dhcp-range=...,proxy`, or, on
request, "trio-floor": no proxyDHCP at all, a bare trio loop that turns each
request around unread, to show what a trio UDP socket costs by itself. The
client namespace broadcasts PXE DISCOVERs from port 68 (option 60
`PXEClient:Arch:00007:UNDI:003016`, option 93 = 7, an option 97 GUID, a new
chaddr, GUID and xid in every packet), the way a rack of UEFI servers booting
at once would, and matches the OFFERs by xid.

Two client modes, each bounded in packets and seconds:

- open loop: DISCOVERs at a fixed rate (default 1,000/s). Latency runs from
  the time a packet was scheduled to the kernel's receive timestamp of its
  OFFER (SO_TIMESTAMPNS), so neither a late sender nor a late reader hides
  server delay. The sender's own lateness, and the latency counted from the
  actual send, are reported beside it.
- closed loop: a fixed number of DISCOVERs in flight (default 64), a new one
  sent for every OFFER. For a server that saturates its core first this is
  its maximum rate; for a fast one it is bounded by the round trip, so the
  server's CPU time per OFFER is the figure to compare.

Each row also gives the client's share of a CPU, the server's CPU time per
OFFER (user + system, from /proc) and the datagrams the server namespace's
kernel dropped for a full socket buffer.

    .venv/bin/python bench/bench_dhcp.py                    # 3 rounds, both servers
    .venv/bin/python bench/bench_dhcp.py --servers cloudboot,dnsmasq,trio-floor --quiet
    .venv/bin/python bench/bench_dhcp.py --rounds 1 --seconds 5 --servers cloudboot
    .venv/bin/python bench/bench_dhcp.py --profile /tmp/proxydhcp.prof --servers cloudboot

Prints one Markdown table row per run, ready for docs/benchmarks.md.
"""

import argparse
import contextlib
import json
import os
import select
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SERVER_ADDRESS = "10.91.0.1"
CLIENT_ADDRESS = "10.91.0.2"
PREFIX = 24
BOOT_FILE = "ipxe.efi"

# RFC 2131 section 2 (BOOTP header) and section 3 (magic cookie).
BOOTREQUEST = 1
BOOTREPLY = 2
MAGIC_COOKIE = b"\x63\x82\x53\x63"
HEADER = struct.Struct("!BBBBIHHIIII16s64s128s")
XID_OFFSET = 4
CHADDR_OFFSET = 28
BROADCAST_FLAG = 0x8000
# Linux socket(7) on x86-64; Python's socket module names neither.
SO_RCVBUFFORCE = 33
SO_TIMESTAMPNS = 35

# OFFERs for an xid already answered (a server answering twice); reported, not timed.
DUPLICATES = [0]


def main():
    args = parse_args()
    if args.serve_cloudboot:
        serve_cloudboot(*args.serve_cloudboot, profile=args.profile)
        return
    if args.serve_floor:
        serve_floor(args.serve_floor)
        return
    if args.client:
        print(json.dumps(run_client(args)))
        return
    run_benchmark(args)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", default="cloudboot,dnsmasq")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=int, default=1000, help="open-loop DISCOVERs per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each run")
    parser.add_argument("--window", type=int, default=64, help="closed-loop DISCOVERs in flight")
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no per-packet server log (CloudBoot at warning level, dnsmasq --quiet-dhcp)",
    )
    parser.add_argument("--profile", help="cProfile the CloudBoot server into this file")
    parser.add_argument("--serve-cloudboot", nargs=4, help="internal: ADDRESS IF LEVEL LOGFILE")
    parser.add_argument("--serve-floor", metavar="IF", help="internal")
    parser.add_argument("--client", choices=["open", "closed"], help="internal")
    parser.add_argument("--interface", help="internal")
    parser.add_argument("--seed", type=int, default=0, help="internal")
    parser.add_argument("--probe", action="store_true", help="internal")
    args = parser.parse_args()

    if not 1 <= args.rate <= 50000:
        parser.error("--rate must be between 1 and 50000")
    if not 0.5 <= args.seconds <= 120:
        parser.error("--seconds must be between 0.5 and 120")
    if not 1 <= args.window <= 1024:
        parser.error("--window must be between 1 and 1024")
    unknown = set(args.servers.split(",")) - set(SERVERS)
    if unknown:
        parser.error(f"unknown servers: {', '.join(sorted(unknown))}")
    return args


# The orchestrator: namespaces, servers, rounds, the table.


def run_benchmark(args):
    if os.geteuid() != 0:
        sys.exit("bench_dhcp.py needs root: it creates network namespaces")

    # SIGTERM should clean up like Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    stop_on_sigint()
    suffix = os.urandom(3).hex()
    with tempfile.TemporaryDirectory(prefix="bench-dhcp-") as work, lab(suffix) as (net, ifs):
        work = Path(work)
        print_header(args)
        alone = client_run(args, net["client"], ifs["client"], "open", seed=0)
        print(row("client alone (no server)", alone, None, None))

        for round_number in range(1, args.rounds + 1):
            # Alternate the order so that a drift in the machine's load favours neither.
            names = args.servers.split(",")
            if round_number % 2 == 0:
                names.reverse()
            for name in names:
                measure_server(args, name, round_number, net, ifs, work)


def measure_server(args, name, round_number, net, ifs, work):
    log_file = work / f"{name}-{round_number}.log"
    with SERVERS[name](args, net["server"], ifs["server"], log_file) as process:
        probe = client_run(args, net["client"], ifs["client"], "probe", seed=round_number)
        if not probe["answered"]:
            print(f"| {name} | {round_number} | no answer to a probe DISCOVER; see {log_file} |")
            return
        if round_number == 1:
            print(f"# {name} offer: {json.dumps(probe['offer'])}")

        seed = round_number * 10
        for mode in ("open", "closed"):
            cpu_before = cpu_seconds(process.pid)
            drops_before = udp_receive_drops(net["server"])
            result = client_run(args, net["client"], ifs["client"], mode, seed=seed)
            cpu = cpu_seconds(process.pid) - cpu_before
            result["server_drops"] = udp_receive_drops(net["server"]) - drops_before
            seed += 1
            print(row(f"{name} ({mode} loop)", result, round_number, cpu), flush=True)
            if result["stray"] or result["duplicates"]:
                print(f"# {result['stray']} stray and {result['duplicates']} duplicate OFFERs")


def print_header(args):
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"# {time.strftime('%F %H:%M:%S %Z')}, {os.cpu_count()} CPUs, load {load}")
    print(f"# open loop {args.rate}/s, closed loop {args.window} in flight, ", end="")
    print(f"{args.seconds:g} s each, server log {'quiet' if args.quiet else 'default'}")
    print(
        "| run | round | sent | offers | lost | offers/s | p50 ms | p99 ms | max ms "
        "| p99 from send ms | send lag p99 ms | client CPU % | server CPU µs/offer "
        "| server drops | load 1 min |"
    )
    print("|---" * 15 + "|")


def row(label, result, round_number, cpu):
    per_offer = f"{cpu / result['offers'] * 1e6:.0f}" if cpu and result["offers"] else "-"
    return (
        f"| {label} | {round_number or '-'} | {result['sent']} | {result['offers']} "
        f"| {result['sent'] - result['offers']} | {result['rate']:.0f} "
        f"| {fmt_ms(result['p50'])} | {fmt_ms(result['p99'])} | {fmt_ms(result['max'])} "
        f"| {fmt_ms(result.get('p99_from_send'))} | {fmt_ms(result['send_lag_p99'])} "
        f"| {result['client_cpu'] * 100:.0f} | {per_offer} | {result.get('server_drops', '-')} "
        f"| {os.getloadavg()[0]:.2f} |"
    )


def fmt_ms(seconds):
    return "-" if seconds is None else f"{seconds * 1000:.2f}"


def udp_receive_drops(namespace):
    """UDP datagrams the server namespace's kernel dropped for a full socket buffer."""
    snmp = subprocess.run(
        ["ip", "netns", "exec", namespace, "cat", "/proc/net/snmp"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names, values = (line.split()[1:] for line in snmp.splitlines() if line.startswith("Udp:"))
    return int(dict(zip(names, values, strict=True))["RcvbufErrors"])


def cpu_seconds(pid):
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def client_run(args, namespace, interface, mode, seed):
    command = [
        *("ip", "netns", "exec", namespace, sys.executable, __file__),
        *("--client", "open" if mode == "probe" else mode, "--interface", interface),
        *("--rate", str(10 if mode == "probe" else args.rate)),
        *("--seconds", str(args.seconds if mode != "probe" else 10)),
        *("--window", str(args.window), "--seed", str(seed)),
    ]
    if mode == "probe":
        command.append("--probe")
    # The child stops itself after --seconds plus a drain; the timeout is a backstop.
    done = subprocess.run(command, capture_output=True, text=True, timeout=args.seconds + 30)
    if done.returncode != 0:
        raise RuntimeError(f"client failed: {done.stderr.strip()[-1000:]}")
    return json.loads(done.stdout)


@contextlib.contextmanager
def lab(suffix):
    """Two namespaces joined by a veth pair; both deleted on the way out."""
    net = {"server": f"cbdhcp-s-{suffix}", "client": f"cbdhcp-c-{suffix}"}
    ifs = {"server": f"cbs{suffix}", "client": f"cbc{suffix}"}
    created = []
    try:
        for namespace in net.values():
            subprocess.run(["ip", "netns", "add", namespace], check=True)
            created.append(namespace)
            ip(namespace, "link", "set", "lo", "up")

        # Made inside the server namespace with the peer put straight into the
        # client's, so nothing is ever created in the host's own namespace.
        ip(
            net["server"],
            *("link", "add", ifs["server"], "type", "veth"),
            *("peer", "name", ifs["client"], "netns", net["client"]),
        )
        for side, address in (("server", SERVER_ADDRESS), ("client", CLIENT_ADDRESS)):
            ip(net[side], "addr", "add", f"{address}/{PREFIX}", "dev", ifs[side])
            ip(net[side], "link", "set", ifs[side], "up")
        yield net, ifs
    finally:
        for namespace in created:
            subprocess.run(["ip", "netns", "delete", namespace], check=False)


def ip(namespace, *arguments):
    subprocess.run(["ip", "-n", namespace, *arguments], check=True)


# The servers, each started in the server namespace and stopped on the way out.


@contextlib.contextmanager
def running(command, stop_signal=signal.SIGTERM):
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(stop_signal)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        errors = process.stderr.read().decode(errors="replace").strip()
        if errors and process.returncode not in (0, -stop_signal, 128 + stop_signal):
            print(f"# server exited with {process.returncode}: {errors[-500:]}", file=sys.stderr)


def cloudboot(args, namespace, interface, log_file):
    level = "warning" if args.quiet else "info"
    command = [
        *("ip", "netns", "exec", namespace, sys.executable, __file__),
        *("--serve-cloudboot", SERVER_ADDRESS, interface, level, str(log_file)),
    ]
    if args.profile:
        command += ["--profile", args.profile]
    # SIGINT: trio turns it into KeyboardInterrupt, which lets the profile be written.
    return running(command, stop_signal=signal.SIGINT)


def dnsmasq(args, namespace, interface, log_file):
    # proxy mode: PXE boot information only, never an address. One
    # pxe-service for client architecture 7 (given as a number: dnsmasq's CSA
    # names do not all match RFC 4578's codes). For a UEFI client with exactly
    # one service, dnsmasq 2.90 offers on port 67 without boot file or option
    # 43 and hands the file out on port 4011 (its "UEFI workaround"); this
    # benchmark measures the port 67 DISCOVER to OFFER step only.
    command = [
        *("ip", "netns", "exec", namespace, "dnsmasq", "--keep-in-foreground"),
        *("--conf-file=/dev/null", "--port=0", f"--interface={interface}"),
        "--bind-interfaces",
        f"--dhcp-range={SERVER_ADDRESS.rsplit('.', 1)[0]}.0,proxy",
        f"--pxe-service=7,CloudBoot,{BOOT_FILE}",
        f"--log-facility={log_file}",
        f"--dhcp-leasefile={log_file.with_suffix('.leases')}",
        f"--pid-file={log_file.with_suffix('.pid')}",
        "--user=root",
    ]
    if args.quiet:
        command.append("--quiet-dhcp")
    return running(command)


def trio_floor(args, namespace, interface, log_file):
    command = [
        *("ip", "netns", "exec", namespace, sys.executable, __file__),
        *("--serve-floor", interface),
    ]
    return running(command, stop_signal=signal.SIGINT)


# trio-floor is no proxyDHCP: it turns each request around with no decoding,
# policy or log, to show what trio's UDP socket costs per packet on its own.
SERVERS = {"cloudboot": cloudboot, "dnsmasq": dnsmasq, "trio-floor": trio_floor}


def serve_cloudboot(address, interface, level, log_file, profile=None):
    """Only the proxyDHCP, as `cloudboot serve` starts it, logging to a file."""
    sys.path.insert(0, str(REPO))
    import trio

    from appliance import log
    from appliance.boot import proxydhcp
    from appliance.config import Settings

    stop_on_sigint()
    with open(log_file, "a") as stream:
        log.setup(level, "text", stream=stream)
        profiler = None
        if profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        try:
            trio.run(proxydhcp.serve, Settings(), address, interface)
        except* KeyboardInterrupt:
            pass
        finally:
            if profiler:
                profiler.disable()
                profiler.dump_stats(profile)


def serve_floor(interface):
    """Answer every BOOTREQUEST on port 67 with itself turned into a BOOTREPLY."""
    import trio

    async def answer():
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
        await sock.bind(("0.0.0.0", 67))
        while True:
            data, _ = await sock.recvfrom(2048)
            if data[0] == BOOTREQUEST:
                await sock.sendto(b"\x02" + data[1:], ("255.255.255.255", 68))

    stop_on_sigint()
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(answer)


def stop_on_sigint():
    # A shell starting the benchmark in the background leaves SIGINT ignored,
    # and children inherit that; the server must still stop (and write its
    # profile) when the benchmark sends SIGINT.
    signal.signal(signal.SIGINT, signal.default_int_handler)


# The client: runs inside the client namespace, prints one JSON object.


def run_client(args):
    sock = client_socket(args.interface)
    template = discover_template()
    first_xid = (args.seed * 0x01000000 + 1) & 0xFFFFFFFF
    wall, cpu = time.monotonic(), time.process_time()
    loop = closed_loop if args.client == "closed" else open_loop
    result = loop(args, sock, template, first_xid)
    # Near 100 % means the client, not the server, set the pace.
    result["client_cpu"] = (time.process_time() - cpu) / (time.monotonic() - wall)
    return result


def client_socket(interface):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
    # A large buffer so that OFFERs wait in the kernel while the sender sleeps;
    # their arrival time is the kernel's stamp, not when they are read.
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 * 1024 * 1024)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.bind(("0.0.0.0", 68))
    sock.setblocking(False)
    return sock


def discover_template():
    """A UEFI PXE DISCOVER as OVMF sends it; xid, chaddr and GUID are patched per packet."""
    header = HEADER.pack(
        *(BOOTREQUEST, 1, 6, 0, 0, 0, BROADCAST_FLAG, 0, 0, 0, 0),
        bytes(16),
        bytes(64),
        bytes(128),
    )
    options = b"".join(
        bytes((code, len(value))) + value
        for code, value in (
            (53, b"\x01"),  # DHCPDISCOVER
            (57, struct.pack("!H", 1472)),
            (55, bytes((1, 2, 3, 4, 5, 6, 12, 13, 15, 17, 18, 22, 23, 28, 40, 41, 42, 43))),
            (97, bytes(17)),  # type 0 and a 16-byte GUID, patched per packet
            (94, b"\x01\x03\x10"),  # UNDI 3.16
            (93, b"\x00\x07"),  # x86-64 UEFI (RFC 4578)
            (60, b"PXEClient:Arch:00007:UNDI:003016"),
        )
    )
    packet = bytearray(header + MAGIC_COOKIE + options + b"\xff")
    guid_offset = packet.index(b"\x61\x11") + 3
    return packet, guid_offset


def patch(template, number, xid):
    """A distinct client per packet: new xid, MAC 02:ss:nn:nn:nn:nn and GUID.

    ss is the top byte of the xid (the run's seed), so no MAC comes back in a
    later run and trips the server's boot-loop watch.
    """
    packet, guid_offset = template
    struct.pack_into("!I", packet, XID_OFFSET, xid)
    struct.pack_into("!BBI", packet, CHADDR_OFFSET, 0x02, xid >> 24, number)
    struct.pack_into("!IIII", packet, guid_offset, number, xid, number, xid)
    return packet


def open_loop(args, sock, template, first_xid):
    count = int(args.rate * args.seconds)
    interval = 1.0 / args.rate
    scheduled = {}
    sent = {}
    lags = []
    arrivals = {}
    samples = []

    start = time.time() + 0.05
    for number in range(count):
        due = start + number * interval
        pause = due - time.time()
        if pause > 0:
            time.sleep(pause)

        xid = (first_xid + number) & 0xFFFFFFFF
        sent_at = time.time()
        sock.sendto(patch(template, number, xid), ("255.255.255.255", 67))
        scheduled[xid] = due
        sent[xid] = sent_at
        lags.append(sent_at - due)
        drain(sock, arrivals, samples)
        if args.probe and arrivals:
            break

    # A reply later than one second counts as lost.
    drain_until(sock, arrivals, time.time() + 1.0)
    result = summarize(scheduled, arrivals, lags, start, args.seconds)
    result["p99_from_send"] = summarize(sent, arrivals, [], start, args.seconds)["p99"]
    result["answered"] = bool(arrivals)
    if samples:
        result["offer"] = describe_offer(samples[0])
    return result


def describe_offer(data):
    """Boot file and PXE options of one OFFER, to check each server answers alike."""
    fields = HEADER.unpack_from(data)
    options = {}
    position = HEADER.size + len(MAGIC_COOKIE)
    while position < len(data) and data[position] != 255:
        if data[position] == 0:
            position += 1
            continue
        code, length = data[position], data[position + 1]
        options[code] = data[position + 2 : position + 2 + length].hex()
        position += 2 + length
    return {
        "siaddr": socket.inet_ntoa(struct.pack("!I", fields[9])),
        "file": fields[13].rstrip(b"\0").decode(errors="replace"),
        "options": {str(code): options[code] for code in sorted(options)},
    }


def closed_loop(args, sock, template, first_xid):
    sent_at = {}
    arrivals = {}
    number = 0
    timeout = 1.0
    poller = select.poll()
    poller.register(sock, select.POLLIN)

    def send_one():
        nonlocal number
        xid = (first_xid + number) & 0xFFFFFFFF
        sock.sendto(patch(template, number, xid), ("255.255.255.255", 67))
        sent_at[xid] = time.time()
        number += 1
        return xid

    start = time.time()
    end = start + args.seconds
    in_flight = set()
    for _ in range(args.window):
        in_flight.add(send_one())
    while time.time() < end:
        poller.poll(10)
        drain(sock, arrivals)
        now = time.time()
        # One new DISCOVER per OFFER, and per DISCOVER given up on.
        done = [xid for xid in in_flight if xid in arrivals or now - sent_at[xid] > timeout]
        for xid in done:
            in_flight.discard(xid)
            in_flight.add(send_one())

    drain_until(sock, arrivals, time.time() + timeout)
    return summarize(sent_at, arrivals, [], start, args.seconds, until=end)


def drain(sock, arrivals, samples=None):
    """Read every waiting datagram; keep the kernel timestamp of each OFFER by xid."""
    while True:
        try:
            data, ancillary, _, _ = sock.recvmsg(2048, socket.CMSG_SPACE(16))
        except BlockingIOError:
            return
        if len(data) < HEADER.size or data[0] != BOOTREPLY:
            continue
        stamp = next(
            (
                struct.unpack("qq", value[:16])
                for level, kind, value in ancillary
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS
            ),
            None,
        )
        received = stamp[0] + stamp[1] / 1e9 if stamp else time.time()
        xid = struct.unpack_from("!I", data, XID_OFFSET)[0]
        if xid in arrivals:
            DUPLICATES[0] += 1
        arrivals.setdefault(xid, received)
        if samples is not None and not samples:
            samples.append(data)


def drain_until(sock, arrivals, deadline):
    while time.time() < deadline:
        select.select([sock], [], [], max(0.0, deadline - time.time()))
        drain(sock, arrivals)


def summarize(sent, arrivals, lags, start, seconds, until=None):
    latencies = sorted(arrivals[xid] - sent[xid] for xid in sent if xid in arrivals)
    answered = [arrivals[xid] for xid in sent if xid in arrivals]
    if until is not None:
        # Closed loop: the rate is what arrived within the run's own time.
        rate = sum(1 for t in answered if t <= until) / seconds
    else:
        # Open loop: from the first scheduled send to the last OFFER.
        rate = len(answered) / max(max(answered, default=0) - start, seconds)
    return {
        "sent": len(sent),
        "offers": len(latencies),
        "rate": rate,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "max": latencies[-1] if latencies else None,
        "send_lag_p99": percentile(sorted(lags), 99),
        "stray": len(arrivals.keys() - sent.keys()),
        "duplicates": DUPLICATES[0],
    }


def percentile(ordered, p):
    if not ordered:
        return None
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[p - 1]


if __name__ == "__main__":
    main()
