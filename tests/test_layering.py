"""Dependencies run one way (docs/architecture.md); this keeps them so.

Each check imports a package's modules in a fresh interpreter and looks at
what ended up in sys.modules, so an indirect import is caught too.
"""

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

PROBE = """
import importlib, json, pkgutil, sys
root = sys.argv[1]
package = importlib.import_module(root)
names = [root]
for info in pkgutil.walk_packages(package.__path__, root + "."):
    if ".tests" in info.name or info.name.endswith("__main__"):
        continue
    importlib.import_module(info.name)
    names.append(info.name)
print(json.dumps({"imported": names, "modules": sorted(sys.modules)}))
"""


def loaded_by(package):
    result = subprocess.run(
        [sys.executable, "-c", PROBE, package],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def offenders(modules, forbidden, allowed=()):
    bad = []
    for name in modules:
        hit = any(name == f or name.startswith(f + ".") for f in forbidden)
        if hit and not any(name == a or name.startswith(a + ".") for a in allowed):
            bad.append(name)
    return bad


def test_protocol_cores_know_no_trio_and_no_store():
    found = loaded_by("appliance.proto")
    forbidden = ["trio", "apsw", "appliance.store", "appliance.http", "appliance.boot"]
    assert offenders(found["modules"], forbidden) == []


def test_agent_shares_only_the_protocol_packages():
    found = loaded_by("bootos.agent")
    forbidden = ["trio", "apsw", "h11", "appliance"]
    allowed = ["appliance.proto"]
    # The bare `appliance` package is loaded on the way to appliance.proto; it
    # is a docstring only, which the next line keeps true.
    modules = [m for m in found["modules"] if m != "appliance"]
    assert offenders(modules, forbidden, allowed) == []
    # The packages themselves (`appliance/__init__.py`) must stay empty of imports.
    assert "appliance.config" not in found["modules"]


@pytest.mark.parametrize("package", ["keys", "providers"])
def test_keys_and_providers_import_nothing_from_the_appliance(package):
    found = loaded_by(package)
    assert offenders(found["modules"], ["appliance"]) == []
