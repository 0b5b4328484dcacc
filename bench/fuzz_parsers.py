"""Random-mutation fuzzing of the other byte and text parsers. Run by hand:

    .venv/bin/python bench/fuzz_parsers.py --count 1000000 [--seed N] [--only NAME]

Parsers: the TFTP request parser and option negotiation, a TFTP transfer fed
mutated ACKs, the HTTP request-target parser, the DNS reply builder, the
kernel command-line parser, and the agent registration and inventory
validators. Each input is a seed mutated (bit flips, byte changes, cuts,
insertions, duplicated runs, trailing junk); the parser's own error class is
the only acceptable failure, anything else is a crash and is counted with
its first traceback. DHCP has its own campaign (bench/fuzz_dhcp.py).
It prints counts only; it asserts no speed.
"""

import argparse
import contextlib
import json
import random
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import trio  # noqa: E402
from dnslib import DNSError, DNSRecord  # noqa: E402
from dnslib.label import DNSLabelError  # noqa: E402

from appliance.boot import dns  # noqa: E402
from appliance.http._target import TargetError, parse_target  # noqa: E402
from appliance.proto import agent, bootparams, tftp  # noqa: E402


def mutate(data, rng):
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.random()
        if choice < 0.3 and data:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif choice < 0.5 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif choice < 0.65 and data:
            del data[rng.randrange(len(data)) :]
        elif choice < 0.8:
            at = rng.randrange(len(data) + 1)
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif choice < 0.9 and data:
            start = rng.randrange(len(data))
            data[start:start] = data[start : start + rng.randint(1, 16)]
        else:
            data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 32)))
    return bytes(data)


def tftp_request(data):
    try:
        request = tftp.parse_request(data)
    except tftp.TftpError:
        return
    tftp.negotiate(
        request.options, file_size=123456, block_size_cap=1468, max_window_size=64,
        default_timeout=1.0,
    )  # fmt: skip
    with contextlib.suppress(tftp.TftpError):
        tftp.normalise_filename(request.filename)


def tftp_transfer(data):
    payload = bytes(range(256)) * 20
    negotiated = tftp.negotiate(
        {"blksize": "512", "windowsize": "4"}, file_size=len(payload), block_size_cap=1468,
        max_window_size=64, default_timeout=1.0,
    )  # fmt: skip
    transfer = tftp.Transfer(lambda o, n: payload[o : o + n], len(payload), negotiated, retries=3)
    transfer.start(0.0)
    for index in range(0, len(data), 4):
        try:
            transfer.packet_received(data[index : index + 4], 0.1 * index)
        except tftp.TftpError:
            return
        if transfer.outcome is not None:
            return


def http_target(data):
    with contextlib.suppress(TargetError):
        parse_target(data)


_ZONE = dns.Zone("cloudboot", "pxe.internal", "192.0.2.1", 60)


def dns_reply(data):
    with contextlib.suppress(DNSError, DNSLabelError, ValueError, IndexError, UnicodeError):
        trio.run(dns.build_reply, data, _ZONE)


def kernel_cmdline(data):
    with contextlib.suppress(bootparams.BootParamsError):
        bootparams.parse_cmdline(data.decode("utf-8", "replace"))


def registration(data):
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return
    with contextlib.suppress(agent.AgentProtocolError):
        agent.validate_registration(body)


def seeds():
    inventory = {
        "schema": "cloudboot.inventory/1",
        "system": {"manufacturer": "Huawei", "serial": "2102311", "uuid": None},
        "nics": [{"name": "eth0", "mac": "52:54:00:12:34:56"}],
        "disks": [{"name": "vda", "size_bytes": 1 << 30, "serial": "S1"}],
    }
    good_cmdline = bootparams.format_cmdline(
        "https://192.0.2.1:443", "sha256:" + "ab" * 32, "52:54:00:12:34:56"
    )
    return {
        "tftp_request": [
            tftp.encode_request(tftp.RRQ, "ipxe.efi", {"blksize": "1468", "tsize": "0"}),
            tftp.encode_request(tftp.RRQ, "/pxelinux.cfg/01-aa-bb", {"windowsize": "8"}),
        ],
        "tftp_transfer": [tftp.encode_ack(0) + tftp.encode_ack(1) + tftp.encode_ack(5)],
        "http_target": [b"/boot/bootos/vmlinuz", b"/api/v1/machines?limit=5&label=a%3Db"],
        "dns_reply": [DNSRecord.question("cloudboot.pxe.internal").pack()],
        "kernel_cmdline": [good_cmdline.encode()],
        "registration": [
            json.dumps(
                {"protocol": 1, "boot_mac": "52:54:00:12:34:56", "inventory": inventory}
            ).encode()
        ],
    }


TARGETS = {
    "tftp_request": tftp_request,
    "tftp_transfer": tftp_transfer,
    "http_target": http_target,
    "dns_reply": dns_reply,
    "kernel_cmdline": kernel_cmdline,
    "registration": registration,
}


def campaign(name, count, rng, seeds_for):
    target = TARGETS[name]
    crashes, first = 0, None
    started = time.monotonic()
    for _ in range(count):
        data = mutate(rng.choice(seeds_for), rng)
        try:
            target(data)
        except Exception:
            crashes += 1
            if first is None:
                first = (data, traceback.format_exc())
    seconds = time.monotonic() - started
    print(f"{name:16} {count:>9,} inputs  {crashes} crashes  {seconds:6.0f} s", flush=True)
    if first is not None:
        print(f"  first crash on {first[0]!r}:\n{first[1]}")
    return crashes


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=20261204)
    parser.add_argument("--only", choices=sorted(TARGETS))
    args = parser.parse_args()

    rng = random.Random(args.seed)
    all_seeds = seeds()
    names = [args.only] if args.only else list(TARGETS)
    crashes = sum(campaign(n, args.count, rng, all_seeds[n]) for n in names)
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
