"""Backup and restore of a large database, the writer stall during a backup, audit cost.

Run by hand: .venv/bin/python bench/bench_backup.py [--machines 100000] [--folder DIR]
[--master-key-file] (the serve path under a master key: the parent unwraps the
backups data key and hands it to the child on stdin).
The folder should be on the disk the appliance will use (fsync and read speed
decide the figures). Prints one line per figure; docs/benchmarks.md keeps them.

What it does:
1. builds a database with N machines (each with one inventory snapshot of a
   few KB), N jobs and one audit event per job, directly in SQL;
2. times a backup and reports the file size, while a writer task commits
   small audited writes through the Store as fast as it can, and reports the
   p99 and longest single write latency during the backup next to the same
   figures without a backup (the stall the backup causes); once as serve
   runs it (a child process), once in a thread of the same process;
3. times `backups.restore` of that backup (appliance stopped);
4. times an audited write against the same write without its audit event.
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import trio

from appliance.backup import backups, service
from appliance.config import BackupSettings, Settings
from appliance.core import audit
from appliance.store import Store, now


def _inventory(n):
    disks = [
        {"name": f"sd{c}", "size_bytes": 960197124096, "serial": f"S{n:08d}{c}", "model": "PM893"}
        for c in "abcd"
    ]
    nics = [
        {
            "name": f"eno{i}",
            "mac": f"52:54:{n >> 16 & 255:02x}:{n >> 8 & 255:02x}:{n & 255:02x}:{i:02x}",
            "speed_mbps": 25000,
        }
        for i in range(4)
    ]
    memory = [{"locator": f"DIMM {i}", "size_mb": 32768, "serial": f"M{n}{i}"} for i in range(16)]
    return json.dumps(
        {"system": {"serial": f"SN{n:09d}"}, "disks": disks, "nics": nics, "memory": memory}
    )


def _build(conn, machines):
    at = now()
    for n in range(machines):
        machine_id = f"m-{n:08d}"
        conn.execute(
            "INSERT INTO machines (id, state, boot_mac, system_serial, created_at, updated_at)"
            " VALUES (?, 'ready', ?, ?, ?, ?)",
            (
                machine_id,
                f"52:54:00:{n >> 16 & 255:02x}:{n >> 8 & 255:02x}:{n & 255:02x}",
                f"SN{n:09d}",
                at,
                at,
            ),
        )
        conn.execute(
            "INSERT INTO inventory_snapshots (machine_id, taken_at, schema, document)"
            " VALUES (?, ?, 'cloudboot.inventory/1', ?)",
            (machine_id, at, _inventory(n)),
        )
        conn.execute(
            "INSERT INTO jobs (id, machine_id, kind, timeout_seconds, created_by, created_at,"
            " updated_at, not_before, state) VALUES (?, ?, 'install', 3600, 'bench', ?, ?, ?,"
            " 'succeeded')",
            (f"j-{n:08d}", machine_id, at, at, at),
        )
        audit.record(
            conn,
            actor="bench",
            action="job.create",
            resource_type="job",
            resource_id=f"j-{n:08d}",
            source="192.0.2.1",
            details={"kind": "install"},
        )


def _small_write(conn, n, audited):
    conn.execute("INSERT INTO settings (key, value) VALUES (?, 'x')", (f"bench-{n}",))
    if audited:
        audit.record(
            conn,
            actor="bench",
            action="settings.change",
            resource_type="setting",
            resource_id=f"bench-{n}",
            trace_id="t",
            source="127.0.0.1",
        )


class Writer:
    """Commits small audited writes one after another; keeps the longest latency seen."""

    def __init__(self, store, prefix):
        self.store = store
        self.prefix = prefix
        self.count = 0
        self.latencies = []

    async def run(self, stop):
        while not stop.is_set():
            started = time.perf_counter()
            await self.store.write(_small_write, f"{self.prefix}{self.count}", True)
            self.latencies.append(time.perf_counter() - started)
            self.count += 1

    def summary(self):
        ordered = sorted(self.latencies) or [0.0]
        p99 = ordered[int(len(ordered) * 0.99)]
        return f"p99 {p99 * 1000:.1f} ms, longest {ordered[-1] * 1000:.1f} ms"


async def _writer_during(store, seconds=None, work=None):
    writer, stop = Writer(store, f"w{time.monotonic_ns()}-"), trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run, stop)
        if work is None:
            await trio.sleep(seconds)
        else:
            result = await work()
        stop.set()
    return writer, (result if work is not None else None)


def _hold_master_key(data_dir, secrets_dir):
    """A key-file master key, held the way serve holds its master (keysource.hold)."""
    from appliance.backup import keysource
    from keys.master import KeyFileMaster, save_config

    events = []
    master = KeyFileMaster.create(Path(secrets_dir) / "master.key", events.append, data_dir)
    save_config(data_dir, {"source": "key-file", "key_file": str(master.path)})
    keysource.hold(master, events.append)
    print(f"master key {master.key_id} held by this process; the backup child gets a data key")


async def measure(folder, machines, secrets_dir=None):
    data_dir = Path(folder)
    if secrets_dir is not None:
        _hold_master_key(data_dir, secrets_dir)
    store = await Store.open(data_dir / backups.DATABASE_FILE)
    started = time.perf_counter()
    await store.write(_build, machines)
    print(
        f"built {machines} machines + {machines} jobs in {time.perf_counter() - started:.1f} s;"
        f" database {(data_dir / backups.DATABASE_FILE).stat().st_size / 2**20:.0f} MiB"
    )

    quiet, _ = await _writer_during(store, seconds=5)
    print(f"writer alone: {quiet.count / 5:.0f} writes/s, {quiet.summary()}")

    settings = Settings()
    settings.server.data_dir = str(data_dir)
    for label, work in (
        # How serve runs its scheduled backups: a child process.
        (
            "backup (child process, as serve runs it)",
            lambda: service.create_audited(store, settings),
        ),
        # The same work in a thread of the appliance's own process, for comparison.
        (
            "backup (thread in the appliance process)",
            lambda: trio.to_thread.run_sync(backups.create, data_dir, BackupSettings()),
        ),
    ):
        started = time.perf_counter()
        busy, info = await _writer_during(store, work=work)
        took = time.perf_counter() - started
        print(
            f"{label}: {took:.1f} s, file {info.size / 2**20:.1f} MiB; writer during it: "
            f"{busy.count / took:.0f} writes/s, {busy.summary()}"
        )

    await _audit_overhead(store)
    await store.close()

    started = time.perf_counter()
    backups.restore(data_dir, info.path)
    print(f"restore: {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    store = await Store.open(data_dir / backups.DATABASE_FILE)
    await store.close()
    print(
        f"first start after restore (quick_check, migrations): "
        f"{time.perf_counter() - started:.1f} s"
    )


async def _audit_overhead(store, count=1000):
    # Alternated and compared by median: fsync times drift, and the first
    # writes after a backup pay for a WAL checkpoint.
    times = {False: [], True: []}
    for n in range(count):
        for audited in (False, True):
            started = time.perf_counter()
            await store.write(_small_write, f"o{audited}{n}", audited)
            times[audited].append(time.perf_counter() - started)
    plain, with_audit = (statistics.median(times[a]) * 1e6 for a in (False, True))
    print(
        f"one write alone (median of {count}): {plain:.0f} us; with its audit event: "
        f"{with_audit:.0f} us (+{with_audit - plain:.0f} us)"
    )

    def cpu_only(conn):
        started = time.perf_counter()
        for n in range(count):
            audit.record(conn, actor="bench", action="x", resource_type="t", resource_id=str(n))
        return (time.perf_counter() - started) / count

    print(f"audit.record inside a transaction: {await store.write(cpu_only) * 1e6:.0f} us each")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machines", type=int, default=100_000)
    parser.add_argument("--folder", default=None)
    parser.add_argument("--master-key-file", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-backup-keys-") as secrets_dir:
        secrets_dir = secrets_dir if args.master_key_file else None
        if args.folder:
            trio.run(measure, args.folder, args.machines, secrets_dir)
            return
        with tempfile.TemporaryDirectory(prefix="bench-backup-", dir="/var/tmp") as folder:
            trio.run(measure, folder, args.machines, secrets_dir)


if __name__ == "__main__":
    main()
