"""Random-mutation fuzzing of the DHCP codec and the proxyDHCP policy. Run by hand:

    .venv/bin/python bench/fuzz_dhcp.py --count 1000000 [--seed N] [--crash-dir DIR]

Seeds are requests that real firmware sends (built with the codec) plus the
DHCP payloads of ../shared/corpus/dhcp when it is there. Each input is
mutated (bit flips, byte changes, cuts, inserted options, changed lengths,
trailing junk), decoded, decided on port 67 and on port 4011, and every reply
is encoded and decoded again. The only acceptable failure is DhcpDecodeError;
anything else is a crash, saved to the crash directory, and counted.
It prints counts only; it asserts no speed.
"""

import argparse
import collections
import random
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from appliance.boot.pxe_policy import PxePolicy, Reply  # noqa: E402 (path set above)
from appliance.proto import dhcp  # noqa: E402
from tests.dhcp_pcap import read_udp  # noqa: E402
from tests.dhcp_requests import (  # noqa: E402
    AMI_GUID,
    APPLIANCE,
    BIOS,
    HTTP_X64,
    request,
    settings,
)

CORPUS = REPO.parent / "shared" / "corpus" / "dhcp"


def seeds():
    boot_item = dhcp.encode_suboptions({dhcp.PXE_BOOT_ITEM: b"\x80\x00\x00\x00"})
    packets = [
        request(option_97=AMI_GUID),
        request(vendor_class=BIOS, arch=b"\x00\x00"),
        request(vendor_class=HTTP_X64, arch=b"\x00\x10"),
        request(option_77=b"\x04iPXE", option_175=b"\xb1\x01\x01"),
        request(hops=2, giaddr="10.20.0.1", option_82=b"\x01\x04port\x02\x02id"),
        request(message_type=dhcp.REQUEST, ciaddr="192.0.2.50", option_43=boot_item),
        request(arch=b"\x00\x0b", option_52=b"\x03"),
    ]
    found = [dhcp.encode(p) for p in packets]
    if CORPUS.is_dir():
        for pcap in sorted(CORPUS.glob("*.pcap")):
            found += [d.payload for d in read_udp(pcap)]
        for text in sorted(CORPUS.glob("*.bootp.hex")):
            lines = text.read_text().splitlines()
            found.append(bytes.fromhex("".join(x for x in lines if not x.startswith("#"))))
    return found


def mutate(rng, data):
    data = bytearray(data)
    for _ in range(rng.randrange(1, 5)):
        choice = rng.randrange(7)
        position = rng.randrange(len(data) + 1)
        if choice == 0 and data:
            data[position % len(data)] ^= 1 << rng.randrange(8)
        elif choice == 1 and data:
            data[position % len(data)] = rng.choice([0, 1, 0xFF, 0x7F, rng.randrange(256)])
        elif choice == 2:
            del data[position:]
        elif choice == 3:
            code, length = rng.randrange(256), rng.randrange(256)
            data[position:position] = bytes((code, length)) + rng.randbytes(rng.randrange(8))
        elif choice == 4 and len(data) > 241:
            # Aim at the option area: change a length byte after the cookie.
            data[rng.randrange(241, len(data))] = rng.randrange(256)
        elif choice == 5:
            data += rng.randbytes(rng.randrange(1, 64))
        elif choice == 6 and data:
            del data[position % len(data) : position % len(data) + rng.randrange(1, 16)]
    return bytes(data)


def run_one(policy, data, counts):
    try:
        packet = dhcp.decode(data)
    except dhcp.DhcpDecodeError:
        counts["decode_error"] += 1
        return

    counts["decoded"] += 1
    for on_pxe_port in (False, True):
        decision = policy.decide(
            packet, on_pxe_port=on_pxe_port, source=("192.0.2.50", 68), now=0.0
        )
        if isinstance(decision, Reply):
            dhcp.decode(dhcp.encode(decision.packet))
            counts[f"reply_{decision.kind}"] += 1
        else:
            counts[f"ignored_{decision.reason}"] += 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--crash-dir", type=Path, default=Path("fuzz-dhcp-crashes"))
    args = parser.parse_args()

    seed = args.seed if args.seed is not None else random.randrange(2**32)
    rng = random.Random(seed)
    policy = PxePolicy(settings().dhcp, APPLIANCE, 80)
    pool = seeds()
    counts = collections.Counter()
    started = time.monotonic()
    print(f"seed {seed}, {len(pool)} seed inputs, {args.count} runs", flush=True)

    for run in range(1, args.count + 1):
        data = mutate(rng, rng.choice(pool)) if rng.random() < 0.97 else rng.randbytes(300)
        try:
            run_one(policy, data, counts)
        except Exception:
            counts["crash"] += 1
            args.crash_dir.mkdir(parents=True, exist_ok=True)
            (args.crash_dir / f"crash-{seed}-{run}.bin").write_bytes(data)
            if counts["crash"] <= 5:
                traceback.print_exc()
        if run % 100_000 == 0:
            print(f"{run} runs, {time.monotonic() - started:.0f} s: {dict(counts)}", flush=True)

    print(f"done: {args.count} runs in {time.monotonic() - started:.0f} s")
    for name, value in sorted(counts.items()):
        print(f"  {name:32} {value}")
    return 1 if counts["crash"] else 0


if __name__ == "__main__":
    sys.exit(main())
