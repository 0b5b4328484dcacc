"""Redfish provider logic against a BMC that misbehaves the way field BMCs do: refusing a
full PATCH body, answering 200 and keeping the old value, turning a one-time override into
a continuous one, applying power late or never, wrong credentials and certificates.

The BMC is the DMTF public-rackmount1 mockup from ../shared/corpus served over real HTTP
(and HTTPS) on 127.0.0.1 by tests/redfish_support.py, without the sandbox."""

import io
import json

import pytest

from providers.redfish import provider
from providers.redfish.client import BmcError, Client
from providers.redfish.system import System
from tests.redfish_support import (
    PASSWORD,
    USER,
    FakeBmc,
    Recorder,
    load_documents,
    self_signed_certificate,
)


@pytest.fixture
def bmc(corpus):
    with FakeBmc(load_documents(corpus, "dmtf")) as served:
        served.system()["Boot"]["BootSourceOverrideEnabled"] = "Disabled"
        served.system()["Boot"]["BootSourceOverrideTarget"] = "None"
        yield served


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def system_on(bmc, events=None, **options):
    client = Client("127.0.0.1", bmc.port, USER, PASSWORD, scheme="http")
    clock = FakeClock()
    return System(client, events or Recorder(), clock=clock, sleep=clock.sleep, **options)


def patches(bmc):
    return [body for method, _, body in bmc.requests if method == "PATCH"]


def boot_of(bmc):
    boot = bmc.system()["Boot"]
    return boot["BootSourceOverrideTarget"], boot["BootSourceOverrideEnabled"]


def test_pxe_once_sends_the_full_body_and_reads_it_back(bmc):
    outcome = system_on(bmc).boot_pxe_once(mode="UEFI")

    assert outcome["data"]["enabled"] == "Once"
    assert patches(bmc) == [
        {"Boot": {"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once",
                  "BootSourceOverrideMode": "UEFI"}}
    ]  # fmt: skip
    assert boot_of(bmc) == ("Pxe", "Once")


def test_a_refused_full_body_is_retried_with_the_minimal_one(bmc):
    bmc.refuse_full_patch = True
    events = Recorder()

    outcome = system_on(bmc, events).boot_pxe_once()

    # Minimal body first for the target; Enabled stayed Disabled, so the override can only
    # be kept as continuous, again through the minimal body.
    assert patches(bmc) == [
        {"Boot": {"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once"}},
        {"Boot": {"BootSourceOverrideTarget": "Pxe"}},
        {"Boot": {"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Continuous"}},
        {"Boot": {"BootSourceOverrideEnabled": "Continuous"}},
    ]
    assert boot_of(bmc) == ("Pxe", "Continuous")
    assert outcome["data"]["clear_after_boot"] is True
    assert any("refused the full Boot body (HTTP 400)" in w for w in events.warnings())


def test_a_bmc_that_answers_200_and_keeps_the_old_value_fails_the_job(bmc):
    bmc.ignore_boot_writes = True

    with pytest.raises(BmcError, match="accepted the change but reads back") as caught:
        system_on(bmc).boot_pxe_once()

    assert "'BootSourceOverrideTarget': 'None'" in str(caught.value)


def test_once_turned_continuous_warns_and_asks_for_a_clear_after_boot(bmc):
    bmc.once_becomes_continuous = True
    events = Recorder()
    system = system_on(bmc, events)

    outcome = system.boot_pxe_once()
    assert outcome["data"] == {"target": "Pxe", "enabled": "Continuous", "clear_after_boot": True}
    assert "run clear_boot_override after the machine has booted" in outcome["message"]
    assert any("did not keep a one-time override" in w for w in events.warnings())

    cleared = system.clear_boot_override()
    assert cleared["data"]["target"] == "None"
    assert boot_of(bmc)[0] == "None"


def test_pxe_not_offered_fails_before_any_write(bmc):
    bmc.system()["Boot"]["BootSourceOverrideTarget@Redfish.AllowableValues"] = ["Hdd", "Cd"]

    with pytest.raises(BmcError, match="does not offer Pxe"):
        system_on(bmc).boot_pxe_once()

    assert patches(bmc) == []


def test_power_changes_are_polled_until_they_land(bmc):
    bmc.power_delay_reads = 4

    outcome = system_on(bmc).power_off()

    assert outcome["data"] == {"reset_type": "ForceOff", "power_state": "Off"}
    system_reads = [p for m, p, _ in bmc.requests if m == "GET" and p == bmc.system_path]
    assert len(system_reads) >= 4


