"""Running hostile providers for the tests: a world-traversable scratch area, fake secrets
placed outside the package, and a run helper that keeps every result for the assertions.

The sandbox drops providers to an unprivileged uid, so the package and work directories
must be reachable by it: pytest's own tmp_path is mode 0700 and is not. The scratch area
is made here instead and removed afterwards.
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from providers import manifest, protocol
from providers.sandbox import _kernel, landlock, runner

PROVIDERS = Path(__file__).parent / "providers"
DATABASE_SECRET = "ACCOUNT-4711-IBAN-DE00-SECRET"
MASTER_KEY_SECRET = "MASTER-KEY-0123456789ABCDEF"


def require_sandbox():
    if os.geteuid() != 0:
        pytest.skip("the sandbox tests run as root (they create namespaces and cgroups)")
    if landlock.abi_version() < 1 or not _kernel.seccomp_available():
        pytest.skip("this kernel lacks Landlock or seccomp filters")


class Lab:
    """A scratch area with a package copy, a runtime root and the fake secrets."""

    def __init__(self, root):
        self.root = Path(root)
        os.chmod(self.root, 0o711)
        self.packages = self.root / "packages"
        self.runtime = self.root / "runtime"
        self.outside = self.root / "appliance-data"
        for path in (self.packages, self.runtime, self.outside):
            path.mkdir(mode=0o755)
            os.chmod(path, 0o755)
        # World-readable on purpose: only the sandbox stands between them and the provider.
        self.database = self.outside / "cloudboot.db"
        self.database.write_text(f"SQLite format 3\0{DATABASE_SECRET}\n")
        self.master_key = self.outside / "master.key"
        self.master_key.write_text(MASTER_KEY_SECRET)
        for path in (self.database, self.master_key):
            os.chmod(path, 0o644)
        self.drop_zone = self.root / "drop-zone"
        self.drop_zone.mkdir()
        os.chmod(self.drop_zone, 0o777)

    def provider(self, name, ports=None, devices=None):
        """Copy a hostile provider into the scratch area.

        `ports` and `devices` replace what its manifest asks for (the test's listener port
        and device node are only known at run time).
        """
        target = self.packages / name
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(PROVIDERS / name, target)
        path = target / "provider.json"
        document = json.loads(manifest.parse(path.read_text()).to_json())
        if ports is not None:
            asked = [{"host": "127.0.0.1", "port": port} for port in ports]
            document["capabilities"]["network"] = asked
        if devices is not None:
            document["capabilities"]["devices"] = [{"path": d, "ioctl": True} for d in devices]
        path.write_text(json.dumps(document))
        for path in target.rglob("*"):
            executable = path.is_dir() or path.stat().st_mode & 0o111
            os.chmod(path, 0o755 if executable else 0o644)
        os.chmod(target, 0o755)
        return target

    def run(self, name, params=None, grants=None, ports=None, devices=None, **settings):
        directory = self.provider(name, ports, devices)
        return self.run_directory(directory, params, grants, **settings)

    def run_directory(self, directory, params=None, grants=None, **settings):
        name = directory.name
        found = manifest.load(directory)
        request_params = {"nr": _kernel.syscall_table(), **(params or {})}
        request = protocol.make_request("attack", request_params, job_id=f"hostile-{name}")
        options = {"runtime_root": str(self.runtime), **settings}
        return runner.run(directory, found, request, grants, runner.SandboxSettings(**options))


def make_lab():
    return Lab(tempfile.mkdtemp(prefix="cloudboot-hostile-"))


def everything_said(result):
    """All text the provider got out: events, messages, data and stderr."""
    return repr(result.to_dict())


def processes_of(uid):
    """PIDs on the host still running as `uid` (a sandbox run must leave none)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as handle:
                fields = dict(line.split(":", 1) for line in handle if ":" in line)
        except OSError:
            continue
        if int(fields["Uid"].split()[0]) == uid:
            found.append((int(entry), fields["State"].strip()))
    return found
