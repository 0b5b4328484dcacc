"""Backups under a dual-control master key: the parent unwraps, the child gets the key by pipe.

In-process: an unsealed dual-control master held by this process (as
`cloudboot serve` holds it), create_audited() hands the "backups" data key to
the backup child on stdin. While the child waits on the backup lock, its
/proc environ and cmdline are read: no key in any encoding, and core dumps are
off in it. The backup opens with the keyring; the key events of both
processes are in the audit log; sealed, a backup is refused and audited.

End to end: the real `cloudboot serve` on loopback with a short backup interval,
sealed first (the scheduled backup is refused, once per interval), then
unsealed through POST /api/v1/keys/unseal; the scheduled backup appears, and
`cloudboot backup verify|restore` open it with passphrases typed on the console.
"""

import fcntl
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import trio

from appliance.backup import backups, keysource, service
from appliance.config import Settings
from appliance.key_audit import ApplianceKeyAudit
from keys.audit import AccessLog
from keys.envelope import Keyring
from keys.master import load_master
from tests.audit_support import open_store
from tests.conftest import REPO
from tests.keys_support import OFFICERS, encodings, files_containing
from tests.syslog_support import free_port
from tests.test_keys_unseal_api import call
from tests.test_keys_wiring_readyz import get_readyz, init_dual_control


def unsealed(data, audit):
    master = load_master(data, audit)
    master.unseal("alice", OFFICERS["alice"])
    master.unseal("bob", OFFICERS["bob"])
    assert not master.is_sealed()
    return master


def backups_data_key(data, master):
    """(kek, data key) for the leak searches, unwrapped with an audit list of its own."""
    key_id, data_key, _ = Keyring(data, master, audit=[].append).data_key_for("backups", "test")
    return bytes(master._versions[master.current_version()]), bytes(data_key)


async def audit_rows(store, prefix):
    def query(conn):
        rows = conn.execute(
            "SELECT actor, action, result, details FROM audit_events"
            " WHERE action LIKE ? ORDER BY id",
            (prefix + "%",),
        )
        return [(a, b, c, json.loads(d)) for a, b, c, d in rows.fetchall()]

    return await store.read(query)


async def backup_child(deadline):
    """The backup child of this process, once it has exec'd and hardened itself."""
    while True:
        for child in psutil.Process().children(recursive=True):
            try:
                if "appliance.backup" in " ".join(child.cmdline()) and _core_off(child.pid):
                    return child
            except (psutil.NoSuchProcess, FileNotFoundError, ProcessLookupError):
                continue
        assert trio.current_time() < deadline, "the backup child never showed up"
        await trio.sleep(0.05)


def _core_off(pid):
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max core file size"):
            return line.split()[4:6] == ["0", "0"]
    return False


async def test_the_backup_child_gets_the_data_key_by_pipe_and_never_the_master(tmp_path):
    data = tmp_path / "data"
    store = await open_store(data)
    init_dual_control(data)
    settings = Settings()
    settings.server.data_dir = str(data)
    sink = ApplianceKeyAudit(data)
    master = unsealed(data, sink)
    work = data / backups.WORK_DIR
    work.mkdir(mode=0o700)
    key_log_before = AccessLog(data).read()

    with keysource.holding(master, sink):
        async with trio.open_nursery() as nursery:
            await nursery.start(sink.run, store)
            made = []
            with open(work / ".lock", "a") as lock:
                # Holding the backup lock keeps the child alive after it read its key.
                fcntl.flock(lock, fcntl.LOCK_EX)
                nursery.start_soon(lambda: _append(made, service.create_audited(store, settings)))
                child = await backup_child(trio.current_time() + 60)
                environ = Path(f"/proc/{child.pid}/environ").read_bytes()
                cmdline = Path(f"/proc/{child.pid}/cmdline").read_bytes()
                fcntl.flock(lock, fcntl.LOCK_UN)
            while not made:
                await trio.sleep(0.05)
            info = made[0]
            kek, data_key = backups_data_key(data, master)
            checked = await trio.to_thread.run_sync(backups.verify, data, info.path)
            nursery.cancel_scope.cancel()

    assert checked.key_id == master.key_id
    for secret in (kek, data_key):
        for form in encodings(secret):
            assert form not in environ and form not in cmdline
        assert files_containing(data, secret) == []
    assert b"--key-on-stdin" in cmdline
    # Neither process loaded a master key without the audit log (access.log is the fallback).
    assert AccessLog(data).read() == key_log_before

    rows = await audit_rows(store, "key.")
    await store.close()
    by_action = {}
    for actor, action, _, details in rows:
        by_action.setdefault(action, []).append((actor, details["purpose"]))
    assert [actor for actor, _ in by_action["key.unseal-share"]] == ["alice", "bob"]
    handed = [actor for actor, purpose in by_action["key.unwrap"] if "backup child" in purpose]
    assert handed == ["appliance"]
    assert any(actor == "appliance:backup-child" for actor, _ in by_action["key.seal"])


