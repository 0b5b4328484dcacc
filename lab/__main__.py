"""`python -m lab up [--machines N]` and `python -m lab down`, as build.py runs them."""

import argparse
import logging
import sys
from pathlib import Path

from lab import run

REPO = Path(__file__).resolve().parent.parent


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m lab", description="the virtual PXE lab")
    actions = parser.add_subparsers(dest="action", required=True)
    up = actions.add_parser("up", help="start the lab and wait for every VM to register")
    up.add_argument("--machines", type=int, default=3, help="virtual servers to boot (1-30)")
    actions.add_parser("down", help="remove everything the lab made (safe to repeat)")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.WARNING, format="lab: %(levelname)s %(message)s")
    if args.action == "down":
        return run.down(REPO)
    if not 1 <= args.machines <= 30:
        parser.error(f"--machines must be between 1 and 30, got {args.machines}")
    return run.up(REPO, args.machines)


if __name__ == "__main__":
    sys.exit(main())
