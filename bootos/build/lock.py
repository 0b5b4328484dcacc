"""The package lock: which Debian packages BootOS is made of, to the byte.

`bootos/packages.lock` names every .deb with its version, architecture and
SHA-256, plus the SOURCE_DATE_EPOCH the build stamps on every file. The build
downloads exactly those versions with `apt-get download NAME=VERSION` into a
cache and refuses any file whose hash differs, so two builds from one lock are
made of the same bytes. `update_lock` is the only place that asks the archive
what is current; a build never does.

This module must never install a package on the build host: it only
downloads .deb files and checks them.
"""

import hashlib
import json
import logging
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bootos.build.packages import KERNEL_META, wanted_packages

log = logging.getLogger(__name__)

LOCK_FORMAT = "cloudboot.bootos-lock/1"


class BuildError(Exception):
    """The build cannot go on; the message says what was expected and what was found."""


def read_lock(path):
    """The lock as a dict; BuildError when it is missing or malformed."""
    try:
        lock = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise BuildError(
            f"package lock {path} not found; make one with python3 -m bootos.build --update-lock"
        ) from None
    except json.JSONDecodeError as exc:
        raise BuildError(f"package lock {path} is not JSON: {exc}") from None

    if lock.get("format") != LOCK_FORMAT:
        raise BuildError(f"package lock {path}: format {lock.get('format')!r}, want {LOCK_FORMAT}")
    for entry in lock.get("packages", []):
        if not all(entry.get(k) for k in ("name", "version", "arch", "sha256")):
            raise BuildError(f"package lock {path}: incomplete entry {entry!r}")
    return lock


def deb_filename(entry):
    """The file name apt-get download gives a package (the epoch colon becomes %3a)."""
    version = entry["version"].replace(":", "%3a")
    return f"{entry['name']}_{version}_{entry['arch']}.deb"


def fetch(lock, cache_dir):
    """Return {name: path of the verified .deb}, downloading what the cache lacks."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for entry in lock["packages"]:
        path = cache_dir / deb_filename(entry)
        if not path.exists() or sha256_file(path) != entry["sha256"]:
            _download(entry["name"], entry["version"], cache_dir)
        digest = sha256_file(path)
        if digest != entry["sha256"]:
            path.unlink()
            raise BuildError(
                f"{entry['name']} {entry['version']}: sha256 {digest}, lock says {entry['sha256']}"
            )
        paths[entry["name"]] = path
    return paths


def update_lock(lock_path, cache_dir, source_date_epoch=None):
    """Pin the archive's current candidate of every wanted package; returns the new lock."""
    kernel = kernel_package()
    entries = []
    for name in sorted(wanted_packages(kernel)):
        entries.append(_candidate(name))
    # Download now, so a lock is never written that the archive cannot serve.
    fetch({"packages": entries}, cache_dir)

    old_epoch = None
    if Path(lock_path).exists():
        old_epoch = read_lock(lock_path).get("source_date_epoch")
    lock = {
        "format": LOCK_FORMAT,
        "comment": "BootOS packages; regenerate with: python3 -m bootos.build --update-lock",
        "source_date_epoch": source_date_epoch or old_epoch or int(time.time()),
        "kernel_package": kernel,
        "packages": entries,
    }
    Path(lock_path).write_text(json.dumps(lock, indent=1, sort_keys=True) + "\n")
    log.info("wrote %s with %d packages, kernel %s", lock_path, len(entries), kernel)
    return lock


def kernel_package():
    """The ABI-versioned kernel package linux-image-amd64 currently depends on."""
    out = _run(["apt-cache", "depends", "--no-recommends", "--no-suggests", KERNEL_META])
    for line in out.splitlines():
        match = re.match(r"\s*Depends:\s*(linux-image-\S+)", line)
        if match:
            return match.group(1)
    raise BuildError(f"apt-cache depends {KERNEL_META} names no linux-image package:\n{out}")


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _candidate(name):
    """The candidate's lock entry; its SHA256 comes from the archive's signed index."""
    out = _run(["apt-cache", "show", "--no-all-versions", name])
    fields = dict(re.findall(r"^(Version|Architecture|SHA256): (\S+)$", out, re.MULTILINE))
    if len(fields) != 3:
        raise BuildError(f"apt-cache show {name} lacks version or hash; is apt-get update done?")
    return {
        "name": name,
        "version": fields["Version"],
        "arch": fields["Architecture"],
        "sha256": fields["SHA256"],
    }


def _download(name, version, cache_dir):
    """apt-get download NAME=VERSION into the cache; returns the file's path.

    Downloads land in a private directory first so an interrupted transfer
    never leaves a partial file under the cached name.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".download-") as tmp:
        # apt drops privileges to _apt for the transfer; a root-owned 0700 temp
        # directory would make it fall back with a warning, so open it up.
        Path(tmp).chmod(0o755)
        _run(["apt-get", "download", "-q", f"{name}={version}"], cwd=tmp)
        files = list(Path(tmp).glob("*.deb"))
        if len(files) != 1:
            raise BuildError(f"apt-get download {name}={version} left {files!r}")
        target = cache_dir / files[0].name
        shutil.move(files[0], target)
    log.info("downloaded %s", target.name)
    return target


def _run(argv, cwd=None):
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise BuildError(f"{argv[0]} not found; BootOS is built on Debian 12 with apt") from None
    if done.returncode != 0:
        raise BuildError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout
