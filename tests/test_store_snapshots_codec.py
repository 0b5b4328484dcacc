"""Compressed inventory snapshots: round trips, the two-inflate bound, damage is an error."""

import copy
import json
import zlib

import pytest

from appliance.core import machines, snapshots
from appliance.proto import agent
from appliance.store import Store, codec
from tests.identity_support import inventory


def server(n=1, bios="1.0"):
    document = inventory(
        uuid=f"5a7c0000-1111-2222-3333-{n:012x}",
        system_serial=f"SRV{n:06d}",
        nics=[f"52:54:00:00:{n:02x}:{i:02x}" for i in range(4)],
        disk_serials=[f"S456NY0M{n:04d}{i:02d}" for i in range(12)],
        dimm_serials=[f"{n:08X}{i:02d}" for i in range(24)],
    )
    document["bios"] = {"vendor": "Insyde Corp.", "version": bios, "date": "05/20/2024"}
    return document


@pytest.fixture
async def store(tmp_path):
    opened = await Store.open(tmp_path / "cloudboot.db")
    yield opened
    await opened.close()


async def register(store, document):
    message = agent.validate_registration(
        {"protocol": 1, "boot_mac": document["nics"][0]["mac"], "inventory": document}
    )
    return (await machines.register(store, message, "127.0.0.1", 30))["machine_id"]


def rows(conn, machine_id):
    return conn.execute(
        "SELECT id, base_id, length(document), typeof(document) FROM inventory_snapshots"
        " WHERE machine_id = ? ORDER BY id",
        (machine_id,),
    ).fetchall()


def test_keyframe_and_delta_round_trip():
    first = json.dumps(server(), sort_keys=True).encode()
    changed = json.dumps(server(bios="2.0"), sort_keys=True).encode()

    keyframe = codec.compress_keyframe(first)
    is_delta, delta = codec.encode_snapshot(changed, (keyframe, first))

    assert codec.inflate(keyframe) == first
    assert is_delta
    assert codec.inflate(delta, first) == changed
    # One changed field costs a small fraction of the keyframe, itself a fraction of the text.
    assert len(delta) * 4 <= len(keyframe) < len(first)


def test_unrelated_document_starts_a_new_keyframe():
    first = json.dumps(server(1), sort_keys=True).encode()
    other = json.dumps(server(2) | {"pci": [{"address": f"0000:{i:02x}"} for i in range(99)]})
    keyframe = codec.compress_keyframe(first)

    is_delta, blob = codec.encode_snapshot(other.encode(), (keyframe, first))

    assert not is_delta
    assert codec.inflate(blob) == other.encode()


@pytest.mark.parametrize(
    "damage",
    [
        lambda blob: blob[:-3],
        lambda blob: blob + b"junk",
        lambda blob: blob[:20] + bytes([blob[20] ^ 0x40]) + blob[21:],
        lambda blob: b"",
    ],
    ids=["cut", "trailing", "bit flip", "empty"],
)
def test_damaged_snapshot_is_an_error_never_a_wrong_document(damage):
    text = json.dumps(server(), sort_keys=True).encode()
    with pytest.raises(codec.CodecError):
        codec.inflate(damage(codec.compress_keyframe(text)))


def test_delta_against_the_wrong_keyframe_is_an_error():
    first = json.dumps(server(1), sort_keys=True).encode()
    other = json.dumps(server(2), sort_keys=True).encode()
    delta = codec.compress_delta(json.dumps(server(1, "2.0"), sort_keys=True).encode(), first)

    # zlib's header names the preset dictionary by its Adler-32 (RFC 1950 FDICT).
    with pytest.raises(codec.CodecError):
        codec.inflate(delta, other)
    with pytest.raises(codec.CodecError):
        codec.inflate(delta)


async def test_history_reads_back_every_report_exactly(store):
    reports = [server(bios=f"6.{57 + i}") for i in range(6)]
    machine_id = await register(store, reports[0])
    for report in reports[1:]:
        await store.write(machines.store_inventory, machine_id, report)

    history = await store.read(snapshots.history, machine_id, None, 100)
    newest = await store.read(snapshots.newest, machine_id)
    stored = await store.read(rows, machine_id)

    assert [s["inventory"] for s in reversed(history)] == reports
    assert newest == history[0]
    assert [s["id"] for s in history] == [row[0] for row in reversed(stored)]

    # Every delta names the keyframe, which is no delta itself: at most two inflates.
    keyframe_id = stored[0][0]
    assert stored[0][1] is None
    assert [row[1] for row in stored[1:]] == [keyframe_id] * 5
    assert all(kind == "blob" for *_, kind in stored)
    assert all(size * 4 <= stored[0][2] for _, _, size, _ in stored[1:])


