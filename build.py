#!/usr/bin/env python3
"""One entry for everything: `python3 build.py test|lab|bootos|binary|image`.

Each command does all of its own set-up on a fresh Debian machine: the Debian
packages it needs (requirements/apt.txt), the virtual environment (.venv) with
the project installed, and the builds it depends on. Only the standard library
is used here, because nothing else exists yet when this runs.
"""

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent
VENV = REPO / ".venv"
VENV_PYTHON = VENV / "bin" / "python"
BUILD = REPO / ".build"
BOOTOS_OUT = BUILD / "bootos"


class BuildError(Exception):
    """A step failed; the message says which and why."""


def step(message):
    print(f"==> {message}", flush=True)


def run(cmd, **kwargs):
    printable = " ".join(str(c) for c in cmd)
    try:
        return subprocess.run([str(c) for c in cmd], check=True, **kwargs)
    except FileNotFoundError:
        raise BuildError(f"command not found: {cmd[0]} (while running: {printable})") from None
    except subprocess.CalledProcessError as e:
        raise BuildError(f"failed with exit code {e.returncode}: {printable}") from None


def apt_packages():
    lines = (REPO / "requirements" / "apt.txt").read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def missing_debian_packages(names):
    missing = []
    for name in names:
        result = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", name],
            capture_output=True,
            text=True,
        )
        if "install ok installed" not in result.stdout:
            missing.append(name)
    return missing


def ensure_debian_packages():
    if not shutil.which("dpkg-query"):
        raise BuildError("this is not a Debian system (no dpkg-query); see README.md")

    missing = missing_debian_packages(apt_packages())
    if not missing:
        return

    if os.geteuid() != 0:
        raise BuildError(
            "these Debian packages are missing and installing them needs root: "
            + " ".join(missing)
            + "\n    run: sudo apt-get install -y "
            + " ".join(missing)
        )

    step(f"installing Debian packages: {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-q"], env=env)
    with services_held_back():
        run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], env=env)


@contextlib.contextmanager
def services_held_back():
    """Install packages without starting their daemons.

    Several packages are here for one tool or for a daemon the tests start themselves on
    loopback (rsyslog, prometheus for promtool, dnsmasq): on a machine with systemd their
    maintainer scripts would otherwise start services listening on every interface.
    invoke-rc.d and deb-systemd-invoke ask /usr/sbin/policy-rc.d first; exit code 101 means
    "do not start" (Debian policy, section 9.3.3). A policy the machine already has is kept.
    """
    policy = Path("/usr/sbin/policy-rc.d")
    if policy.exists():
        yield
        return

    policy.write_text("#!/bin/sh\n# CloudBoot NG's build.py is installing packages\nexit 101\n")
    policy.chmod(0o755)
    try:
        yield
    finally:
        policy.unlink(missing_ok=True)


def ensure_venv():
    stamp = VENV / ".installed"
    inputs = [REPO / "pyproject.toml"]
    if stamp.exists() and all(p.stat().st_mtime <= stamp.stat().st_mtime for p in inputs):
        return

    if not VENV_PYTHON.exists():
        step("creating the virtual environment .venv")
        run([sys.executable, "-m", "venv", VENV])

    step("installing the project and its test tools into .venv")
    pip = [VENV_PYTHON, "-m", "pip", "--disable-pip-version-check", "-q"]
    run([*pip, "install", "--upgrade", "pip"])
    run([*pip, "install", "-e", f"{REPO}[test]"])
    stamp.touch()


def ensure_bootos(force=False):
    outputs = [BOOTOS_OUT / "vmlinuz", BOOTOS_OUT / "initrd.img"]
    if not force and all(p.exists() for p in outputs) and not bootos_sources_newer(outputs):
        return

    step("building BootOS from pinned Debian packages")
    run([VENV_PYTHON, "-m", "bootos.build", "--out", BOOTOS_OUT], cwd=REPO)


