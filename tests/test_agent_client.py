"""The agent's HTTPS client against a real TLS server on 127.0.0.1.

What a user relies on: the pinned certificate is the only one accepted, and
with a wrong one nothing (no token, no inventory) reaches the server; every
call carries the protocol header; errors arrive as the client's own classes
with a message fit for the console.
"""

import pytest

from bootos.agent.client import (
    AgentClient,
    PinMismatch,
    ProtocolMismatch,
    Rejected,
    Unauthorized,
    Unreachable,
)
from tests.agent_https import FakeAppliance, closed_port, make_certificate

INVENTORY = {"schema": "cloudboot.inventory/1", "system": {"serial": "SN1"}}


@pytest.fixture
def certificate(tmp_path):
    return make_certificate(tmp_path)


@pytest.fixture
def appliance(certificate):
    cert, key, _pin = certificate
    server = FakeAppliance(cert, key).start()
    yield server
    server.stop()


def test_register_with_the_right_pin_sends_the_registration(appliance, certificate):
    client = AgentClient(appliance.url, certificate[2])

    answer = client.register("52:54:00:12:34:56", None, INVENTORY)

    assert answer["machine_id"] == "m-1"
    assert client.token == appliance.token
    [request] = appliance.requests
    assert request["path"] == "/api/v1/agent/register"
    assert request["headers"]["X-CloudBoot-Agent-Protocol"] == "1"
    assert "Authorization" not in request["headers"]
    assert request["body"] == {
        "protocol": 1,
        "boot_mac": "52:54:00:12:34:56",
        "pxe_guid": None,
        "inventory": INVENTORY,
    }


def test_wrong_pin_refuses_before_sending_anything(appliance, tmp_path):
    _cert, _key, other_pin = make_certificate(tmp_path, name="impostor")
    client = AgentClient(appliance.url, other_pin)
    client.token = "secret-token"

    with pytest.raises(PinMismatch) as caught:
        client.register("52:54:00:12:34:56", None, INVENTORY)
    with pytest.raises(PinMismatch):
        client.next_job(wait=1)

    assert other_pin in str(caught.value)
    assert appliance.requests == []


def test_unreachable_appliance_says_connection_refused(certificate):
    client = AgentClient(f"https://127.0.0.1:{closed_port()}", certificate[2], timeout=2)

    with pytest.raises(Unreachable, match="connection refused"):
        client.register("52:54:00:12:34:56", None, INVENTORY)


def test_protocol_mismatch_carries_the_appliance_message(appliance, certificate):
    message = "X-CloudBoot-Agent-Protocol '1' is not supported; this appliance speaks version(s) 2"
    appliance.register_answer = (426, {"error": {"code": "x", "message": message}})
    client = AgentClient(appliance.url, certificate[2])

    with pytest.raises(ProtocolMismatch) as caught:
        client.register("52:54:00:12:34:56", None, INVENTORY)

    assert str(caught.value) == message


def test_long_poll_returns_none_on_204_then_the_job(appliance, certificate):
    client = AgentClient(appliance.url, certificate[2])
    client.register("52:54:00:12:34:56", None, INVENTORY)

    assert client.next_job(wait=1) is None
    appliance.jobs.put({"id": "j-1", "kind": "wait", "params": {"seconds": 3}})
    job = client.next_job(wait=1)

    assert job == {"id": "j-1", "kind": "wait", "params": {"seconds": 3}, "timeout_seconds": None}
    poll = appliance.requests[-1]
    assert poll["path"] == "/api/v1/agent/jobs/next?wait=1"
    assert poll["headers"]["Authorization"] == f"Bearer {appliance.token}"


def test_result_is_posted_with_its_data(appliance, certificate):
    client = AgentClient(appliance.url, certificate[2])
    client.register("52:54:00:12:34:56", None, INVENTORY)

    client.post_result("j/1", "succeeded", "done", {"inventory": INVENTORY})

    assert appliance.requests[-1]["path"] == "/api/v1/agent/jobs/j%2F1/result"
    assert appliance.requests[-1]["body"] == {
        "status": "succeeded",
        "message": "done",
        "data": {"inventory": INVENTORY},
    }


@pytest.mark.parametrize(
    ("status", "error"),
    [(401, Unauthorized), (403, Unauthorized), (400, Rejected), (503, Unreachable)],
)
def test_error_statuses_map_to_client_errors(appliance, certificate, status, error):
    client = AgentClient(appliance.url, certificate[2])
    client.token = appliance.token
    appliance.poll_answers.put((status, {"error": {"code": "c", "message": "said no"}}))

    with pytest.raises(error, match="said no"):
        client.next_job(wait=1)


def test_a_malformed_job_is_rejected_not_crashed_on(appliance, certificate):
    client = AgentClient(appliance.url, certificate[2])
    client.token = appliance.token
    appliance.poll_answers.put((200, {"job": {"kind": "reboot"}}))

    with pytest.raises(Rejected, match="job id"):
        client.next_job(wait=1)


def test_plain_http_url_is_refused():
    with pytest.raises(ValueError, match="https"):
        AgentClient("http://192.0.2.1", "sha256:" + "0" * 64)
