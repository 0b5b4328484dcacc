"""The machine inventory the agent reports: what hardware this machine has.

`collect(root)` reads the raw inputs below a root directory (the live system
"/" or a capture made by `capture`) and turns them into the inventory
document described in docs/architecture.md ("Inventory document").
Reading (bootos.agent.inventory._raw) is kept apart from parsing (the other
private modules, pure functions), so every parser is tested on captured and
hand-made inputs.

Runs inside BootOS: standard library and appliance.proto only. Must never
raise on odd hardware or damaged firmware tables; problems are listed in the
document's "warnings".
"""

import json
import logging
import os
import sys

from bootos.agent.inventory._document import SCHEMA, build_document
from bootos.agent.inventory._raw import gather

__all__ = ["SCHEMA", "build_document", "cmd_capture", "cmd_inventory", "collect", "gather"]

log = logging.getLogger(__name__)


def collect(root="/"):
    """The inventory document of the machine (or capture) at `root`."""
    return build_document(gather(root))


def cmd_inventory(root: str | None) -> int:
    """`cloudboot-agent inventory [--root DIR]`: print the document as JSON."""
    if root is not None and not os.path.isdir(root):
        print(f"inventory: --root {root!r} is not a directory", file=sys.stderr)
        return 2
    document = collect(root or "/")
    json.dump(document, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def cmd_capture(dest: str) -> int:
    """`cloudboot-agent capture DIR`: copy what the inventory reads into DIR."""
    from bootos.agent.capture import CaptureError, capture

    try:
        count = capture(dest)
    except CaptureError as error:
        print(f"capture failed: {error}", file=sys.stderr)
        return 1
    print(f"captured {count} inputs into {dest}", file=sys.stderr)
    return 0
