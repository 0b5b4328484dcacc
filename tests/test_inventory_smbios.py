"""Raw SMBIOS table decoding: versions, UUID byte order, damaged tables."""

from hypothesis import given, settings
from hypothesis import strategies as st

from bootos.agent.inventory import build_document
from bootos.agent.inventory._smbios import decode_uuid, parse_entry_point, parse_table
from tests import inventory_builders as smb

ENTRY = "sys/firmware/dmi/tables/smbios_entry_point"
TABLE = "sys/firmware/dmi/tables/DMI"


def _document(table, entry_point=None):
    return build_document({ENTRY: entry_point or smb.entry_point_3(3, 2, 0), TABLE: table})


def test_uuid_byte_order_follows_the_table_version():
    raw = bytes.fromhex("94 02 de 03 80 04 06 05 f8 06 d5 07 00 08 00 09".replace(" ", ""))
    assert decode_uuid(raw, "2.7") == "03de0294-0480-0506-f806-d50700080009"
    assert decode_uuid(raw, "2.5") == "9402de03-8004-0605-f806-d50700080009"


def test_uuid_through_the_whole_document_for_both_versions():
    table = smb.system_table()
    modern = _document(table, smb.entry_point_2(2, 7))
    legacy = _document(table, smb.entry_point_2(2, 5))
    assert modern["smbios_version"] == "2.7"
    assert modern["system"]["uuid"] == "03de0294-0480-0506-f806-d50700080009"
    assert legacy["smbios_version"] == "2.5"
    assert legacy["system"]["uuid"] == "9402de03-8004-0605-f806-d50700080009"


def test_unset_and_template_uuids_read_as_null():
    assert decode_uuid(b"\x00" * 16, "3.0") is None
    assert decode_uuid(b"\xff" * 16, "3.0") is None
    # The AMI template as stored in a 2.6+ table (little-endian first fields).
    template = bytes.fromhex("00020003000400050006000700080009")
    assert decode_uuid(template, "3.0") == "03000200-0400-0500-0006-000700080009"
    assert _document(smb.system_table(uuid_bytes=template))["system"]["uuid"] is None


def test_entry_points():
    assert parse_entry_point(smb.entry_point_3(3, 3, 0), []) == "3.3.0"
    assert parse_entry_point(smb.entry_point_2(2, 8), []) == "2.8"
    warnings = []
    assert parse_entry_point(b"garbage!", warnings) is None
    assert warnings


def test_whole_table():
    document = _document(smb.full_table())
    assert document["warnings"] == []
    assert document["bios"] == {"vendor": "Vendor", "version": "1.0", "date": "01/02/2024"}
    assert document["system"] == {
        "manufacturer": "Maker",
        "product": "Model X",
        "version": "v1",
        "serial": "SN123",
        "uuid": "03de0294-0480-0506-f806-d50700080009",
        "sku": "SKU-1",
        "family": "Family-1",
    }
    assert document["baseboard"]["asset_tag"] is None  # a single space
    assert document["chassis"] == {
        "manufacturer": "Maker",
        "type": "Rack Mount Chassis",
        "serial": "CSN1",
        "asset_tag": None,
    }
    assert document["cpus"] == [
        {
            "socket": "CPU1",
            "manufacturer": "Intel(R) Corporation",
            "model": "Xeon Test",
            "cores": 8,
            "threads": 16,
            "max_speed_mhz": 3600,
        }
    ]
    assert [m["present"] for m in document["memory"]] == [True, False, True]
    assert [m["size_mb"] for m in document["memory"]] == [32768, None, 65536]
    assert document["memory"][0]["part_number"] == "PART-1"
    assert document["memory"][0]["type"] == "DDR4"
    assert document["memory"][1]["manufacturer"] is None  # "NO DIMM"


def test_every_truncation_keeps_what_came_before():
    table = smb.full_table()
    whole = _document(table)
    for cut in range(len(table)):
        document = _document(table[:cut])
        if cut == 0:
            continue
        assert document["warnings"], cut
        # Whatever was read is a prefix of the whole: no invented slots.
        memory = document["memory"]
        assert memory == whole["memory"][: len(memory)]
        if document["system"]["manufacturer"] is not None:
            assert document["system"]["manufacturer"] == "Maker"


def test_trailing_junk_after_end_of_table_is_ignored():
    table = smb.full_table()
    document = _document(table + b"\x01\x02junk")
    assert document["system"]["serial"] == "SN123"
    assert len(document["memory"]) == 3


def test_missing_end_of_table_is_a_warning():
    table = smb.full_table()
    without_end = table[: table.rfind(b"\x7f\x04")]
    document = _document(without_end)
    assert len(document["memory"]) == 3
    assert any("end-of-table" in w for w in document["warnings"])


def test_non_utf8_string_is_kept_byte_for_byte_with_a_warning():
    table = smb.system(smb.UUID_BYTES, serial=b"SN\xe9\xff1") + smb.end_of_table()
    document = _document(table)
    assert document["system"]["serial"] == "SN\u00e9\u00ff1"
    assert any("non-UTF-8" in w for w in document["warnings"])


def test_header_with_impossible_length_stops_parsing():
    warnings = []
    structures = parse_table(smb.bios() + b"\x01\x02\x00\x01", warnings)
    assert [s.type for s in structures] == [0]
    assert warnings


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_never_raise(data):
    document = _document(data)
    assert document["schema"] == "cloudboot.inventory/1"
    assert isinstance(document["warnings"], list)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=2000), st.binary(min_size=1, max_size=8))
def test_corrupted_bytes_in_a_real_table_never_raise(position, junk):
    table = bytearray(smb.full_table())
    position %= len(table)
    table[position : position + len(junk)] = junk
    document = _document(bytes(table), smb.entry_point_2(2, 4))
    assert isinstance(document["memory"], list)
    assert not any("could not read" in w for w in document["warnings"])
