"""Writes per second through the store, one at a time versus many at once (group commit).

Run by hand: .venv/bin/python bench/store_group_commit.py [count] [folder]
The folder should be on the disk the appliance will use: fsync cost decides the numbers.
"""

import sys
import tempfile
import time
from pathlib import Path

import trio

from appliance.store import Store


def _put(conn, key):
    conn.execute("INSERT INTO settings (key, value) VALUES (?, 'x')", (key,))


async def measure(folder, count):
    store = await Store.open(Path(folder) / "bench.db")

    started = time.perf_counter()
    for n in range(count):
        await store.write(_put, f"serial-{n}")
    serial = time.perf_counter() - started

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for n in range(count):
            nursery.start_soon(store.write, _put, f"concurrent-{n}")
    concurrent = time.perf_counter() - started
    groups = store.groups_committed
    await store.close()

    print(f"{count} writes one at a time: {count / serial:8.0f} writes/s")
    print(f"{count} writes at once:       {count / concurrent:8.0f} writes/s")
    print(f"transactions committed in all: {groups} for {2 * count} writes")


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    folder = sys.argv[2] if len(sys.argv) > 2 else None
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        trio.run(measure, tmp, count)


if __name__ == "__main__":
    main()
