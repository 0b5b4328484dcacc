"""Benchmark: 50 simultaneous HTTP downloads of a 64 MiB boot file, CloudBoot vs nginx.

Run by hand on an otherwise quiet machine; never from the test suite. Everything
talks to 127.0.0.1 only. Each server gets a temporary root holding one random
file and a high port; nginx runs with `sendfile on` (its fast path, the one to
beat). Then N curl clients start at once and the wall time until the last one
exits is measured. Every download's size is checked, and one download per
server is checked byte for byte (sha256) before the timed run; a failed or short
download is counted, not hidden.

    .venv/bin/python bench/bench_http.py                        # 50 x 64 MiB, both servers
    .venv/bin/python bench/bench_http.py --clients 100 --size-mib 16 --servers cloudboot
    .venv/bin/python bench/bench_http.py --tls                   # CloudBoot over TLS as well

Prints one Markdown table row per server, ready for docs/benchmarks.md.
"""

import argparse
import contextlib
import hashlib
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent
CURL = shutil.which("curl")


def main():
    args = parse_args()
    if args.serve_cloudboot:
        serve_cloudboot(*args.serve_cloudboot)
        return

    with tempfile.TemporaryDirectory(prefix="bench-http-") as work:
        work = Path(work)
        # nginx's workers run as an unprivileged user: they must be able to read the root.
        work.chmod(0o755)
        root = work / "root"
        root.mkdir(mode=0o755)
        digest = write_file(root / "bootos.img", args.size_mib * 1024 * 1024)

        print(f"# {args.clients} clients x {args.size_mib} MiB, {machine()}", flush=True)
        print("| server | clients | size | wall time | aggregate | failed |")
        print("|---|---|---|---|---|---|")
        for name in args.servers.split(","):
            with start(name, root, work, args) as url:
                check_one(url, digest)
                print(run(name, url, args), flush=True)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--servers", default="cloudboot,nginx")
    parser.add_argument("--tls", action="store_true", help="also run CloudBoot over TLS")
    parser.add_argument("--nginx-workers", type=int, default=1)
    parser.add_argument("--serve-cloudboot", nargs=3, metavar=("ROOT", "PORT", "TLSDIR"))
    args = parser.parse_args()
    if args.tls:
        args.servers += ",cloudboot-tls"
    return args


def write_file(path, size):
    digest = hashlib.sha256()
    with path.open("wb") as output:
        remaining = size
        while remaining:
            block = os.urandom(min(remaining, 1 << 20))
            digest.update(block)
            output.write(block)
            remaining -= len(block)
    return digest.hexdigest()


def free_port():
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def start(name, root, work, args):
    port = free_port()
    if name == "nginx":
        command, url = nginx_command(root, work, port, args.nginx_workers), f"http://{HOST}:{port}"
    elif name in ("cloudboot", "cloudboot-tls"):
        tls_dir = str(work / "tls") if name == "cloudboot-tls" else "-"
        scheme = "https" if name == "cloudboot-tls" else "http"
        command = [sys.executable, __file__, "--serve-cloudboot", str(root), str(port), tls_dir]
        url = f"{scheme}://{HOST}:{port}/boot"
    else:
        raise SystemExit(f"unknown server {name!r} (known: cloudboot, cloudboot-tls, nginx)")

    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def nginx_command(root, work, port, workers):
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    conf = work / f"nginx-{port}.conf"
    conf.write_text(
        f"""
daemon off;
worker_processes {workers};
pid {work}/nginx-{port}.pid;
error_log {work}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path {work}/nginx-body;
    proxy_temp_path {work}/nginx-proxy;
    fastcgi_temp_path {work}/nginx-fastcgi;
    uwsgi_temp_path {work}/nginx-uwsgi;
    scgi_temp_path {work}/nginx-scgi;
    server {{
        listen {HOST}:{port};
        root {root};
    }}
}}
"""
    )
    return [binary, "-c", str(conf), "-e", str(work / "nginx-error.log")]


def wait_for_port(port, seconds=15):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
            return
        time.sleep(0.1)
    raise SystemExit(f"server on port {port} did not start within {seconds} s")


def curl_command(url):
    return [CURL, "--silent", "--insecure", "--output", "-", f"{url}/bootos.img"]


def check_one(url, digest):
    body = subprocess.run(curl_command(url), capture_output=True, check=True).stdout
    if hashlib.sha256(body).hexdigest() != digest:
        raise SystemExit(f"{url}: downloaded file differs from the original")


def run(name, url, args):
    size = args.size_mib * 1024 * 1024
    command = [CURL, "--silent", "--insecure", "--output", "/dev/null"]
    command += ["--write-out", "%{size_download}", f"{url}/bootos.img"]

    started = time.monotonic()
    clients = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        for _ in range(args.clients)
    ]
    sizes = [client.communicate()[0] for client in clients]
    elapsed = time.monotonic() - started

    failed = sum(1 for c, s in zip(clients, sizes, strict=True) if c.returncode or int(s) != size)
    aggregate = args.clients * size / elapsed / (1 << 20)
    return (
        f"| {name} | {args.clients} | {args.size_mib} MiB | {elapsed:.2f} s "
        f"| {aggregate:.0f} MiB/s | {failed} |"
    )


def machine():
    return f"{platform.node()}, {os.cpu_count()} CPUs, Linux {platform.release()}"


def serve_cloudboot(root, port, tls_dir):
    """Child process: the real boot-file route on the real server."""
    sys.path.insert(0, str(REPO))
    import trio

    from appliance.boot.artifacts import register_routes
    from appliance.config import Settings
    from appliance.http import Router, ensure_self_signed, make_ssl_context, serve

    settings = Settings()
    settings.http.boot_root = root
    router = Router()

    async def no_script(mac):
        return "#!ipxe\n"

    register_routes(router, settings, no_script)
    context = None
    if tls_dir != "-":
        context = make_ssl_context(*ensure_self_signed(tls_dir, ["localhost"], [HOST]))
    trio.run(lambda: serve(router, HOST, int(port), settings.http, ssl_context=context))


if __name__ == "__main__":
    main()
