"""Helpers shared by the tests/test_keys_*.py files."""

import base64
import os
from pathlib import Path

import nacl.pwhash

from keys.audit import AccessLog

# The cheapest Argon2id cost libsodium allows: the tests exercise the sealing,
# not the cost, and must stay fast.
FAST_LIMITS = (nacl.pwhash.argon2id.OPSLIMIT_MIN, nacl.pwhash.argon2id.MEMLIMIT_MIN)

OFFICERS = {
    "alice": "alice correct horse",
    "bob": "bob battery staple",
    "carol": "carol tr0ub4dor&3",
}


def make_key_file(folder: Path, data_dir: Path):
    """A key-file master in `folder` (outside data_dir), mode 0400."""
    from keys.master import KeyFileMaster

    return KeyFileMaster.create(folder / "master.key", AccessLog(data_dir), data_dir)


def encodings(secret: bytes) -> list[bytes]:
    """The forms a leaked key would take in a file or a log line."""
    raw = bytes(secret)
    return [
        raw,
        raw.hex().encode(),
        raw.hex().upper().encode(),
        base64.b64encode(raw),
        base64.urlsafe_b64encode(raw),
        base64.b64encode(raw).rstrip(b"="),
    ]


def files_containing(folder: Path, secret: bytes) -> list[str]:
    """Every file under folder holding secret in any common encoding."""
    hits = []
    for root, _, names in os.walk(folder):
        for name in names:
            path = Path(root) / name
            content = path.read_bytes()
            if any(form in content for form in encodings(secret)):
                hits.append(str(path))
    return hits
