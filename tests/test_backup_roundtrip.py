"""Backups: create, list, verify, restore, and every refusal an operator may meet."""

import functools

import apsw
import cbor2
import pytest
import trio

from appliance.backup import backups, envelope
from appliance.backup import cli as backup_cli
from appliance.backup.keysource import key_source
from appliance.config import Settings
from appliance.core import audit, audit_chain
from appliance.store import now
from tests.audit_support import DB, add_events, open_store


async def cli(fn, *args, **kwargs):
    """A CLI function runs its own trio.run, so it runs in a worker thread here."""
    return await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


def _settings(data_dir, **backup):
    settings = Settings()
    settings.server.data_dir = str(data_dir)
    for name, value in backup.items():
        setattr(settings.backup, name, value)
    return settings


def _put(conn, key):
    conn.execute("INSERT INTO settings (key, value) VALUES (?, 'x')", (key,))


def _keys(conn):
    return {r[0] for r in conn.execute("SELECT key FROM settings WHERE key LIKE 'k-%'")}


async def _store_with(data_dir, *keys):
    store = await open_store(data_dir)
    for key in keys:
        await store.write(_put, key)
    return store


async def _actions(data_dir):
    store = await open_store(data_dir)
    try:
        found = await store.read(lambda conn: audit.search(conn, limit=1000)[0])
        verdict = await store.read(audit_chain.verify, audit_chain.verify_key(data_dir))
    finally:
        await store.close()
    return [e["action"] for e in found], verdict


async def test_backup_and_restore_round_trip(tmp_path, capsys):
    settings = _settings(tmp_path)
    store = await _store_with(tmp_path, "k-before")
    await add_events(store, 5)
    await store.close()

    info = await cli(backup_cli.backup_create, tmp_path, settings)
    assert info.path.exists() and info.path.parent == tmp_path / "backups"
    assert b"k-before" not in info.path.read_bytes()

    store = await _store_with(tmp_path, "k-after")
    await store.close()

    listed = await cli(backup_cli.backup_list, tmp_path, settings)
    assert [b.name for b in listed] == [info.name] and listed[0].problem is None
    await cli(backup_cli.backup_verify, tmp_path, settings, info.name)
    await cli(backup_cli.backup_restore, tmp_path, settings, info.name)

    store = await open_store(tmp_path)
    assert await store.read(_keys) == {"k-before"}
    await store.close()

    # The database set aside holds what the restore replaced.
    aside = next((tmp_path / backups.PREVIOUS_DIR).iterdir())
    old = apsw.Connection(str(aside / DB))
    assert _keys(old) == {"k-before", "k-after"}
    old.close()

    actions, verdict = await _actions(tmp_path)
    assert verdict.ok, verdict.message
    # The backup's own creation event was written after its snapshot, so it is in
    # the database set aside; the restore event links to that database's last event.
    assert actions == ["backup.restore"] + ["machine.approve"] * 5
    store = await open_store(tmp_path)
    restore_event = await store.read(lambda conn: audit.search(conn, limit=1)[0][0])
    await store.close()
    old = apsw.Connection(str(aside / DB))
    old_head = old.execute(
        "SELECT id, hash, action FROM audit_events ORDER BY id DESC"
    ).fetchall()[0]
    old.close()
    assert old_head[2] == "backup.create"
    assert restore_event["details"]["previous_audit_head"] == [old_head[0], old_head[1]]
    assert "restored" in capsys.readouterr().out


async def test_a_backup_is_written_to_the_mirror_and_the_retention_count_holds(tmp_path):
    mirror = tmp_path / "mirror"
    settings = _settings(tmp_path / "data", mirror_directory=str(mirror), keep=2)
    store = await _store_with(tmp_path / "data", "k-1")
    await store.close()

    made = [backups.create(tmp_path / "data", settings.backup) for _ in range(4)]
    for directory in (tmp_path / "data" / "backups", mirror):
        names = sorted(p.name for p in directory.iterdir())
        assert names == sorted(b.name for b in made[-2:])


