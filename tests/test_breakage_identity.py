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