async def _append(made, awaitable):
    made.append(await awaitable)


async def test_a_sealed_master_refuses_the_backup_and_audits_it(tmp_path):
    data = tmp_path / "data"
    store = await open_store(data)
    init_dual_control(data)
    settings = Settings()
    settings.server.data_dir = str(data)
    master = load_master(data, [].append)  # sealed, as after a restart

    refused = pytest.raises(service.BackupRefused, match="is sealed; the officers must unseal")
    with keysource.holding(master, [].append), refused:
        await service.create_audited(store, settings)
    rows = await audit_rows(store, "backup.create")
    await store.close()
    assert [(r[1], r[2], r[3]["reason"]) for r in rows] == [
        ("backup.create", "denied", "keys sealed")
    ]
    assert not (data / "backups").exists()


def cloudboot(*args, stdin=None):
    # A session of its own: no controlling terminal, so getpass reads the
    # passphrases from stdin, as an operator's typed answers.
    return subprocess.run(
        [sys.executable, "-m", "appliance.cli", *map(str, args)],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        start_new_session=True,
    )


def audit_query(data, action):
    done = cloudboot("audit", "query", "--data-dir", data, "--action", action, "--json")
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def wait_for(what, check, deadline):
    while not (found := check()):
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.2)
    return found


def serve_config(tmp_path, http_port, https_port):
    path = tmp_path / "serve.toml"
    path.write_text(
        "[dhcp]\nenabled = false\n[tftp]\nenabled = false\n"
        f"[server]\nhttp_port = {http_port}\nhttps_port = {https_port}\n"
        # About two seconds between scheduled backups.
        "[backup]\ninterval_hours = 0.0005\n"
    )
    return path


def made_backups(data):
    """The backups the audit log says were made (the file alone may still be in writing)."""
    made = [e for e in audit_query(data, "backup.create") if e["result"] == "ok"]
    return [data / "backups" / e["resource_id"] for e in made]


