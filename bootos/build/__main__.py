"""`python3 -m bootos.build`: build BootOS, or refresh the package lock.

A command-line front end only: it parses options, calls build() or
update_lock(), prints sizes and hashes, and turns BuildError into one line on
stderr and exit status 1 (never a traceback).
"""

import argparse
import logging
import sys
from pathlib import Path

from bootos.build import DEFAULT_CACHE, DEFAULT_LOCK, DEFAULT_OUT, BuildError, build
from bootos.build.lock import update_lock


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m bootos.build", description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--lock", type=Path, default=DEFAULT_LOCK)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument(
        "--update-lock",
        action="store_true",
        help="pin the archive's current versions into the lock instead of building",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    try:
        if args.update_lock:
            lock = update_lock(args.lock, args.cache)
            print(f"{args.lock}: {len(lock['packages'])} packages, {lock['kernel_package']}")
            return 0
        result = build(args.out, args.lock, args.cache)
    except BuildError as exc:
        print(f"bootos build: {exc}", file=sys.stderr)
        return 1

    print_summary(args.out, result)
    return 0


def print_summary(out_dir, result):
    print(f"BootOS kernel {result['kernel_version']}, {result['modules']} modules, ", end="")
    print(f"built in {result['seconds']} s")
    for name, info in result["files"].items():
        print(f"  {out_dir / name}  {info['size'] / 1e6:8.1f} MB  sha256 {info['sha256']}")


if __name__ == "__main__":
    sys.exit(main())
