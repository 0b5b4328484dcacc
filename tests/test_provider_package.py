"""Provider packages: deterministic packing, the signed region, and refusing bad packages."""

import io
import json
import os
import struct
import tarfile

import pytest

from providers import package

MANIFEST = {
    "schema": "cloudboot.provider/1",
    "name": "demo",
    "version": "0.1",
    "vendor": "Example",
    "kind": "bmc",
    "entry": "bin/run.sh",
    "interpreter": "sh",
}


@pytest.fixture
def source(tmp_path):
    root = tmp_path / "src"
    (root / "bin").mkdir(parents=True)
    (root / "provider.json").write_text(json.dumps(MANIFEST))
    (root / "bin" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(root / "bin" / "run.sh", 0o755)
    (root / "README").write_text("vendor notes\n")
    return root


def test_packing_is_deterministic(source, tmp_path):
    first = package.pack(source, tmp_path / "a.cbp")
    os.utime(source / "README", (1, 1))  # times and owners do not enter the package
    os.chmod(source / "README", 0o600)
    second = package.pack(source, tmp_path / "b.cbp")
    assert (tmp_path / "a.cbp").read_bytes() == (tmp_path / "b.cbp").read_bytes()
    assert first.digest == second.digest


def test_round_trip_keeps_files_modes_and_manifest(source, tmp_path):
    package.pack(source, tmp_path / "demo.cbp")
    found = package.unpack(tmp_path / "demo.cbp", tmp_path / "out")
    assert found.name == "demo"
    assert (tmp_path / "out" / "bin" / "run.sh").read_text() == "#!/bin/sh\necho hi\n"
    assert os.stat(tmp_path / "out" / "bin" / "run.sh").st_mode & 0o777 == 0o755
    assert os.stat(tmp_path / "out" / "README").st_mode & 0o777 == 0o644
    assert json.loads((tmp_path / "out" / "provider.json").read_text())["name"] == "demo"


def test_signature_and_watermark_blocks_leave_the_signed_digest_alone(source, tmp_path):
    plain = package.pack(source, tmp_path / "plain.cbp")
    marked = package.pack(source, tmp_path / "m.cbp", signature=b"SIG" * 10, watermark=b"bank-7")
    assert marked.digest == plain.digest
    assert (marked.signature, marked.watermark) == (b"SIG" * 10, b"bank-7")
    again = package.read(tmp_path / "m.cbp")
    assert again.signature == b"SIG" * 10


def test_changing_a_file_changes_the_digest(source, tmp_path):
    before = package.pack(source, tmp_path / "a.cbp").digest
    (source / "README").write_text("vendor notes!\n")
    assert package.pack(source, tmp_path / "b.cbp").digest != before


def test_links_are_not_packed(source, tmp_path):
    os.symlink("/etc/shadow", source / "shadow")
    with pytest.raises(package.PackageError, match="shadow: links cannot be packed"):
        package.pack(source, tmp_path / "x.cbp")


def test_the_entry_must_be_in_the_package(source, tmp_path):
    os.remove(source / "bin" / "run.sh")
    with pytest.raises(package.PackageError, match="entry 'bin/run.sh' is not a file"):
        package.pack(source, tmp_path / "x.cbp")


def test_every_truncation_is_refused(source, tmp_path):
    blob = (package.pack(source, tmp_path / "a.cbp"), (tmp_path / "a.cbp").read_bytes())[1]
    for length in range(len(blob)):
        with pytest.raises(package.PackageError):
            package.decode(blob[:length])


@pytest.mark.parametrize(
    "mangle, words",
    [
        (lambda b: b"XXXXXXXX" + b[8:], "not a provider package"),
        (lambda b: b[:8] + struct.pack(">H", 2) + b[10:], "format 2 is not supported"),
        (lambda b: b + b"junk", "4 bytes of trailing data"),
        (lambda b: b[:10] + struct.pack(">H", 9) + b[12:], "9 sections, expected 2 to 4"),
        (lambda b: b[:16] + b"EVIL" + b[20:], "unknown tag b'EVIL'"),
        (lambda b: b[:16] + b"FILE" + b[20:], "sections must be MANI, FILE"),
    ],
)
def test_malformed_packages_are_refused_clearly(source, tmp_path, mangle, words):
    package.pack(source, tmp_path / "a.cbp")
    blob = (tmp_path / "a.cbp").read_bytes()
    with pytest.raises(package.PackageError) as caught:
        package.decode(mangle(blob))
    assert words in str(caught.value)


def hostile_archive(member, data=b"x"):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:", format=tarfile.USTAR_FORMAT) as archive:
        good = tarfile.TarInfo("bin/run.sh")
        good.size = 2
        archive.addfile(good, io.BytesIO(b"hi"))
        member.size = len(data) if member.isfile() else 0
        archive.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return buffer.getvalue()


def link(name, target, kind):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize(
    "member, words",
    [
        (tarfile.TarInfo("../../etc/cron.d/x"), "expected a relative path inside the package"),
        (tarfile.TarInfo("/etc/passwd"), "expected a relative path inside the package"),
        (link("evil", "/etc/shadow", tarfile.SYMTYPE), "only files and directories"),
        (link("evil", "bin/run.sh", tarfile.LNKTYPE), "only files and directories"),
        (link("dev", "", tarfile.CHRTYPE), "only files and directories"),
        (tarfile.TarInfo("bin/run.sh"), "appears twice"),
        (tarfile.TarInfo("provider.json"), "appears twice"),
    ],
)
def test_hostile_archives_are_refused_before_anything_is_written(tmp_path, member, words):
    manifest_bytes = json.dumps(MANIFEST).encode()
    blob = package.encode(manifest_bytes, hostile_archive(member))
    with pytest.raises(package.PackageError) as caught:
        package.unpack(package.decode(blob), tmp_path / "out")
    assert words in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_garbage_instead_of_an_archive_is_refused(tmp_path):
    blob = package.encode(json.dumps(MANIFEST).encode(), b"not a tar file" * 100)
    with pytest.raises(package.PackageError, match="not a valid archive"):
        package.unpack(package.decode(blob), tmp_path / "out")


def test_a_bad_manifest_inside_is_reported_as_such():
    blob = package.encode(b'{"schema": "x"}', b"")
    with pytest.raises(package.PackageError, match="package manifest: manifest: missing"):
        package.decode(blob)


def test_unpack_never_overwrites(source, tmp_path):
    package.pack(source, tmp_path / "a.cbp")
    (tmp_path / "out").mkdir()
    with pytest.raises(package.PackageError, match="already exists"):
        package.unpack(tmp_path / "a.cbp", tmp_path / "out")


def test_a_missing_package_file_is_a_clear_error(tmp_path):
    with pytest.raises(package.PackageError, match="cannot read package"):
        package.read(tmp_path / "nope.cbp")
