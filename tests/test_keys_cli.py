"""The functions behind `cloudboot keys ...` and `cloudboot vendor ...`."""

import json
import os
from datetime import UTC, datetime, timedelta

import pytest

from keys import KeysError
from keys.cli import (
    keys_init,
    keys_rotate,
    keys_status,
    keys_unseal,
    vendor_keygen,
    vendor_licence,
    vendor_sign,
    vendor_stamp,
    vendor_trust_add,
    vendor_trust_list,
    vendor_trust_revoke,
)
from keys.envelope import Keyring
from keys.master import load_master
from keys.signing import TrustStore, sha256
from keys.watermark import check
from tests.keys_support import FAST_LIMITS

SOON = (datetime.now(UTC) + timedelta(days=30)).isoformat(timespec="seconds")


def answers(*replies):
    """A read_secret stand-in: the officers' typed passphrases, in order."""
    queue = list(replies)
    return lambda prompt: queue.pop(0)


def printed(capsys):
    return json.loads(capsys.readouterr().out)


def test_key_file_init_status_rotate_retire(tmp_path, capsys):
    data_dir, key_file = tmp_path / "data", tmp_path / "etc" / "master.key"
    key_file.parent.mkdir()
    keys_init(data_dir=data_dir, source="key-file", key_file=key_file)
    assert printed(capsys)["current_version"] == 1
    assert os.stat(key_file).st_mode & 0o777 == 0o400

    keyring = Keyring(data_dir, load_master(data_dir))
    blob = keyring.seal("backups", b"backup")
    keys_rotate(data_dir=data_dir, actor="operator:jo")
    assert printed(capsys) == {
        "key_id": keyring.master.key_id,
        "version": 2,
        "rewrapped": 1,
    }
    keys_rotate(data_dir=data_dir, retire=1, actor="operator:jo")
    assert printed(capsys)["versions"] == [2]

    status = keys_status(data_dir=data_dir)
    assert printed(capsys) == status
    assert status["master"]["versions"] == [2]
    assert [k["master_version"] for k in status["keyring"]["data_keys"]] == [2]
    assert Keyring(data_dir, load_master(data_dir)).open(blob) == b"backup"

    with pytest.raises(KeysError, match="already initialised"):
        keys_init(data_dir=data_dir, source="key-file", key_file=key_file)


def test_operator_errors_are_one_line_keys_errors(tmp_path):
    data_dir = tmp_path / "data"
    loose = tmp_path / "loose.key"
    loose.write_text("{}")
    loose.chmod(0o644)
    cases = [
        dict(source="key-file", key_file=loose),
        dict(source="key-file"),
        dict(source="floppy"),
        dict(source="pkcs11", library="/nonexistent.so"),
    ]
    for arguments in cases:
        with pytest.raises(KeysError) as raised:
            keys_init(data_dir=data_dir, **arguments)
        assert "\n" not in str(raised.value) and str(raised.value)
    with pytest.raises(KeysError, match="run `keys init`"):
        keys_status(data_dir=tmp_path / "empty")


def test_dual_control_through_the_cli(tmp_path, capsys):
    data_dir = tmp_path / "data"
    with pytest.raises(KeysError, match="differ"):
        keys_init(
            data_dir=data_dir,
            source="dual-control",
            officers="alice,bob",
            threshold=2,
            read_secret=answers("alice passphrase 1", "alice passphrase 2"),
            argon2_limits=FAST_LIMITS,
        )
    keys_init(
        data_dir=data_dir,
        source="dual-control",
        officers="alice, bob, carol",
        threshold=2,
        read_secret=answers(
            *[
                p
                for p in ("alice pass 1234", "bob pass 123456", "carol pass 12345")
                for _ in (1, 2)
            ]
        ),
        argon2_limits=FAST_LIMITS,
    )
    assert printed(capsys)["threshold"] == 2

    assert keys_status(data_dir=data_dir)["master"]["sealed"] is True
    capsys.readouterr()
    with pytest.raises(KeysError, match="wrong passphrase for officer 'bob'"):
        keys_unseal(data_dir=data_dir, officers="bob,carol", read_secret=answers("guess guess"))
    master = keys_unseal(
        data_dir=data_dir,
        officers="bob,carol",
        read_secret=answers("bob pass 123456", "carol pass 12345"),
    )
    assert master.is_sealed() is False and printed(capsys)["sealed"] is False

    keys_rotate(
        data_dir=data_dir,
        officers="alice,carol",
        new_officers="dave,erin",
        threshold=2,
        read_secret=answers(
            "alice pass 1234",
            "carol pass 12345",
            "dave pass 123456",
            "dave pass 123456",
            "erin pass 123456",
            "erin pass 123456",
        ),
        argon2_limits=FAST_LIMITS,
        actor="operator:jo",
    )
    assert printed(capsys)["version"] == 2
    master = keys_unseal(
        data_dir=data_dir, read_secret=answers("dave pass 123456", "erin pass 123456")
    )
    assert master.current_version() == 2


def test_vendor_commands_make_packages_the_appliance_accepts(tmp_path, capsys):
    data_dir, vendor_dir = tmp_path / "data", tmp_path / "vendor"
    made = vendor_keygen(vendor="Acme Storage", out_dir=vendor_dir, not_after=SOON)
    assert os.stat(made["secret_key_file"]).st_mode & 0o777 == 0o400

    package, manifest = tmp_path / "raid.pkg", tmp_path / "manifest.json"
    package.write_bytes(b"package bytes" * 100)
    manifest.write_text(json.dumps({"name": "raid-perc", "version": "1.0"}))
    signature = vendor_sign(
        key_file=made["secret_key_file"],
        package=package,
        manifest=manifest,
        output=tmp_path / "raid.sig",
    )
    watermark = vendor_stamp(
        key_file=made["secret_key_file"],
        package=package,
        provider="raid-perc",
        licensee="Bank of Testing",
        downloader_id="user-9",
        appliance_ids="appl-1,appl-2",
        expires=SOON,
        output=tmp_path / "raid.wm",
    )
    vendor_licence(
        key_file=made["secret_key_file"],
        licensee="Bank of Testing",
        appliance_ids="appl-3",
        providers="raid-perc",
        expires=SOON,
        output=tmp_path / "licence.json",
    )

    vendor_trust_add(data_dir=data_dir, public_key_file=made["public_key_file"], actor="admin")
    capsys.readouterr()
    listed = vendor_trust_list(data_dir=data_dir)
    assert [e["key_id"] for e in listed] == [made["key_id"]]
    assert printed(capsys) == listed

    trust = TrustStore(data_dir)
    on_disk = json.loads((tmp_path / "raid.sig").read_text())
    assert on_disk == signature
    assert trust.verify_package(package.read_bytes(), json.loads(manifest.read_text()), on_disk)
    assert check(
        data_dir,
        provider="raid-perc",
        package_sha256=sha256(package.read_bytes()),
        watermark=watermark,
        licensee="Bank of Testing",
        appliance_id="appl-2",
    )

    vendor_trust_revoke(data_dir=data_dir, key_id=made["key_id"], reason="test", actor="admin")
    assert vendor_trust_list(data_dir=data_dir)[0]["revoked_at"]
    with pytest.raises(KeysError, match="cannot read package"):
        vendor_sign(
            key_file=made["secret_key_file"],
            package=tmp_path / "missing",
            manifest=manifest,
            output=tmp_path / "x.sig",
        )
