"""Runs one PKCS#11 scenario in its own process and prints the outcome as JSON.

python-pkcs11 initialises the PKCS#11 library once per process and SoftHSM2
reads SOFTHSM2_CONF at that moment, so each test token gets a fresh process:
tests/test_keys_pkcs11.py starts this file with SOFTHSM2_CONF set.

usage: keys_pkcs11_scenario.py SCENARIO DATA_DIR TOKEN_LABEL PIN_FILE [BLOB_FILE]
"""

import json
import sys
from pathlib import Path

import pkcs11

from keys.cli import keys_init, keys_rotate
from keys.envelope import Keyring
from keys.errors import KeysError
from keys.master import load_master

LIBRARY = "/usr/lib/softhsm/libsofthsm2.so"


def lifecycle(data_dir, label, pin_file, blob_file):
    master = keys_init(
        data_dir=data_dir, source="pkcs11", library=LIBRARY, token_label=label, pin_file=pin_file
    )
    keyring = Keyring(data_dir, master)
    before = keyring.seal("backups", b"backup before rotation")
    key = master._object(1)
    try:
        key[pkcs11.Attribute.VALUE]
        value_readable = True
    except pkcs11.AttributeSensitive:
        value_readable = False
    facts = {
        "extractable": key[pkcs11.Attribute.EXTRACTABLE],
        "sensitive": key[pkcs11.Attribute.SENSITIVE],
        "value_readable": value_readable,
        "label": key.label,
    }
    rotated = keys_rotate(data_dir=data_dir, actor="pytest")
    after = keyring.seal("backups", b"backup after rotation")
    keys_rotate(data_dir=data_dir, retire=1, actor="pytest")
    Path(blob_file).write_bytes(before + b"\n--\n" + after)
    return {
        **facts,
        "rotated": rotated,
        "versions": master.versions(),
        "opened": [keyring.open(before).decode(), keyring.open(after).decode()],
    }


def reopen(data_dir, label, pin_file, blob_file):
    before, after = Path(blob_file).read_bytes().split(b"\n--\n")
    keyring = Keyring(data_dir, load_master(data_dir))
    return {"opened": [keyring.open(before).decode(), keyring.open(after).decode()]}


def open_only(data_dir, label, pin_file, blob_file):
    load_master(data_dir)
    return {"opened": True}


def main():
    scenario, data_dir, label, pin_file, *rest = sys.argv[1:]
    blob_file = rest[0] if rest else None
    run = {"lifecycle": lifecycle, "reopen": reopen, "open": open_only}[scenario]
    try:
        outcome = run(data_dir, label, pin_file, blob_file)
    except KeysError as exc:
        outcome = {"error": str(exc)}
    print("RESULT " + json.dumps(outcome))


if __name__ == "__main__":
    main()
