"""Benchmark: many simultaneous TFTP downloads of one file, CloudBoot vs tftpd-hpa vs dnsmasq.

Run by hand, as root, on an otherwise quiet machine; never from the test suite.
Everything talks to 127.0.0.1 only. Each server is started on a high port with
a temporary root holding one random file; then N atftp clients start at once
and the wall time until the last one exits is measured. Every download is
checked byte for byte (sha256); a failed or wrong download is counted, not
hidden.

    .venv/bin/python bench/bench_tftp.py                      # 200 x 1 MiB, all servers
    .venv/bin/python bench/bench_tftp.py --windowsize 8 --servers cloudboot,dnsmasq

dnsmasq's TFTP server listens on port 69 only, so by default the whole run
happens inside a network namespace made for it (its own loopback, deleted
afterwards); --no-netns runs on the host's loopback and needs port 69 free.

Prints one Markdown table row per server and setting, ready for docs/benchmarks.md.
"""

import argparse
import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent


def main():
    args = parse_args()
    if args.serve_cloudboot:
        serve_cloudboot(*args.serve_cloudboot)
        return
    if not args.no_netns:
        rerun_in_namespace()
        return

    with tempfile.TemporaryDirectory(prefix="bench-tftp-") as work:
        work = Path(work)
        root = work / "root"
        root.mkdir()
        content = os.urandom(args.size)
        (root / "bootos.img").write_bytes(content)
        digest = hashlib.sha256(content).hexdigest()

        print(f"# {args.clients} clients x {args.size} bytes, blksize {args.blksize}, ", end="")
        print(f"windowsize {args.windowsize}, {os.cpu_count()} CPUs, {time.strftime('%F')}")
        print("| server | wall s | MiB/s total | ok | failed |")
        print("|---|---|---|---|---|")
        for name in args.servers.split(","):
            port = FIXED_PORTS.get(name) or free_port()
            with SERVERS[name](root, port, work):
                wait_until_serving(port)
                seconds, ok, failed = run_clients(args, port, work, digest)
            mib = args.clients * args.size / (1024 * 1024)
            print(f"| {name} | {seconds:.2f} | {mib / seconds:.1f} | {ok} | {failed} |")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--size", type=int, default=1024 * 1024)
    parser.add_argument("--blksize", type=int, default=1468)
    parser.add_argument("--windowsize", type=int, default=1)
    parser.add_argument("--servers", default="cloudboot,tftpd-hpa,dnsmasq")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--no-netns", action="store_true", help="run on the host's loopback")
    parser.add_argument("--serve-cloudboot", nargs=2, metavar=("ROOT", "PORT"), help="internal")
    args = parser.parse_args()
    if not 1 <= args.clients <= 2000:
        parser.error("--clients must be between 1 and 2000 (open files are limited)")
    unknown = set(args.servers.split(",")) - set(SERVERS)
    if unknown:
        parser.error(f"unknown servers {sorted(unknown)}; known: {sorted(SERVERS)}")
    if not shutil.which("atftp"):
        parser.error("atftp is needed as the client (apt-get install atftp)")
    return args


def run_clients(args, port, work, digest):
    """Start every client at once; return (wall seconds, good downloads, failed downloads)."""
    out = work / f"out-{port}"
    out.mkdir()
    options = ["--option", f"blksize {args.blksize}", "--option", "tsize 0"]
    if args.windowsize > 1:
        options += ["--option", f"windowsize {args.windowsize}"]

    started = time.monotonic()
    clients = [
        subprocess.Popen(
            ["atftp", "--get", "-r", "bootos.img", "-l", str(out / str(n))]
            + options
            + [HOST, str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for n in range(args.clients)
    ]
    deadline = started + args.timeout
    for client in clients:
        try:
            client.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            client.kill()
            client.wait()
    seconds = time.monotonic() - started

    ok = sum(1 for n in range(args.clients) if file_digest(out / str(n)) == digest)
    return seconds, ok, args.clients - ok


def file_digest(path):
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def running(command, **kwargs):
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, **kwargs)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def cloudboot(root, port, work):
    command = [sys.executable, __file__, "--serve-cloudboot", str(root), str(port)]
    return running(command, cwd=REPO, stderr=subprocess.DEVNULL)


def tftpd_hpa(root, port, work):
    # --secure: chroot-like root, like our server's leading-slash rule.
    command = ["in.tftpd", "--foreground", "--listen", "--address", f"{HOST}:{port}"]
    return running(command + ["--secure", str(root)])


def dnsmasq(root, port, work):
    # --port=0 switches DNS off; --tftp-max raised from its default of 50 so the
    # run compares transfer speed, not the connection cap.
    command = [
        "dnsmasq",
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--port=0",
        "--enable-tftp",
        f"--tftp-root={root}",
        "--tftp-max=1000",
        f"--listen-address={HOST}",
        "--bind-interfaces",
        "--user=root",
        f"--pid-file={work / f'dnsmasq-{port}.pid'}",
    ]
    return running(command, stderr=subprocess.DEVNULL)


SERVERS = {"cloudboot": cloudboot, "tftpd-hpa": tftpd_hpa, "dnsmasq": dnsmasq}
# dnsmasq has no option for its TFTP port.
FIXED_PORTS = {"dnsmasq": 69}


def rerun_in_namespace():
    """Run this script again inside a new network namespace with only a loopback."""
    namespace = f"cbbench-{os.getpid()}-{os.urandom(3).hex()}"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        subprocess.run(["ip", "-n", namespace, "link", "set", "lo", "up"], check=True)
        # tftpd-hpa resolves its --address with AI_ADDRCONFIG, which fails when the
        # only addresses are loopback ones. A veth pair with both ends inside the
        # namespace gives it a non-loopback IPv4 address; no traffic goes there.
        for command in (
            ["link", "add", "bench0", "type", "veth", "peer", "name", "bench1"],
            ["addr", "add", "198.18.0.1/32", "dev", "bench0"],
            ["link", "set", "bench0", "up"],
        ):
            subprocess.run(["ip", "-n", namespace, *command], check=True)
        inside = [sys.executable, __file__, *sys.argv[1:], "--no-netns"]
        subprocess.run(["ip", "netns", "exec", namespace, *inside], check=True)
    finally:
        subprocess.run(["ip", "netns", "delete", namespace], check=False)


def serve_cloudboot(root, port):
    sys.path.insert(0, str(REPO))
    import trio

    from appliance.boot import tftp
    from appliance.config import Settings

    settings = Settings()
    settings.tftp.root = root
    settings.tftp.port = int(port)
    trio.run(tftp.serve, settings, HOST)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_until_serving(port, seconds=10):
    """Ask for a file that is not there until an ERROR packet comes back."""
    request = b"\x00\x01no-such-file\x00octet\x00"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            sock.sendto(request, (HOST, port))
            with contextlib.suppress(TimeoutError):
                if sock.recvfrom(1024)[0][:2] == b"\x00\x05":
                    return
        raise SystemExit(f"no TFTP server answered on {HOST}:{port} within {seconds} s")


if __name__ == "__main__":
    main()
