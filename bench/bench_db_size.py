"""Database size for the bank's sizing figure, run by hand.

The bank's figure: 100,000 machines, each with the inventory of a typical
two-socket server (about 10 KB of JSON: 24 DIMMs, 12 disks, 4 NICs) and its
last three changes, plus 100,000 jobs, in under 1 GB (our goal: 400 MB).

This builds N such machines through the real code paths (registration, three
inventory jobs' snapshots, one job each) in a fresh store, checkpoints the
WAL, and reports bytes per machine, the size scaled to 100,000, where the
bytes go (SQLite's dbstat table, per table with its indexes) and the median
time of one inventory job's snapshot write (store_inventory in the writer
thread, SQL and compression included, commit excluded). Scaling is linear
because every row is per machine; run a larger N to check it.

    .venv/bin/python bench/bench_db_size.py --machines 2000
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import apsw
import trio

from appliance.core import jobs, machines
from appliance.proto import agent
from appliance.proto.inventory import SCHEMA
from appliance.store import Store


def server_inventory(n, change=0):
    """A two-socket server: 24 DIMMs, 12 disks, 4 NICs, about 10 KB of JSON."""

    def mac(port):
        return f"52:54:{n >> 16 & 255:02x}:{n >> 8 & 255:02x}:{n & 255:02x}:{port:02x}"

    return {
        "schema": SCHEMA,
        "smbios_version": "3.3.0",
        "system": {"manufacturer": "Huawei", "product": "2288H V5", "version": "V100R005",
                   "serial": f"2102311YJN10K{n:07d}", "uuid": f"5a7c0000-1111-2222-3333-{n:012x}",
                   "sku": "02311YJN", "family": "Purley"},
        "baseboard": {"manufacturer": "Huawei", "product": "BC11SPSCB0", "version": "V100R005",
                      "serial": f"023YXH10K{n:07d}", "asset_tag": None},
        "chassis": {"manufacturer": "Huawei", "type": "Rack Mount Chassis",
                    "serial": f"2102311YJN10K{n:07d}", "asset_tag": None},
        "bios": {"vendor": "Insyde Corp.", "version": f"6.{57 + change}", "date": "05/20/2024"},
        "cpus": [{"socket": f"CPU{i}", "manufacturer": "Intel(R) Corporation",
                  "model": "Intel(R) Xeon(R) Gold 6248R CPU @ 3.00GHz", "cores": 24,
                  "threads": 48, "max_speed_mhz": 4000} for i in range(2)],
        "memory": [{"locator": f"DIMM{i:03d}", "bank": f"_Node{i // 12}_Channel{i % 6}",
                    "present": True, "size_mb": 32768, "type": "DDR4", "speed_mts": 2933,
                    "manufacturer": "Samsung", "serial": f"{n:08X}{i:02d}",
                    "part_number": "M393A4K40DB2-CVF"} for i in range(24)],
        "disks": [{"name": f"sd{chr(97 + i)}", "size_bytes": 3840755982336,
                   "model": "SAMSUNG MZ7LH3T8HMLT", "serial": f"S456NY0M{n:06d}{i:02d}",
                   "wwn": f"0x5002538e{n:08x}", "rotational": False, "transport": "sas",
                   "by_path": f"pci-0000:3b:00.0-sas-phy{i}-lun-0", "nvme_namespaces": []}
                  for i in range(12)],
        "nics": [{"name": f"enp{i + 1}s0", "mac": mac(i), "permanent_mac": mac(i),
                  "driver": "hinic", "link": True, "speed_mbps": 25000,
                  "pci_address": f"0000:{i + 1:02x}:00.0"} for i in range(4)],
        "pci": [{"address": f"0000:{i:02x}:00.0", "vendor_id": "19e5", "device_id": "1822",
                 "class": "020000"} for i in range(8)],
        "raid_controllers": [{"pci_address": "0000:3b:00.0", "vendor_id": "1000",
                              "device_id": "0016", "driver": "megaraid_sas",
                              "model": "MegaRAID 9460-8i"}],
        "bmc": {"ipv4": f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}", "mac": mac(9)},
        "warnings": [],
    }  # fmt: skip


def _timed_store_inventory(conn, machine_id, document, timings):
    started = time.perf_counter()
    machines.store_inventory(conn, machine_id, document)
    timings.append(time.perf_counter() - started)


async def build(path, count):
    store = await Store.open(path)
    timings = []
    started = time.monotonic()
    for n in range(count):
        doc = server_inventory(n)
        registration = agent.validate_registration(
            {"protocol": 1, "boot_mac": doc["nics"][0]["mac"], "inventory": doc}
        )
        result = await machines.register(store, registration, "10.0.0.1", 30)
        for change in (1, 2, 3):
            await store.write(
                _timed_store_inventory,
                result["machine_id"],
                server_inventory(n, change),
                timings,
            )
        await jobs.create_job(
            store, "bench", {"machine_id": result["machine_id"], "kind": "inventory"}
        )
    seconds = time.monotonic() - started
    await store.close()
    # Fold the WAL into the database file so its size is the whole story.
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    breakdown = _breakdown(conn)
    conn.close()
    return seconds, statistics.median(timings), breakdown


def _breakdown(conn):
    """{table: bytes} with each index counted under its table."""
    owner = dict(conn.execute("SELECT name, tbl_name FROM sqlite_schema").fetchall())
    sizes = {}
    for name, size in conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"):
        table = owner.get(name, name)
        sizes[table] = sizes.get(table, 0) + size
    return sorted(sizes.items(), key=lambda item: -item[1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machines", type=int, default=2000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir="/var/tmp") as folder:
        path = Path(folder) / "cloudboot.db"
        seconds, snapshot_seconds, breakdown = trio.run(build, path, args.machines)
        size = sum(p.stat().st_size for p in Path(folder).glob("cloudboot.db*"))
        one = len(json.dumps(server_inventory(1)))

    per_machine = size / args.machines
    print(f"inventory JSON per snapshot: {one} bytes")
    print(
        f"{args.machines} machines, 4 snapshots and 1 job each: {size / 2**20:.1f} MiB "
        f"in {seconds:.0f} s ({per_machine / 1024:.1f} KiB per machine)"
    )
    print(f"scaled to 100,000 machines: {per_machine * 100_000 / 2**30:.2f} GiB")
    print(f"one inventory snapshot write, median: {snapshot_seconds * 1e6:.0f} us")
    print("bytes per machine by table (indexes included):")
    for table, table_bytes in breakdown:
        print(f"  {table:32} {table_bytes / args.machines:10.0f}")


if __name__ == "__main__":
    main()