def test_power_that_never_lands_times_out_with_the_state_seen(bmc):
    bmc.power_delay_reads = 10**6

    with pytest.raises(BmcError, match=r"power is still On after 5 s \(expected Off\)"):
        system_on(bmc, power_timeout=5).power_off()


def test_power_on_when_already_on_writes_nothing(bmc):
    outcome = system_on(bmc).power_on()

    assert outcome["message"] == "power was already On"
    assert [m for m, _, _ in bmc.requests if m != "GET"] == []


def test_wrong_credentials_give_the_http_status(bmc):
    client = Client("127.0.0.1", bmc.port, USER, "wrong", scheme="http")

    with pytest.raises(BmcError, match="GET /redfish/v1: HTTP 401"):
        System(client, Recorder()).power_state()


def test_a_pinned_certificate_is_checked_before_anything_is_sent(corpus, tmp_path):
    cert, key, fingerprint = self_signed_certificate(tmp_path)
    with FakeBmc(load_documents(corpus, "dmtf"), tls=(cert, key)) as bmc:
        pinned = Client("127.0.0.1", bmc.port, USER, PASSWORD, fingerprint=fingerprint.upper())
        assert System(pinned, Recorder()).power_state()["data"] == {"power_state": "On"}
        seen = len(bmc.requests)

        wrong = Client("127.0.0.1", bmc.port, USER, PASSWORD, fingerprint="ab" * 32)
        with pytest.raises(BmcError, match="expected the pinned abab.*nothing was sent"):
            System(wrong, Recorder()).power_state()
        assert len(bmc.requests) == seen


def test_https_without_a_pin_needs_an_explicit_insecure_flag():
    with pytest.raises(ValueError, match="tls_fingerprint_sha256.*insecure"):
        Client("127.0.0.1", 443, USER, PASSWORD)


def run_provider(request):
    out = io.StringIO()
    provider.handle(request, provider.Events(out))
    return [json.loads(line) for line in out.getvalue().splitlines()]


@pytest.mark.parametrize(
    "request_, words",
    [
        ({"action": "explode", "params": {}}, "unknown action 'explode'"),
        ({"action": "power_on", "params": {"username": "a", "password": "b"}}, "params.host"),
        (
            {"action": "power_on", "params": {"host": "127.0.0.1", "username": "a",
                                              "password": "b", "port": True}},
            "params.port",
        ),
        (
            {"action": "power_on", "params": {"host": "127.0.0.1", "username": "a",
                                              "password": "b"}},
            "needs tls_fingerprint_sha256",
        ),
    ],
)  # fmt: skip
def test_bad_requests_end_in_one_clear_failed_result(request_, words):
    events = run_provider(request_)

    assert len(events) == 1
    assert events[0]["type"] == "result" and events[0]["status"] == "failed"
    assert words in events[0]["message"]


def test_the_provider_never_prints_the_password(bmc):
    params = {"host": "127.0.0.1", "port": bmc.port, "scheme": "http", "username": USER,
              "password": PASSWORD}  # fmt: skip
    events = run_provider({"action": "inventory", "params": params})

    assert events[-1]["status"] == "succeeded"
    assert events[-1]["data"]["system_path"] == "/redfish/v1/Systems/437XR1138R2"
    assert PASSWORD not in json.dumps(events)


@pytest.mark.parametrize(
    "path, key, value",
    [
        ("/redfish/v1/Systems", "Members", "not-a-list"),
        ("/redfish/v1/Systems/437XR1138R2", "Actions", ["not", "an", "object"]),
        ("/redfish/v1/Systems/437XR1138R2", "Boot", 42),
        ("/redfish/v1/Systems/437XR1138R2", "ProcessorSummary", "two"),
    ],
)
@pytest.mark.parametrize("action", ["power_off", "boot_pxe_once", "inventory"])
def test_documents_of_the_wrong_shape_give_one_failed_result(bmc, path, key, value, action):
    bmc.documents[path][key] = value
    params = {"host": "127.0.0.1", "port": bmc.port, "scheme": "http", "username": USER,
              "password": PASSWORD, "power_timeout_seconds": 3}  # fmt: skip

    events = run_provider({"action": action, "params": params})

    results = [e for e in events if e["type"] == "result"]
    assert len(results) == 1 and events[-1] is results[0]
    if results[0]["status"] == "failed":
        assert results[0]["message"]
