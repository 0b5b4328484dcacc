"""`python -m lab up|down`: what `python3 build.py lab [--down]` runs in the venv."""

import argparse
import sys
from pathlib import Path

from lab import run

REPO = Path(__file__).resolve().parent.parent


def main():
    parser = argparse.ArgumentParser(prog="lab")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up")
    up.add_argument("--machines", type=int, default=3)
    commands.add_parser("down")
    args = parser.parse_args()

    if args.command == "up":
        return run.up(REPO, machines=args.machines)
    return run.down(REPO)


if __name__ == "__main__":
    sys.exit(main())
