"""Write the raw inputs of the inventory to a directory, for `inventory --root`.

Files go to DIR/<their path below the root> (sys/..., proc/cpuinfo,
cloudboot-capture/tools/NAME.txt); symbolic links go to one file,
DIR/cloudboot-capture/links.json, {path: link target} (see
bootos.agent.inventory._raw for why they are not written as symlinks).
Running the inventory on DIR then reads exactly the bytes the live system gave.

Must never write outside DIR, and never into a DIR that already holds files
(stale files from an earlier capture would mix into the new one).
"""

import json
import logging
import os

from bootos.agent.inventory._raw import LINKS_FILE, Link, gather, is_safe_relative

log = logging.getLogger(__name__)


class CaptureError(Exception):
    """The capture could not be written; the message says where and why."""


def _check_destination(dest):
    if os.path.exists(dest) and (not os.path.isdir(dest) or os.listdir(dest)):
        raise CaptureError(f"{dest!r} must be an empty directory or not exist yet")


def write_capture(raw, dest):
    """Write a raw-input dict (from gather) below `dest`; returns the count written."""
    _check_destination(dest)
    links = {}
    for rel, value in sorted(raw.items()):
        if not is_safe_relative(rel):
            raise CaptureError(f"refusing to write {rel!r}: not a plain relative path")
        if isinstance(value, Link):
            links[rel] = value.target
            continue
        path = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(value)

    path = os.path.join(dest, LINKS_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(links, handle, indent=1, sort_keys=True)
    return len(raw)


def capture(dest, root="/"):
    """Gather the inventory inputs below `root` and write them to `dest`."""
    try:
        return write_capture(gather(root), dest)
    except OSError as error:
        raise CaptureError(f"writing into {dest!r}: {error}") from error
