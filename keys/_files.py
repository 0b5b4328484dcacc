"""Small file helpers for the keys directory: private modes and atomic replace.

Every file keys/ writes goes through here so that no state file is ever left
half-written (a crash during rotation must leave the old keyring readable) and
none is ever readable by group or others.
"""

import json
import os
from pathlib import Path

from keys.errors import KeysError

KEYS_DIR_MODE = 0o700
FILE_MODE = 0o600


def keys_dir(data_dir) -> Path:
    """<data_dir>/keys, made with mode 0700 when missing."""
    path = Path(data_dir) / "keys"
    path.mkdir(mode=KEYS_DIR_MODE, parents=True, exist_ok=True)
    return path


def atomic_write(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    """Write data to path through a temporary file and a rename.

    The temporary file is created with the final mode, so the content is never
    visible with wider permissions, and fsync'd before the rename so a power
    cut leaves either the old or the new file.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise KeysError(f"cannot write {path}: {exc.strerror}") from None


def write_json(path: Path, document, mode: int = FILE_MODE) -> None:
    text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    atomic_write(path, text.encode(), mode)


def read_json(path: Path, what: str, record_format: str | None = None):
    """Read a JSON state file, turning damage into a one-line KeysError.

    With record_format, the document must be an object whose "format" is that
    value, so a file of another kind is named as such rather than half-read.
    """
    try:
        document = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise KeysError(f"{what} not found at {path}") from None
    except (OSError, ValueError) as exc:
        raise KeysError(f"{what} at {path} cannot be read: {exc}") from None
    if record_format is None:
        return document
    if not isinstance(document, dict) or document.get("format") != record_format:
        raise KeysError(f"{path} is not a CloudBoot {what} ({record_format})")
    return document
