"""The BootOS builder's parts, fast: ELF reading, the cpio writer, the agent
archive, the lock. The full build and boot are in test_bootos_vm.py.

Archives are checked with the real tools a user would use on them (GNU cpio
lists and extracts the initramfs, the system Python runs the agent archive),
and reproducibility is checked by building the same input twice, with
different file times, and comparing bytes.
"""

import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile

import pytest

from bootos.build import BuildError, cpio, elf, lock, pack_initramfs, zipapp
from bootos.build.lock import deb_filename, read_lock
from tests.conftest import REPO


def test_needed_libraries_of_a_dynamic_program():
    needed = elf.needed_libraries(shutil.which("ls") or "/bin/ls")

    assert "libc.so.6" in needed


def test_a_static_program_needs_nothing():
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox-static is not installed")

    assert elf.needed_libraries(busybox) == []


def test_a_non_elf_file_is_refused(tmp_path):
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\n")

    assert not elf.is_elf(script)
    with pytest.raises(ValueError, match="not a little-endian ELF64"):
        elf.needed_libraries(script)


def make_tree(root):
    (root / "bin").mkdir(parents=True)
    (root / "bin/tool").write_bytes(b"\x00binary\xff" * 3)
    (root / "bin/tool").chmod(0o755)
    (root / "etc").mkdir()
    (root / "etc/motd").write_text("hello\n")
    (root / "sh").symlink_to("bin/tool")
    return root


def write_archive(tree, target, mtime=1_700_000_000):
    entries = cpio.entries_from_tree(tree)
    entries.append(cpio.Entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)))
    with open(target, "wb") as out:
        cpio.write_newc(out, entries, mtime)
    return target.read_bytes()


def test_cpio_archive_is_read_back_by_gnu_cpio(tmp_path):
    if shutil.which("cpio") is None:
        pytest.skip("GNU cpio is not installed")
    archive = tmp_path / "initrd.cpio"
    write_archive(make_tree(tmp_path / "tree"), archive)

    listing = subprocess.run(
        ["cpio", "-itv", "--quiet", "-F", str(archive)], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(
        ["cpio", "-id", "--quiet", "--no-absolute-filenames", "-F", str(archive)],
        cwd=out,
        check=True,
    )

    names = [line.split()[-1] if "->" not in line else line.split()[-3] for line in listing]
    assert names == ["bin", "bin/tool", "dev/console", "etc", "etc/motd", "sh"]
    assert next(line for line in listing if "console" in line).startswith("crw-------")
    assert all(" root " in line for line in listing)
    assert (out / "bin/tool").read_bytes() == b"\x00binary\xff" * 3
    assert os.access(out / "bin/tool", os.X_OK)
    assert os.readlink(out / "sh") == "bin/tool"


def test_cpio_archive_ignores_file_times_and_creation_order(tmp_path):
    first = write_archive(make_tree(tmp_path / "a"), tmp_path / "a.cpio")
    tree_b = make_tree(tmp_path / "b")
    os.utime(tree_b / "etc/motd", (1, 1))
    (tree_b / "etc/late").write_text("x")
    (tree_b / "etc/late").unlink()

    assert write_archive(tree_b, tmp_path / "b.cpio") == first


def test_packed_initramfs_is_identical_twice(tmp_path):
    if shutil.which("zstd") is None:
        pytest.skip("zstd is not installed")
    tree = make_tree(tmp_path / "tree")

    pack_initramfs(tree, tmp_path / "one.img", 1_700_000_000)
    os.utime(tree / "bin/tool", (5, 5))
    pack_initramfs(tree, tmp_path / "two.img", 1_700_000_000)

    assert (tmp_path / "one.img").read_bytes() == (tmp_path / "two.img").read_bytes()
    assert (tmp_path / "one.img").read_bytes()[:4] == b"\x28\xb5\x2f\xfd"  # zstd frame magic


def test_agent_archive_is_reproducible_and_runs(tmp_path):
    first = tmp_path / "one" / "cloudboot-agent"
    second = tmp_path / "two" / "cloudboot-agent"

    members = zipapp.write_agent(first, 1_700_000_000)
    zipapp.write_agent(second, 1_700_000_000)

    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes().startswith(b"#!/usr/bin/python3\n")
    assert "bootos/agent/runtime.py" in members
    assert "appliance/proto/bootparams.py" in members
    assert not [
        m
        for m in members
        if m.startswith("appliance/") and "/proto/" not in m and m != "appliance/__init__.py"
    ]
    with zipfile.ZipFile(first) as archive:
        assert {info.date_time for info in archive.infolist()} == {(2023, 11, 14, 22, 13, 20)}

    done = subprocess.run(
        [sys.executable, str(first), "run", "--cmdline", "quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert "kernel command line has no cloudboot.url=" in done.stdout


def test_agent_archive_prints_an_inventory_of_an_empty_root(tmp_path):
    agent = tmp_path / "cloudboot-agent"
    zipapp.write_agent(agent, 1_700_000_000)
    (tmp_path / "empty").mkdir()

    done = subprocess.run(
        [sys.executable, str(agent), "inventory", "--root", str(tmp_path / "empty")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["schema"] == "cloudboot.inventory/1"


def test_the_committed_lock_pins_every_package_with_a_hash():
    locked = read_lock(REPO / "bootos/packages.lock")
    names = {entry["name"] for entry in locked["packages"]}

    assert locked["kernel_package"] in names
    assert {"busybox-static", "python3.11-minimal", "kmod", "dmidecode"} <= names
    assert all(len(entry["sha256"]) == 64 for entry in locked["packages"])
    assert isinstance(locked["source_date_epoch"], int)


def test_deb_file_name_encodes_the_epoch():
    entry = {"name": "busybox-static", "version": "1:1.35.0-4", "arch": "amd64"}

    assert deb_filename(entry) == "busybox-static_1%3a1.35.0-4_amd64.deb"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "is not JSON"),
        ('{"format": "other"}', "format 'other'"),
        (
            '{"format": "cloudboot.bootos-lock/1", "packages": [{"name": "x"}]}',
            "incomplete entry",
        ),
    ],
)
def test_a_bad_lock_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "packages.lock"
    path.write_text(content)

    with pytest.raises(BuildError, match=message):
        read_lock(path)


def test_a_missing_lock_says_how_to_make_one(tmp_path):
    with pytest.raises(BuildError, match="--update-lock"):
        read_lock(tmp_path / "absent.lock")


def test_fetch_uses_a_verified_cache_without_downloading(tmp_path):
    deb = tmp_path / "cache" / "tool_1.0_amd64.deb"
    deb.parent.mkdir()
    deb.write_bytes(b"pretend package")
    entry = {"name": "tool", "version": "1.0", "arch": "amd64", "sha256": lock.sha256_file(deb)}

    assert lock.fetch({"packages": [entry]}, deb.parent) == {"tool": deb}
