"""Pack the agent into one executable file: a Python zip application.

The archive holds bootos/agent and appliance/proto (the only server code the
agent may import), and the provider sandbox with the manifest and protocol
modules it needs (the runner starts its launcher from this same archive), with
a `#!/usr/bin/python3` line in front, as PEP 441 describes. The providers
themselves are files beside it (write_providers), since the sandbox runs each
from its own directory. It is written with zipfile rather than `python3 -m zipapp`
because zipapp stamps each member with the file's mtime in the build host's
local time zone; here every member gets one fixed timestamp, names are
sorted and permissions normalised, so the same sources always give the same
bytes. Compiled caches (__pycache__) never go in.
"""

import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("bootos/agent", "appliance/proto", "providers/sandbox")
PACKAGE_INITS = (
    "bootos/__init__.py",
    "appliance/__init__.py",
    "providers/__init__.py",
    "providers/manifest.py",
    "providers/package.py",
    "providers/protocol.py",
)
# The built-in providers BootOS ships (bootos/agent/raid.py runs them).
PROVIDERS = ("mdadm", "megaraid")
PROVIDER_FILES = ("*.py", "provider.json")
SHEBANG = b"#!/usr/bin/python3\n"
MAIN = "import sys\n\nfrom bootos.agent.cli import main\n\nsys.exit(main())\n"


def agent_sources(repo=REPO):
    """[(archive name, path)] of every module the agent archive carries, sorted."""
    files = [(name, repo / name) for name in PACKAGE_INITS]
    for package in PACKAGES:
        for path in (repo / package).rglob("*.py"):
            if "__pycache__" not in path.parts:
                files.append((path.relative_to(repo).as_posix(), path))
    return sorted(files)


def write_agent(target, source_date_epoch, repo=REPO):
    """Write the agent archive to target (mode 0755); returns the member names."""
    # ZIP stores local date and time with 2-second resolution and no year before 1980.
    stamp = time.gmtime(max(source_date_epoch, 315532800))[:6]
    members = [("__main__.py", MAIN.encode())]
    members += [(name, path.read_bytes()) for name, path in agent_sources(repo)]

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as out:
        out.write(SHEBANG)
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, data in members:
                info = zipfile.ZipInfo(name, date_time=stamp)
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, data, compresslevel=9)
    target.chmod(0o755)
    return [name for name, _ in members]


def provider_sources(repo=REPO):
    """[(relative path under the providers directory, path)] of the built-in providers."""
    files = []
    for name in PROVIDERS:
        for pattern in PROVIDER_FILES:
            files += [(f"{name}/{p.name}", p) for p in (repo / "providers" / name).glob(pattern)]
    return sorted(files)


def write_providers(target, repo=REPO):
    """Copy the built-in providers under target (files 0644); returns the names written."""
    written = []
    for name, path in provider_sources(repo):
        destination = Path(target) / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(path.read_bytes())
        destination.chmod(0o644)
        written.append(name)
    return written
