"""Identity scoring as pure functions: signals, weights, contradictions, byte orders."""

from appliance.core import identity
from appliance.core.identity import Signal
from tests.identity_support import inventory

AMI_UUID = "03000200-0400-0500-0006-000700080009"


def kinds(signals):
    return sorted({s.kind for s in signals})


def test_placeholder_serials_and_untrusted_uuids_give_no_signal():
    for uuid in (
        AMI_UUID,
        "00000000-0000-0000-0000-000000000000",
        "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF",
        "00000000-0000-0000-0000-525400123456",
    ):
        document = inventory(
            uuid=uuid,
            system_serial="  System Serial Number ",
            chassis_serial="Default string",
            board_serial="To be filled by O.E.M.",
            nics=["52:54:00:12:34:56"],
        )
        assert kinds(identity.signals(document)) == ["mac"], uuid


def test_raw_values_are_also_cleaned_by_identity_itself():
    # The core must not rely on the agent having cleaned the document.
    raw = inventory(
        uuid="  " + AMI_UUID.upper() + " ",
        system_serial="0123456789",
        chassis_serial="To Be Filled By O.E.M.",
        board_serial="--",
        nics=["52:54:00:00:00:01"],
        clean=False,
    )
    assert kinds(identity.signals(raw)) == ["mac"]


def test_serials_compare_trimmed_and_case_folded():
    a = identity.signals(inventory(system_serial="  abC123 "))
    b = identity.signals(inventory(system_serial="ABC123"))
    assert a == b == [Signal("system_serial", "abc123")]


def test_permanent_mac_is_preferred_over_current():
    document = inventory(nics=[("02:00:00:00:00:99", "52:54:00:00:00:01")])
    assert identity.signals(document) == [Signal("mac", "52:54:00:00:00:01")]


def test_multicast_and_zero_macs_are_not_identities():
    document = inventory(nics=["01:00:5e:00:00:01", "00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff"])
    assert identity.signals(document) == []


def test_one_mac_in_common_is_enough_when_nothing_else_is_known():
    mine = [Signal("mac", "52:54:00:00:00:01")]
    decision = identity.decide(mine, {"m-1": mine})
    assert decision.machine_id == "m-1"


def test_a_chassis_serial_alone_never_matches():
    # Every blade in an enclosure reports the enclosure's serial in its chassis record.
    new = [Signal("chassis_serial", "enc1"), Signal("mac", "52:54:00:00:00:02")]
    known = [Signal("chassis_serial", "enc1"), Signal("mac", "52:54:00:00:00:01")]
    decision = identity.decide(new, {"m-1": known})
    assert decision.machine_id is None
    assert decision.shared == {"m-1": [Signal("chassis_serial", "enc1")]}


def test_a_different_uuid_contradicts_however_much_else_is_shared():
    shared = [Signal("mac", f"52:54:00:00:00:0{i}") for i in range(4)]
    new = [Signal("uuid", "4c4c4544-0000-1111-2222-333333333333"), *shared]
    known = [Signal("uuid", "4c4c4544-0000-1111-2222-444444444444"), *shared]
    assert identity.decide(new, {"m-1": known}).machine_id is None


def test_the_best_scoring_candidate_wins_and_others_stay_visible():
    new = [Signal("system_serial", "s1"), Signal("mac", "52:54:00:00:00:01")]
    decision = identity.decide(
        new,
        {
            "m-a": [Signal("system_serial", "s1"), Signal("mac", "52:54:00:00:00:01")],
            "m-b": [Signal("mac", "52:54:00:00:00:01"), Signal("system_serial", "s2")],
        },
    )
    assert decision.machine_id == "m-a"
    assert decision.score == 55
    assert list(decision.shared) == ["m-b"]


def test_uuid_byte_order_swap_and_pxe_guid_match():
    smbios = "4c4c4544-0042-3510-8053-b4c04f595231"
    swapped = "44454c4c-4200-1035-8053-b4c04f595231"
    assert identity.uuid_other_byte_order(smbios) == swapped
    assert identity.uuid_other_byte_order(swapped) == smbios
    assert identity.pxe_guid_matches(swapped, smbios) is True
    assert identity.pxe_guid_matches(smbios.upper(), smbios) is True
    assert identity.pxe_guid_matches("11111111-2222-3333-4444-555555555555", smbios) is False
    assert identity.pxe_guid_matches(None, smbios) is None


def test_a_machine_known_only_by_its_mac_is_found_when_it_reports_more():
    # First registration carried no inventory (only the boot MAC); the next is complete.
    known = [Signal("mac", "52:54:00:00:00:01")]
    new = [
        Signal("uuid", "4c4c4544-0042-3510-8053-b4c04f595231"),
        Signal("system_serial", "cz1234"),
        Signal("mac", "52:54:00:00:00:01"),
    ]
    assert identity.required_score(new, known) == 25
    assert identity.decide(new, {"m-1": known}).machine_id == "m-1"
    # With two full records on each side, one shared MAC is not enough.
    other = [Signal("uuid", "11111111-2222-4333-8444-555555555555"), known[0]]
    assert identity.required_score(new, other) == 50
