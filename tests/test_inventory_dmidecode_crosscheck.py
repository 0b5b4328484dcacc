"""The raw-table decoder and the dmidecode-text reader agree, checked with the
real dmidecode: a table is decoded here from bytes, and by dmidecode from a
dump file (`--from-dump`), whose text output is then read by our text parser."""

import shutil
import subprocess

import pytest

from bootos.agent.inventory import build_document
from bootos.agent.inventory._smbios import parse_table
from tests import inventory_builders as smb

pytestmark = pytest.mark.skipif(
    shutil.which("dmidecode") is None, reason="dmidecode not installed (requirements/apt.txt)"
)

ENTRY = "sys/firmware/dmi/tables/smbios_entry_point"
TABLE = "sys/firmware/dmi/tables/DMI"


def _structure_count(table):
    return len(parse_table(table, []))


def _entry(version, table):
    major, minor, *rest = version
    if major >= 3:
        return smb.entry_point_3(major, minor, rest[0], len(table), 32)
    return smb.entry_point_2(major, minor, len(table), 32, _structure_count(table))


@pytest.mark.parametrize("version", [(2, 5), (2, 7), (2, 8), (3, 2, 0)])
def test_raw_decoder_and_dmidecode_text_agree(tmp_path, version):
    table = smb.full_table()
    entry = _entry(version, table)
    dump = tmp_path / "smbios.bin"
    dump.write_bytes(smb.dump_file(entry, table))

    result = subprocess.run(
        ["dmidecode", "--from-dump", str(dump)], capture_output=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr

    from_text = build_document({"cloudboot-capture/tools/dmidecode.txt": result.stdout})
    from_raw = build_document({ENTRY: entry, TABLE: table})
    assert from_text == from_raw
    assert from_raw["warnings"] == []
    assert from_raw["smbios_version"] == ".".join(map(str, version))
    if version >= (2, 6):
        assert from_raw["system"]["uuid"] == "03de0294-0480-0506-f806-d50700080009"
    else:
        assert from_raw["system"]["uuid"] == "9402de03-8004-0605-f806-d50700080009"
