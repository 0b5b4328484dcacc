"""The provider manifest: what a valid one looks like and how each mistake is reported."""

import json

import pytest

from providers import manifest
from providers.sandbox.limits import Limits


def document(**changes):
    base = {
        "schema": "cloudboot.provider/1",
        "name": "megaraid",
        "version": "1.2.0",
        "vendor": "Example Storage Inc.",
        "kind": "raid",
        "entry": "bin/provider.py",
        "interpreter": "python3",
        "protocol": [1],
        "capabilities": {
            "network": [{"host": "bmc.example", "port": 443}],
            "devices": [{"path": "/dev/megaraid_sas_ioctl_node", "ioctl": True}],
            "limits": {"run_seconds": 600, "memory_mb": 128, "processes": 8},
        },
    }
    base.update(changes)
    return base


def test_a_full_manifest_parses_into_what_it_asks_for():
    found = manifest.from_dict(document())
    assert (found.name, found.version, found.kind, found.entry) == (
        "megaraid",
        "1.2.0",
        "raid",
        "bin/provider.py",
    )
    assert found.network == ({"host": "bmc.example", "port": 443},)
    assert found.devices == ({"path": "/dev/megaraid_sas_ioctl_node", "ioctl": True},)
    assert found.limits.run_seconds == 600
    assert found.limits.open_files == Limits().open_files  # unspecified: the default


def test_the_canonical_text_parses_back_to_the_same_manifest():
    found = manifest.from_dict(document())
    assert manifest.parse(found.to_json()) == found
    assert manifest.parse(found.to_json().encode()) == found


def test_minimal_manifest_gets_defaults():
    doc = document()
    del doc["capabilities"], doc["interpreter"], doc["protocol"]
    found = manifest.from_dict(doc)
    assert found.interpreter is None
    assert found.protocols == (1,)
    assert found.network == () and found.devices == ()


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"schema": "cloudboot.provider/9"}, "schema: expected 'cloudboot.provider/1'"),
        ({"kind": "toaster"}, "kind: expected one of raid, bmc, firmware, os, got 'toaster'"),
        ({"name": "Mega RAID"}, "name: 'Mega RAID' does not match"),
        ({"version": ""}, "version: expected text"),
        ({"vendor": "a\nb"}, "vendor: control characters"),
        ({"entry": "../../bin/sh"}, "entry: expected a relative path inside the package"),
        ({"entry": "/bin/sh"}, "entry: expected a relative path inside the package"),
        ({"entry": "bin//x"}, "entry: expected a relative path"),
        ({"entry": "bin/x y"}, "entry: only letters, digits"),
        ({"interpreter": "perl"}, "interpreter: expected one of python3, sh"),
        ({"protocol": [7]}, "this runner speaks [1], the provider only [7]"),
        ({"protocol": "1"}, "protocol: expected a list of versions"),
        ({"extra": 1}, "manifest: unknown key(s) 'extra'"),
    ],
)
def test_mistakes_name_the_field(changes, words):
    with pytest.raises(manifest.ManifestError) as caught:
        manifest.from_dict(document(**changes))
    assert words in str(caught.value)


@pytest.mark.parametrize(
    "capabilities, words",
    [
        ({"network": [{"host": "x", "port": 0}]}, "network[0].port: expected an integer 1-65535"),
        ({"network": [{"host": "x", "port": True}]}, "got True"),
        ({"network": [{"host": "x"}]}, "network[0]: missing port"),
        ({"network": {"host": "x"}}, "capabilities.network: expected a list"),
        ({"devices": [{"path": "/etc/shadow"}]}, "expected a path under /dev/"),
        ({"devices": [{"path": "/dev/../etc/shadow"}]}, "expected a path under /dev/"),
        ({"devices": [{"path": "/dev/sda", "ioctl": "yes"}]}, "ioctl: expected true or false"),
        ({"limits": {"memory_mb": 10**9}}, "limits.memory_mb: expected an integer 16-65536"),
        ({"limits": {"memory_mb": 64.5}}, "got 64.5"),
        ({"limits": {"wallclock": 5}}, "unknown key(s) 'wallclock'"),
        ({"root": True}, "capabilities: unknown key(s) 'root'"),
    ],
)
def test_capability_mistakes_name_the_field(capabilities, words):
    with pytest.raises(manifest.ManifestError) as caught:
        manifest.from_dict(document(capabilities=capabilities))
    assert words in str(caught.value)


@pytest.mark.parametrize(
    "raw, words",
    [
        (b"\xff\xfe", "not UTF-8"),
        (b"{", "not JSON"),
        (b"[]", "manifest: expected an object, got list"),
        (b" " * (manifest.MAX_MANIFEST_BYTES + 1), "more than"),
    ],
)
def test_unreadable_manifests_are_refused_clearly(raw, words):
    with pytest.raises(manifest.ManifestError) as caught:
        manifest.parse(raw)
    assert words in str(caught.value)


def test_missing_keys_are_listed():
    doc = document()
    del doc["kind"], doc["entry"]
    with pytest.raises(manifest.ManifestError, match="manifest: missing entry, kind"):
        manifest.from_dict(doc)


def test_load_reports_a_missing_file(tmp_path):
    with pytest.raises(manifest.ManifestError, match="cannot read .*provider.json"):
        manifest.load(tmp_path)
    (tmp_path / "provider.json").write_text(json.dumps(document()))
    assert manifest.load(tmp_path).name == "megaraid"
