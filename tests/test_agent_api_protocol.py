"""The pure protocol cores: inventory schema validation and agent message validation."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.proto import agent as protocol
from appliance.proto import inventory as schema

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=30,
)
field_names = st.sampled_from(
    [
        "system",
        "baseboard",
        "chassis",
        "bios",
        "cpus",
        "memory",
        "disks",
        "nics",
        "pci",
        "raid_controllers",
        "bmc",
        "smbios_version",
        "extra",
    ]
)


def test_a_full_document_is_cleaned():
    document = schema.validate(
        {
            "schema": schema.SCHEMA,
            "system": {"serial": "  ABC123  ", "uuid": "4C4C4544-0042-3510-8053-B4C04F595231"},
            "chassis": {"serial": "Chassis Serial Number", "asset_tag": "   "},
            "nics": [
                {"name": "eno1", "mac": "B4-96-91-00-00-01", "link": "up", "speed_mbps": 25000}
            ],
            "disks": [
                {
                    "name": "nvme0n1",
                    "size_bytes": 960197124096,
                    "rotational": False,
                    "nvme_namespaces": [{"nsid": 1, "size_bytes": 1}],
                }
            ],
            "future_field": {"anything": 1},
        }
    )
    assert document["system"]["serial"] == "ABC123"
    assert document["system"]["uuid"] == "4c4c4544-0042-3510-8053-b4c04f595231"
    assert document["chassis"] == {
        "manufacturer": None,
        "type": None,
        "serial": None,
        "asset_tag": None,
    }
    assert document["nics"][0]["mac"] == "b4:96:91:00:00:01"
    assert document["nics"][0]["link"] is True
    assert document["bmc"] is None and document["cpus"] == []
    assert "future_field" not in document
    # Cleaning twice changes nothing.
    assert schema.validate(json.loads(json.dumps(document))) == document


@pytest.mark.parametrize(
    ("document", "path"),
    [
        ({"schema": "cloudboot.inventory/2"}, "schema"),
        ({"system": "Dell"}, "system"),
        ({"system": {"uuid": "not-a-uuid"}}, "system.uuid"),
        ({"nics": {"eth0": {}}}, "nics"),
        ({"nics": [{}, {"mac": "52:54:00:12:34"}]}, "nics[1].mac"),
        ({"memory": [{"size_mb": True}]}, "memory[0].size_mb"),
        ({"disks": [{"rotational": "yes"}]}, "disks[0].rotational"),
        ({"cpus": [{"model": "x" * 5000}]}, "cpus[0].model"),
        ({"bmc": {"mac": 5}}, "bmc.mac"),
    ],
)
def test_a_bad_field_is_named_by_its_path(document, path):
    with pytest.raises(schema.InventoryError) as caught:
        schema.validate({"schema": schema.SCHEMA, **document})
    assert caught.value.path == path
    assert path in str(caught.value)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(field_names, json_values, max_size=6))
def test_any_json_is_either_cleaned_or_refused_with_a_path(fields):
    try:
        cleaned = schema.validate({"schema": schema.SCHEMA, **fields})
    except schema.InventoryError as e:
        assert e.path
    else:
        assert schema.validate(cleaned) == cleaned


def test_protocol_version_header():
    assert protocol.check_version("1") == 1
    assert protocol.check_version(" 1 ") == 1
    for value in (None, "", "2", "one", "1.0"):
        with pytest.raises(protocol.UnsupportedProtocol, match="speaks version"):
            protocol.check_version(value)


def test_registration_message():
    cleaned = protocol.validate_registration(
        {
            "protocol": 1,
            "boot_mac": "52-54-00-AA-BB-CC",
            "pxe_guid": "00000000-0000-0000-0000-000000000000",
            "inventory": {"schema": schema.SCHEMA},
        }
    )
    assert cleaned["boot_mac"] == "52:54:00:aa:bb:cc"
    assert cleaned["pxe_guid"] is None
    with pytest.raises(protocol.UnsupportedProtocol):
        protocol.validate_registration({"protocol": True, "boot_mac": "52:54:00:aa:bb:cc"})
    with pytest.raises(protocol.AgentProtocolError, match="inventory"):
        protocol.validate_registration({"protocol": 1, "boot_mac": "52:54:00:aa:bb:cc"})


def test_events_result_and_job_messages():
    assert protocol.validate_events({"lines": ["a" * 10_000]})["lines"] == ["a" * 4096]
    with pytest.raises(protocol.AgentProtocolError, match="at most 1000"):
        protocol.validate_events({"lines": ["x"] * 1001})
    with pytest.raises(protocol.AgentProtocolError, match="progress"):
        protocol.validate_events({"progress": True})

    assert protocol.validate_result({"status": "failed"}) == {
        "status": "failed",
        "message": "",
        "data": {},
    }
    with pytest.raises(protocol.AgentProtocolError, match="message"):
        protocol.validate_result({"status": "failed", "message": 5})

    job = protocol.validate_job({"id": "j-1", "kind": "wait", "timeout_seconds": 30})
    assert job == {"id": "j-1", "kind": "wait", "params": {}, "timeout_seconds": 30}
    with pytest.raises(protocol.AgentProtocolError, match="timeout_seconds"):
        protocol.validate_job({"id": "j-1", "kind": "wait", "timeout_seconds": 0})
