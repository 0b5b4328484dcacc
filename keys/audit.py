"""The key access audit: one record for every unwrap and every use of a key.

keys/ cannot import the appliance's audit module, so every component takes an
`audit(event: dict)` callback. The default, AccessLog, appends JSON lines to
<data_dir>/keys/access.log (mode 0600); the appliance passes its own recorder
so key events land in the same audit trail as the rest of its actions.

A record names who or what used the key (actor), which key (key_id, version),
why (purpose) and when (time, UTC ISO 8601), plus the action. It must never
carry key bytes, passphrases or plaintext.
"""

import json
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from keys._files import FILE_MODE, keys_dir

AuditFn = Callable[[dict], None]


def now_utc() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def event(action: str, *, actor: str, key_id: str, version, purpose: str, **extra) -> dict:
    """Build an audit record with the fields every key event has."""
    record = {
        "time": now_utc(),
        "action": action,
        "actor": actor,
        "key_id": key_id,
        "version": version,
        "purpose": purpose,
    }
    record.update(extra)
    return record


class AccessLog:
    """Default audit callback: JSON lines appended to <data_dir>/keys/access.log."""

    def __init__(self, data_dir):
        self.path = Path(keys_dir(data_dir)) / "access.log"
        self._lock = threading.Lock()

    def __call__(self, record: dict) -> None:
        line = (json.dumps(record, sort_keys=True) + "\n").encode()

        # O_APPEND keeps concurrent writers' lines whole; the mode applies on
        # creation and the chmod repairs a file someone widened by hand.
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
            try:
                os.fchmod(fd, FILE_MODE)
                os.write(fd, line)
            finally:
                os.close(fd)

    def read(self) -> list[dict]:
        """Every record so far (for tests and `keys status`)."""
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line]


def default_audit(data_dir, audit: AuditFn | None) -> AuditFn:
    return audit if audit is not None else AccessLog(data_dir)
