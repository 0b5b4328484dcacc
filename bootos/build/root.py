"""Assemble the BootOS root file system from unpacked Debian packages.

Steps, in order: unpack every locked .deb with `dpkg-deb -x` (never installed
on the host), copy the chosen files (packages.SELECTION), prune documentation,
add the chosen kernel modules with their dependencies and run the locked
kmod's depmod over them, check that every program finds its libraries, then
add busybox's applet links, the /init script, the DHCP hook and the agent.

Programs from the tree are run on the build host only through the tree's own
dynamic loader (so the locked kmod, not whatever the host has, writes
modules.dep). This module never writes outside the work directory it is given.
"""

import fnmatch
import logging
import os
import shutil
import subprocess
from pathlib import Path

from bootos.build import elf
from bootos.build.lock import BuildError
from bootos.build.packages import MODULES, PRUNE, SELECTION

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
LIB_DIRS = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib", "usr/lib")
SKELETON = ("proc", "sys", "dev", "run", "tmp", "root", "mnt", "var/log", "etc")


def unpack(debs, work):
    """Unpack each .deb into work/<package>; returns {package: directory}."""
    dirs = {}
    for name, deb in sorted(debs.items()):
        target = Path(work) / name
        target.mkdir(parents=True)
        _run(["dpkg-deb", "-x", str(deb), str(target)])
        dirs[name] = target
    return dirs


def copy_selection(unpacked, root):
    """Copy each package's selected files into root, keeping relative paths and symlinks."""
    for name, patterns in SELECTION.items():
        source = unpacked[name]
        for relative in _matching(source, patterns):
            _copy_path(source / relative, root / relative)

    for relative in PRUNE:
        shutil.rmtree(root / relative, ignore_errors=True)


def _matching(source, patterns):
    found = []
    for dirpath, dirnames, filenames in os.walk(source):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            relative = os.path.relpath(os.path.join(dirpath, name), source)
            if any(fnmatch.fnmatchcase(relative, p) for p in patterns):
                found.append(relative)
    return sorted(found)


def _copy_path(source, target):
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.exists():
        target.unlink()
    if source.is_symlink():
        target.symlink_to(os.readlink(source))
    else:
        shutil.copy2(source, target)


def kernel_version(kernel_dir):
    """The one directory name under lib/modules of the kernel package."""
    versions = sorted(p.name for p in (kernel_dir / "lib/modules").iterdir())
    if len(versions) != 1:
        raise BuildError(f"kernel package has module trees {versions!r}; want exactly one")
    return versions[0]


def add_modules(kernel_dir, root, version):
    """Copy MODULES and their dependencies; returns (included, built_in) name lists."""
    depmod(root, kernel_dir, version)
    tree = kernel_dir / "lib/modules" / version
    deps = _read_modules_dep(tree / "modules.dep")
    builtin = {_module_name(line) for line in (tree / "modules.builtin").read_text().split()}

    chosen, built_in = set(), []
    for name in MODULES:
        if name in builtin:
            built_in.append(name)
            continue
        if name not in deps:
            raise BuildError(f"kernel {version} has no module {name!r}")
        chosen |= _closure(name, deps)

    target = root / "lib/modules" / version
    for name in sorted(chosen):
        _copy_path(tree / deps[name]["path"], target / deps[name]["path"])
    for extra in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
        _copy_path(tree / extra, target / extra)

    depmod(root, root, version)
    return sorted(chosen), built_in


def _read_modules_dep(path):
    deps = {}
    for line in path.read_text().splitlines():
        module, _, needs = line.partition(":")
        deps[_module_name(module)] = {
            "path": module,
            "needs": [_module_name(n) for n in needs.split()],
        }
    return deps


def _module_name(path):
    # modules.dep names files (nvme-core.ko); modprobe treats - and _ alike.
    return Path(path).name.removesuffix(".ko").replace("-", "_")


def _closure(name, deps):
    seen, stack = set(), [name]
    while stack:
        current = stack.pop()
        if current not in seen:
            seen.add(current)
            stack.extend(deps[current]["needs"])
    return seen


def depmod(tools_root, base, version):
    """Run the locked kmod's depmod for base/lib/modules/<version>."""
    run_from_tree(tools_root, "bin/kmod", "depmod", ["-b", str(base), version])


def run_from_tree(tree, program, argv0, args):
    """Run a dynamically linked program of the tree with the tree's loader and libraries."""
    libs = ":".join(str(tree / d) for d in LIB_DIRS[:2])
    loader = tree / "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    return _run(
        [str(loader), "--library-path", libs, "--argv0", argv0, str(tree / program)] + args
    )


def check_libraries(root):
    """Every ELF program finds its DT_NEEDED libraries in root; returns dropped files.

    Python extension modules whose library BootOS leaves out (curses, dbm,
    sqlite, decimal, nis, crypt) are removed, since the agent imports none of
    them; anything else missing a library stops the build.
    """
    available = {
        entry.name for d in LIB_DIRS if (root / d).is_dir() for entry in (root / d).iterdir()
    }
    dropped, broken = [], []
    for path in _elf_files(root):
        missing = [lib for lib in elf.needed_libraries(path) if lib not in available]
        if not missing:
            continue
        relative = path.relative_to(root).as_posix()
        if "/lib-dynload/" in relative:
            path.unlink()
            dropped.append(relative)
        else:
            broken.append(f"{relative} needs {', '.join(missing)}")
    if broken:
        raise BuildError("programs without their libraries: " + "; ".join(broken))
    return sorted(dropped)


def _elf_files(root):
    for dirpath, _dirnames, filenames in os.walk(root):
        if "/lib/modules" in dirpath:
            continue
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if not path.is_symlink() and elf.is_elf(path):
                yield path


def add_userland(root):
    """Skeleton directories, busybox applet links, python3 link, /init and the DHCP hook."""
    for relative in SKELETON:
        (root / relative).mkdir(parents=True, exist_ok=True)
    _link_busybox_applets(root)
    _link(root / "usr/bin/python3", "python3.11")
    _install(HERE / "init", root / "init", 0o755)
    _install(HERE / "udhcpc.script", root / "usr/share/cloudboot/udhcpc.script", 0o755)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")


def _link_busybox_applets(root):
    # A real program from a package (kmod's modprobe, util-linux's lsblk) wins
    # over the busybox applet of the same name: the agent relies on their options.
    listing = _run([str(root / "bin/busybox"), "--list-full"]).split()
    taken = {p.name for d in ("bin", "sbin", "usr/bin", "usr/sbin") for p in _entries(root / d)}
    for relative in listing:
        name = Path(relative).name
        if name in taken:
            continue
        depth = relative.count("/")
        _link(root / relative, "../" * depth + "bin/busybox")


def _entries(directory):
    return list(directory.iterdir()) if directory.is_dir() else []


def _link(path, target):
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.exists():
        path.unlink()
    path.symlink_to(target)


def _install(source, target, mode):
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    target.chmod(mode)


def _run(argv):
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BuildError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout
