"""`python -m appliance.backup create DATA_DIR [--directory D] [--mirror M] [--keep N]
[--key-on-stdin]`.

The backup child process that `cloudboot serve` starts for its scheduled
backups (appliance/backup/service.py). In a process of its own, the
snapshot's copy of the database, the compression and the encryption never
hold the appliance's interpreter lock, so they cannot stall its writer. It
prints the backup's description as one JSON line, or one error line and
exits 2; it writes no audit event (the parent does).

With --key-on-stdin the parent, which holds the master key, sends the
keyring's "backups" data key down stdin (a JSON line naming it, then the raw
key bytes): the child never loads the master key, so it works under dual
control, and the key is never in argv, the environment or a file. The child
reports its own use of that key in the description's "key_events" for the
parent to record.
"""

import argparse
import json
import sys

from appliance.backup import backups, keysource
from appliance.config import BackupSettings

# Bounds on what the parent may send: a short JSON line and one 32-byte key.
MAX_HEADER = 1024
KEY_BYTES = keysource.KEY_BYTES


class HandOverError(Exception):
    """The parent's key frame on stdin was not what this program expects."""


def read_handed_key(stream):
    """The HandedKey the parent wrote to `stream` (a binary file)."""
    line = stream.readline(MAX_HEADER)
    try:
        header = json.loads(line)
        master_key_id, version = str(header["master_key_id"]), int(header["master_version"])
        data_key_id = str(header["data_key_id"])
    except (ValueError, KeyError, TypeError):
        raise HandOverError(f"expected a JSON key header on stdin, got {line[:80]!r}") from None

    data_key = bytearray(KEY_BYTES)
    got = stream.readinto(data_key)
    if got != KEY_BYTES:
        raise HandOverError(f"expected {KEY_BYTES} key bytes on stdin after the header, got {got}")
    return keysource.HandedKey(master_key_id, version, data_key_id, data_key)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m appliance.backup")
    parser.add_argument("action", choices=["create"])
    parser.add_argument("data_dir")
    parser.add_argument("--directory", default="")
    parser.add_argument("--mirror", default="")
    parser.add_argument("--keep", type=int, default=BackupSettings().keep)
    parser.add_argument("--key-on-stdin", action="store_true")
    args = parser.parse_args(argv)

    settings = BackupSettings(
        directory=args.directory, mirror_directory=args.mirror, keep=args.keep
    )
    try:
        if args.key_on_stdin:
            return _create_with_handed_key(args.data_dir, settings)
        info = backups.create(args.data_dir, settings)
    except (backups.BackupError, HandOverError) as e:
        print(str(e), file=sys.stderr)
        return 2
    print(json.dumps(info.as_dict()))
    return 0


def _create_with_handed_key(data_dir, settings):
    from keys import hygiene

    # This process holds a data key from here on: no core dump may carry it.
    hygiene.harden_process()
    handed_key = read_handed_key(sys.stdin.buffer)
    try:
        with keysource.handed(handed_key):
            info = backups.create(data_dir, settings)
    finally:
        handed_key.forget()
    print(json.dumps({**info.as_dict(), "key_events": handed_key.events}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