async def test_paging_the_history_reads_a_delta_whose_keyframe_is_on_another_page(store):
    reports = [server(bios=f"7.{i}") for i in range(4)]
    machine_id = await register(store, reports[0])
    for report in reports[1:]:
        await store.write(machines.store_inventory, machine_id, report)
    newest_two = await store.read(snapshots.history, machine_id, None, 2)

    older = await store.read(snapshots.history, machine_id, newest_two[-1]["id"], 2)

    assert [s["inventory"] for s in newest_two] == [reports[3], reports[2]]
    assert [s["inventory"] for s in older] == [reports[1], reports[0]]


async def test_hardware_swap_starts_a_keyframe_that_later_reports_use(store):
    machine_id = await register(store, server(1))
    swapped = copy.deepcopy(server(1))
    swapped["memory"] = [{"locator": f"P{i}", "serial": f"NEW{i:05d}XY"} for i in range(48)]
    swapped["disks"] = [{"name": f"nvme{i}n1", "serial": f"NV{i:09d}QQ"} for i in range(24)]
    later = copy.deepcopy(swapped) | {"bios": {"version": "8.0"}}
    await store.write(machines.store_inventory, machine_id, swapped)
    await store.write(machines.store_inventory, machine_id, later)

    stored = await store.read(rows, machine_id)
    history = await store.read(snapshots.history, machine_id, None, 10)

    assert [row[1] for row in stored] == [None, None, stored[1][0]]
    assert [s["inventory"] for s in history][:2] == [
        machines.inventory_schema.validate(later),
        machines.inventory_schema.validate(swapped),
    ]


def _insert_text_row(conn, machine_id, document):
    # What bench/bench_backup.py and releases before migration 0005 write.
    conn.execute(
        "INSERT INTO inventory_snapshots (machine_id, taken_at, schema, document)"
        " VALUES (?, '2026-01-01T00:00:00.000000Z', ?, ?)",
        (machine_id, document["schema"], json.dumps(document, sort_keys=True)),
    )


async def test_plain_text_rows_still_read_and_the_next_report_is_a_keyframe(store):
    machine_id = await register(store, server(3))
    text_document = server(3, bios="text")
    await store.write(_insert_text_row, machine_id, text_document)
    await store.write(machines.store_inventory, machine_id, server(3, bios="after"))

    history = await store.read(snapshots.history, machine_id, None, 10)
    stored = await store.read(rows, machine_id)

    assert history[1]["inventory"] == text_document
    assert history[0]["inventory"]["bios"]["version"] == "after"
    assert [row[3] for row in stored] == ["blob", "text", "blob"]
    assert stored[2][1] is None


def _damage_newest(conn, machine_id):
    conn.execute(
        "UPDATE inventory_snapshots SET document = ? WHERE id ="
        " (SELECT max(id) FROM inventory_snapshots WHERE machine_id = ?)",
        (zlib.compress(b"{}")[:-2], machine_id),
    )


async def test_damaged_row_is_named_by_its_id(store):
    machine_id = await register(store, server(4))
    await store.write(_damage_newest, machine_id)

    with pytest.raises(codec.CodecError, match=r"inventory snapshot \d+: "):
        await store.read(snapshots.history, machine_id, None, 10)


def test_keyframe_dictionary_is_frozen():
    # Keyframes name their dictionary by Adler-32 (RFC 1950); an edit would orphan them.
    assert zlib.adler32(codec.KEYFRAME_DICTIONARY) == 4292454398
    assert json.loads(codec.KEYFRAME_DICTIONARY)["schema"] == "cloudboot.inventory/1"
    keyframe = codec.compress_keyframe(b'{"schema": "cloudboot.inventory/1"}')
    # FDICT set in the header, and the dictionary's id right after it.
    assert keyframe[1] & 0x20
    assert int.from_bytes(keyframe[2:6], "big") == 4292454398
