"""Adversarial registration: a thin or replayed identity must not take over a known machine.

Registration carries no secret. The boot MAC is sent in clear in every
DHCPDISCOVER and the SMBIOS UUID in option 97, so anyone on the PXE network
can repeat both. Before the fix, a registration with only a victim's MAC (or
MAC plus sniffed UUID) matched the victim, revoked its agent token and handed
the attacker a fresh token and the victim's queued jobs.
"""

import pytest

from appliance.core import auth, engine, identity, jobs, machines
from appliance.core.identity import Signal
from appliance.proto import agent as protocol
from appliance.store import Store
from appliance.store import now as store_now
from tests.identity_support import inventory, registration

VICTIM_MAC = "52:54:00:aa:00:01"
VICTIM_UUID = "4c4c4544-0042-3510-8052-b4c04f333232"


@pytest.fixture
async def store(tmp_path):
    store = await Store.open(tmp_path / "cloudboot.db")
    yield store
    await store.close()


async def register(store, document, boot_mac):
    message = protocol.validate_registration(registration(document, boot_mac))
    return await machines.register(store, message, "127.0.0.1", ttl_days=30)


async def approved_victim(store):
    document = inventory(uuid=VICTIM_UUID, system_serial="VICTIM-SN-1", nics=[VICTIM_MAC])
    victim = await register(store, document, VICTIM_MAC)
    await machines.approve(store, victim["machine_id"], "operator-user")
    return victim


def test_a_lone_mac_does_not_match_a_machine_known_by_more():
    known = [
        Signal("uuid", VICTIM_UUID),
        Signal("system_serial", "victim-sn-1"),
        Signal("mac", VICTIM_MAC),
    ]
    assert identity.decide([Signal("mac", VICTIM_MAC)], {"m-1": known}).machine_id is None


def test_a_known_serial_must_be_reported_again():
    # MAC and UUID are both on the wire (DHCP chaddr, option 97); the serial is not.
    known = [
        Signal("uuid", VICTIM_UUID),
        Signal("system_serial", "victim-sn-1"),
        Signal("mac", VICTIM_MAC),
    ]
    sniffed = [Signal("uuid", VICTIM_UUID), Signal("mac", VICTIM_MAC)]
    decision = identity.decide(sniffed, {"m-1": known})
    assert decision.machine_id is None
    assert list(decision.shared) == ["m-1"]


async def test_registering_with_a_victims_mac_gets_neither_its_token_nor_its_jobs(store):
    victim = await approved_victim(store)
    job, _ = await jobs.create_job(
        store, "operator-user", {"machine_id": victim["machine_id"], "kind": "inventory"}
    )

    attacker = await register(store, inventory(nics=[]), VICTIM_MAC)

    assert attacker["machine_id"] != victim["machine_id"]
    assert attacker["approved"] is False
    # The victim's agent token still works, and its agent is the one that gets the job.
    principal = await store.read(
        auth.principal_for_digest, auth.hash_token(victim["token"]), store_now()
    )
    assert principal.machine_id == victim["machine_id"]
    handed = await engine.next_job_for_machine(store, victim["machine_id"], 0)
    assert handed["id"] == job["id"]


async def test_the_same_machine_rebooting_is_still_recognised(store):
    victim = await approved_victim(store)
    again = await approved_victim(store)
    assert again["machine_id"] == victim["machine_id"]
    assert again["approved"] is True


def test_two_candidates_with_the_same_best_score_are_a_new_machine():
    mine = [Signal("mac", VICTIM_MAC)]
    decision = identity.decide(mine, {"m-a": mine, "m-b": mine})
    assert decision.machine_id is None
    assert sorted(decision.shared) == ["m-a", "m-b"]


async def test_an_inventory_job_cannot_plant_another_machines_identity(store):
    victim = await approved_victim(store)
    attacker_mac = "52:54:00:aa:00:09"
    attacker_document = inventory(
        uuid="4c4c4544-0042-3510-8052-a00000000009", system_serial="ATT-9", nics=[attacker_mac]
    )
    attacker = await register(store, attacker_document, attacker_mac)
    await machines.approve(store, attacker["machine_id"], "operator-user")
    job, _ = await jobs.create_job(
        store, "operator-user", {"machine_id": attacker["machine_id"], "kind": "inventory"}
    )
    await engine.next_job_for_machine(store, attacker["machine_id"], 0)

    # The attacker's agent answers the inventory job with the victim's identity.
    stolen = inventory(uuid=VICTIM_UUID, system_serial="VICTIM-SN-1", nics=[VICTIM_MAC])
    await engine.report_job_result(
        store, attacker["machine_id"], job["id"], "succeeded", "", {"inventory": stolen}
    )

    ended = await jobs.get_job(store, job["id"])
    assert ended["state"] == "failed"
    assert "rejected the inventory" in ended["message"]
    # The victim, registering honestly again, is still itself.
    again = await register(
        store,
        inventory(uuid=VICTIM_UUID, system_serial="VICTIM-SN-1", nics=[VICTIM_MAC]),
        VICTIM_MAC,
    )
    assert again["machine_id"] == victim["machine_id"]
