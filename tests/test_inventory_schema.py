"""Every document the agent makes passes the shared schema validator unchanged.

validate() returns a cleaned copy (placeholders nulled, MACs normalised, absent
fields filled in); a document equal to its cleaned copy was already clean.
"""

import pytest

from bootos.agent.inventory import build_document, collect

inventory = pytest.importorskip("appliance.proto.inventory")

LSHW = ("asrockrack-e3c246d4i-nl", "dell-poweredge-r6515", "supermicro-x11dph-t.min")


def _assert_already_clean(document):
    # "warnings" is the agent's addition to the schema (docs/architecture.md);
    # the validator keeps only the fields it names.
    assert inventory.validate(document) == document


def test_live_document_is_valid():
    _assert_already_clean(collect("/"))


def test_corpus_documents_are_valid(corpus):
    for path in sorted((corpus / "dmi").glob("*.dmidecode.txt")):
        _assert_already_clean(
            build_document({"cloudboot-capture/tools/dmidecode.txt": path.read_bytes()})
        )
    for name in LSHW:
        data = (corpus / "lsblk-lshw" / f"lshw-json__{name}.json").read_bytes()
        _assert_already_clean(build_document({"cloudboot-capture/tools/lshw.txt": data}))


def test_hand_built_trees_are_valid(tmp_path):
    from tests.inventory_builders import entry_point_3, full_table

    raw = {
        "sys/firmware/dmi/tables/smbios_entry_point": entry_point_3(3, 2, 0),
        "sys/firmware/dmi/tables/DMI": full_table(),
    }
    _assert_already_clean(build_document(raw))
    _assert_already_clean(build_document({}))


def test_validate_keeps_the_agents_warnings():
    from appliance.proto import inventory as schema

    doc = {"schema": schema.SCHEMA, "warnings": ["DMI table truncated at byte 812"]}
    assert schema.validate(doc)["warnings"] == ["DMI table truncated at byte 812"]
    assert schema.validate({"schema": schema.SCHEMA})["warnings"] == []
