"""The store's schema migrations, one SQL file each, applied in number order.

A migration is a file named `NNNN_name.sql` in this folder: NNNN is its
number (four digits, unique), name says what it adds. The runner in
appliance/store/_migrate.py applies every migration whose number is above the
highest one recorded in the `schema_version` table, each in its own
transaction together with its record, so a crash leaves either all of a
migration or none of it. A migration file is never edited once released:
changes go into a new file with the next number.

A migration that must transform rows (compress them, say) rather than only
change the schema is a Python file `NNNN_name.py` with a function
`upgrade(conn)`, run in the same transaction as its record. It does SQL only.
"""

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

FOLDER = Path(__file__).resolve().parent

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.(sql|py)$")


@dataclass(frozen=True)
class Migration:
    number: int
    name: str
    sql: str
    # For a Python migration: upgrade(conn), and sql is "".
    upgrade: object = None


class MigrationListError(Exception):
    """Two migration files share a number, or a file name breaks the pattern."""


def load(folder=FOLDER):
    """Return every migration in the folder, sorted by number."""
    found = {}
    paths = [*Path(folder).glob("*.sql"), *Path(folder).glob("[0-9]*.py")]
    for path in sorted(paths):
        match = _NAME.match(path.name)
        if match is None:
            raise MigrationListError(
                f"migration file {path.name!r} does not match NNNN_name.sql (e.g. 0002_jobs.sql)"
            )

        number = int(match.group(1))
        if number in found:
            raise MigrationListError(
                f"migrations {found[number].name!r} and {match.group(2)!r} share number {number}"
            )
        if match.group(3) == "py":
            found[number] = Migration(number, match.group(2), "", _upgrade_of(path))
        else:
            found[number] = Migration(number, match.group(2), path.read_text())

    return [found[n] for n in sorted(found)]


def _upgrade_of(path):
    spec = importlib.util.spec_from_file_location(f"{__name__}.m{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.upgrade