def run_sealed_then_unsealed(tmp_path, data):
    """serve: a refused backup while sealed, unseal through the API, a scheduled backup."""
    http_port, https_port = free_port(), free_port()
    config = serve_config(tmp_path, http_port, https_port)
    with open(tmp_path / "serve.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "appliance.cli", "serve", "--interface", "lo"]
            + ["--data-dir", str(data), "--config", str(config)],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 120
            assert get_readyz(https_port, deadline)[0] == 503
            refused = wait_for(
                "a refused backup", lambda: audit_query(data, "backup.create"), deadline
            )
            token = cloudboot("token", "issue", "--role", "admin", "--data-dir", data)
            token = token.stdout.strip()
            for officer in ("alice", "bob"):
                body = {"officer": officer, "passphrase": OFFICERS[officer]}
                assert call(https_port, "POST", "/api/v1/keys/unseal", token, body)[0] == 200
            made = wait_for("a scheduled backup", lambda: made_backups(data), deadline)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
    return refused, made


def test_scheduled_backups_under_dual_control_end_to_end(tmp_path):
    data = tmp_path / "data"
    init_dual_control(data)
    key_log_before = AccessLog(data).read()
    refused, made = run_sealed_then_unsealed(tmp_path, data)
    # Every key event of serve went to the audit log, none to the fallback file.
    assert AccessLog(data).read() == key_log_before
    serve_log = (tmp_path / "serve.log").read_text()

    assert refused[-1]["result"] == "denied"
    assert refused[-1]["details"]["reason"] == "keys sealed"
    assert "scheduled backup skipped: no backup made: master key" in serve_log

    passphrases = f"{OFFICERS['alice']}\n{OFFICERS['bob']}\n"
    verified = cloudboot("backup", "verify", made[0].name, "--data-dir", data, stdin=passphrases)
    assert verified.returncode == 0, verified.stderr
    assert f"backup {made[0].name} is good" in verified.stdout

    unwraps = audit_query(data, "key.unwrap")
    handed = [e for e in unwraps if "backup child" in e["details"]["purpose"]]
    assert handed and {e["actor"] for e in handed} == {"appliance"}
    assert {e["source"] for e in handed} == {"appliance"}
    opened = [e for e in unwraps if e["source"] == "cli"]
    assert opened and all(e["details"]["purpose"].startswith("open backups-") for e in opened)
    seals = audit_query(data, "key.seal")
    assert seals and {e["actor"] for e in seals} == {"appliance:backup-child"}
    shares = audit_query(data, "key.unseal-share")
    assert sorted((e["actor"], e["source"]) for e in shares) == [
        ("alice", "appliance"),
        ("alice", "cli"),
        ("bob", "appliance"),
        ("bob", "cli"),
    ]

    restored = cloudboot("backup", "restore", made[0].name, "--data-dir", data, stdin=passphrases)
    assert restored.returncode == 0, restored.stderr
    assert f"restored {made[0].name}" in restored.stdout
    assert [e["resource_id"] for e in audit_query(data, "backup.restore")] == [made[0].name]
    # The restore's own key use is committed into the database it put in place.
    assert any(e["source"] == "cli" for e in audit_query(data, "key.unwrap"))

    kek, data_key = backups_data_key(data, unsealed(data, [].append))
    outputs = serve_log + verified.stdout + verified.stderr + restored.stdout + restored.stderr
    for secret in (kek, data_key):
        assert files_containing(data, secret) == []
        assert not any(form.decode() in outputs for form in encodings(secret)[1:])
    for phrase in OFFICERS.values():
        assert phrase not in outputs


async def test_audit_archives_under_dual_control_unseal_on_the_console(tmp_path, monkeypatch):
    from appliance.core import audit
    from tests.audit_support import add_events

    data = tmp_path / "data"
    store = await open_store(data)
    monkeypatch.setattr(audit, "now", lambda: "2020-01-01T00:00:00.000000Z")
    await add_events(store, 4, actor="old")
    monkeypatch.undo()
    await store.close()
    init_dual_control(data)
    passphrases = f"{OFFICERS['alice']}\n\n{OFFICERS['carol']}\n"  # bob is away: skipped

    pruned = await trio.to_thread.run_sync(
        lambda: cloudboot("audit", "prune", "--data-dir", data, stdin=passphrases)
    )
    assert pruned.returncode == 0, pruned.stderr
    archive = pruned.stdout.split(" to ")[1].split(" and pruned")[0]
    checked = await trio.to_thread.run_sync(
        lambda: cloudboot(
            "audit", "verify-archive", archive, "--data-dir", data, stdin=passphrases
        )
    )
    assert checked.returncode == 0, checked.stderr
    assert "match the signed checkpoint" in checked.stdout

    shares = await trio.to_thread.run_sync(audit_query, data, "key.unseal-share")
    assert sorted(e["actor"] for e in shares) == ["alice", "alice", "carol", "carol"]
    unwraps = await trio.to_thread.run_sync(audit_query, data, "key.unwrap")
    purposes = sorted(e["details"]["purpose"].split(" ")[0] for e in unwraps)
    assert purposes == ["open", "seal:backups"]
    assert {e["source"] for e in unwraps} == {"cli"}
