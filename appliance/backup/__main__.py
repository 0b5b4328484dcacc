"""`python -m appliance.backup create DATA_DIR [--directory D] [--mirror M] [--keep N]`.

The backup child process that `cloudboot serve` starts for its scheduled
backups (appliance/backup/service.py). In a process of its own, the
snapshot's copy of the database, the compression and the encryption never
hold the appliance's interpreter lock, so they cannot stall its writer. It
prints the backup's description as one JSON line, or one error line and
exits 2; it writes no audit event (the parent does).
"""

import argparse
import json
import sys

from appliance.backup import backups
from appliance.config import BackupSettings


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m appliance.backup")
    parser.add_argument("action", choices=["create"])
    parser.add_argument("data_dir")
    parser.add_argument("--directory", default="")
    parser.add_argument("--mirror", default="")
    parser.add_argument("--keep", type=int, default=BackupSettings().keep)
    args = parser.parse_args(argv)

    settings = BackupSettings(
        directory=args.directory, mirror_directory=args.mirror, keep=args.keep
    )
    try:
        info = backups.create(args.data_dir, settings)
    except backups.BackupError as e:
        print(str(e), file=sys.stderr)
        return 2
    print(json.dumps(info.as_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