def bootos_sources_newer(outputs):
    oldest = min(p.stat().st_mtime for p in outputs)
    sources = [REPO / "bootos", REPO / "appliance" / "proto"]
    for folder in sources:
        for path in folder.rglob("*"):
            fresh = path.is_file() and "__pycache__" not in path.parts
            if fresh and path.stat().st_mtime > oldest:
                return True
    return False


def pytest_run(args, marker):
    # -rs: the reason of every skip (the corpus beside the checkout, for one) in the summary.
    cmd = [VENV_PYTHON, "-m", "pytest", "-m", marker, "-rs", *args]
    print(f"==> pytest -m '{marker}' {' '.join(args)}", flush=True)
    code = subprocess.run([str(c) for c in cmd], cwd=REPO).returncode
    if code == 5:
        raise BuildError(f"pytest collected no tests for -m '{marker}': that is a failure here")
    if code != 0:
        raise BuildError(f"tests failed (pytest -m '{marker}' exit code {code})")


def cmd_test(args):
    started = time.monotonic()
    ensure_debian_packages()
    ensure_venv()

    step("ruff check and ruff format --check")
    run([VENV / "bin" / "ruff", "check", REPO], cwd=REPO)
    run([VENV / "bin" / "ruff", "format", "--check", "--quiet", REPO], cwd=REPO)

    if args.pytest_args:
        # A chosen subset (`build.py test -k dhcp`, `build.py test tests/test_cli.py`)
        # runs once, as asked; BootOS is built first unless --fast.
        if not args.fast:
            ensure_bootos()
        marker = "not vm" if args.fast else "vm or not vm"
        pytest_run(args.pytest_args, marker)
    else:
        pytest_run([], "not vm")
        if not args.fast:
            ensure_bootos()
            pytest_run([], "vm")

    print(f"==> all tests passed in {time.monotonic() - started:.0f} s", flush=True)


def cmd_lab(args):
    ensure_debian_packages()
    ensure_venv()
    if args.down:
        return run([VENV_PYTHON, "-m", "lab", "down"], cwd=REPO)

    ensure_bootos()
    run([VENV_PYTHON, "-m", "lab", "up", "--machines", str(args.machines)], cwd=REPO)


def cmd_bootos(args):
    ensure_debian_packages()
    ensure_venv()
    ensure_bootos(force=True)


def cmd_binary(args):
    raise BuildError(
        "the single-file `cloudboot` binary (PyInstaller) is not built yet; "
        "see docs/limitations.md"
    )


def cmd_image(args):
    raise BuildError("the hardened appliance disk image is not built yet; see docs/limitations.md")


def main():
    parser = argparse.ArgumentParser(prog="build.py", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    test = commands.add_parser(
        "test",
        help="install what the tests need and run them",
        description="Any other arguments go to pytest, e.g. `build.py test -k dhcp`.",
    )
    test.add_argument("--fast", action="store_true", help="skip the QEMU virtual-machine tests")

    lab = commands.add_parser("lab", help="run the main job on the virtual PXE lab")
    lab.add_argument("--down", action="store_true", help="remove everything the lab made")
    lab.add_argument("--machines", type=int, default=3, help="virtual servers to boot")

    commands.add_parser("bootos", help="build the BootOS kernel, initramfs and ISO")
    commands.add_parser("binary", help="build the single-file cloudboot program")
    commands.add_parser("image", help="build the hardened appliance disk image")

    args, extra = parser.parse_known_args()
    if extra and args.command != "test":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.pytest_args = [a for a in extra if a != "--"]
    if args.command == "lab" and args.machines < 1:
        parser.error("lab --machines must be at least 1")
    handler = {
        "test": cmd_test,
        "lab": cmd_lab,
        "bootos": cmd_bootos,
        "binary": cmd_binary,
        "image": cmd_image,
    }[args.command]

    try:
        handler(args)
    except BuildError as e:
        print(f"build.py {args.command}: error: {e}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