async def test_a_half_written_backup_is_never_listed(tmp_path):
    settings = _settings(tmp_path)
    store = await _store_with(tmp_path, "k-1")
    await store.close()
    good = backups.create(tmp_path, settings.backup)
    partial = good.path.with_name("cloudboot-20300101T000000Z-0badc0de.cbbak.partial")
    partial.write_bytes(good.path.read_bytes()[:1000])

    assert [b.name for b in backups.list_backups(tmp_path, settings.backup)] == [good.name]
    # The next backup clears the leftover.
    backups.create(tmp_path, settings.backup)
    assert not partial.exists()


def _flip_ciphertext(path):
    """One bit of the encrypted database flipped, the rest of the file as it was."""
    data = path.read_bytes()
    ciphertext = cbor2.loads(data)["ciphertext"]
    at = data.index(ciphertext) + len(ciphertext) // 2
    path.write_bytes(data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("tamper", "altered"),
        ("truncate", "truncated"),
        ("wrong_key", "cannot be decrypted with this appliance's key"),
        ("garbage", "not a CloudBoot backup"),
        ("header", "altered"),
    ],
)
async def test_restore_refuses_a_bad_file_and_keeps_the_live_database(tmp_path, damage, message):
    settings = _settings(tmp_path)
    store = await _store_with(tmp_path, "k-live")
    await store.close()
    info = backups.create(tmp_path, settings.backup)

    if damage == "tamper":
        _flip_ciphertext(info.path)
    elif damage == "truncate":
        info.path.write_bytes(info.path.read_bytes()[:-500])
    elif damage == "wrong_key":
        key_file = tmp_path / "keys" / "dev-backup.key"
        key_file.chmod(0o600)
        key_file.write_text("22" * 32 + "\n")
    elif damage == "garbage":
        info.path.write_bytes(b"PK\x03\x04 this is a zip file, not a backup")
    elif damage == "header":
        # A header field changed in place: "created_at" is authenticated data.
        data = info.path.read_bytes()
        info.path.write_bytes(
            data.replace(info.created_at.encode(), b"2031" + info.created_at[4:].encode())
        )

    with pytest.raises(backups.BackupError, match=message):
        await cli(backup_cli.backup_restore, tmp_path, settings, info.name)
    with pytest.raises(backups.BackupError):
        backups.verify(tmp_path, info.path)
    if damage != "wrong_key":
        assert backups.list_backups(tmp_path, settings.backup)[0].problem or damage in (
            "tamper",
            "header",
        )

    store = await open_store(tmp_path)
    assert await store.read(_keys) == {"k-live"}
    await store.close()


async def _foreign_backup(tmp_path):
    """A backup made by another appliance that shares the backup key (replacement hardware)."""
    other = tmp_path / "other"
    store = await _store_with(other, "k-other")
    await store.close()
    (other / "keys").mkdir(exist_ok=True)
    (other / "keys" / "dev-backup.key").write_bytes(
        (tmp_path / "here" / "keys" / "dev-backup.key").read_bytes()
    )
    return backups.create(other, _settings(other).backup)


async def test_a_foreign_backup_needs_the_override_which_is_audited(tmp_path):
    here = tmp_path / "here"
    settings = _settings(here)
    store = await _store_with(here, "k-here")
    await store.close()
    backups.create(here, settings.backup)  # makes this appliance's key
    foreign = await _foreign_backup(tmp_path)

    with pytest.raises(backups.BackupError, match="--allow-foreign"):
        await cli(backup_cli.backup_restore, here, settings, str(foreign.path))
    await cli(backup_cli.backup_restore, here, settings, str(foreign.path), allow_foreign=True)

    store = await open_store(here)
    assert await store.read(_keys) == {"k-other"}
    restored = await store.read(
        lambda conn: audit.search(conn, action="backup.restore", limit=1)[0][0]
    )
    await store.close()
    assert restored["details"]["foreign_override"] is True
    assert restored["details"]["backup_appliance_id"] == foreign.appliance_id
    # The restored database takes this appliance's id, not the old one's.
    assert (here / "appliance-id").read_text().strip() != foreign.appliance_id


async def test_a_backup_from_a_newer_schema_is_refused(tmp_path):
    settings = _settings(tmp_path)
    store = await _store_with(tmp_path, "k-1")
    await store.close()
    database = (tmp_path / DB).read_bytes()
    blob = envelope.seal(
        database,
        appliance_id=backups.appliance_id(tmp_path),
        created_at=now(),
        schema_version=backups.known_schema_version() + 1,
        keys=key_source(tmp_path),
    )
    path = tmp_path / "newer.cbbak"
    path.write_bytes(blob)
    with pytest.raises(backups.BackupError, match="newer than this software knows"):
        await cli(backup_cli.backup_restore, tmp_path, settings, str(path))


async def test_a_backup_of_a_damaged_database_fails_the_integrity_check(tmp_path):
    settings = _settings(tmp_path)
    store = await _store_with(tmp_path, "k-live")
    await store.close()
    database = bytearray(backups.snapshot(tmp_path / DB)[0])
    # Pages 2 to 4 start with b-tree page headers; 0xff is no valid page type.
    for page in (1, 2, 3):
        database[page * 4096 : page * 4096 + 64] = b"\xff" * 64
    path = tmp_path / "damaged.cbbak"
    path.write_bytes(
        envelope.seal(
            bytes(database),
            appliance_id=backups.appliance_id(tmp_path),
            created_at=now(),
            schema_version=1,
            keys=key_source(tmp_path),
        )
    )
    with pytest.raises(backups.BackupError, match="integrity|damaged|malformed"):
        await cli(backup_cli.backup_restore, tmp_path, settings, str(path))
    assert not (tmp_path / backups.PREVIOUS_DIR).exists()


async def test_restore_refuses_while_the_appliance_has_the_database_open(tmp_path):
    settings = _settings(tmp_path)
    store = await _store_with(tmp_path, "k-1")
    info = backups.create(tmp_path, settings.backup)
    with pytest.raises(backups.BackupError, match="in use: stop the appliance"):
        backups.restore(tmp_path, info.path)
    assert await store.read(_keys) == {"k-1"}
    await store.close()


async def test_the_scheduled_backup_runs_in_a_child_and_is_audited(tmp_path):
    from appliance.backup import service

    settings = _settings(tmp_path, keep=3)
    store = await _store_with(tmp_path, "k-1")
    info = await service.create_audited(store, settings)
    assert info.path.exists() and info.schema_version == backups.known_schema_version()
    backups.verify(tmp_path, info.path)

    settings.backup.directory = str(tmp_path / "appliance-id")  # a file: cannot be a directory
    with pytest.raises(backups.BackupError, match="could not write the backup"):
        await service.create_audited(store, settings)
    events = await store.read(lambda conn: audit.search(conn, action="backup.create")[0])
    await store.close()
    assert [e["result"] for e in events] == ["failed", "ok"]
    assert events[1]["resource_id"] == info.name


async def test_the_schedule_makes_backups_while_serve_runs(tmp_path):
    from appliance.backup import service

    settings = _settings(tmp_path, interval_hours=0.5 / 3600, keep=2)
    store = await _store_with(tmp_path, "k-1")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(service.run_backups_forever, store, settings)
        with trio.fail_after(60):
            while len(backups.list_backups(tmp_path, settings.backup)) < 2:
                await trio.sleep(0.2)
        nursery.cancel_scope.cancel()
    await store.close()
    assert all(b.problem is None for b in backups.list_backups(tmp_path, settings.backup))
