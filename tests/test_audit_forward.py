"""Audit forwarding as RFC 5424 syslog, against a real rsyslog started on loopback."""

import re
import socket
import ssl

import pytest
import trio

from appliance.core import audit_forward
from tests.audit_support import add_events, open_store
from tests.syslog_support import Rsyslog, free_port

SEQ = re.compile(r'seq="(\d+)"')


def _event(**changes):
    event = {
        "id": 7,
        "at": "2026-12-04T10:00:00.123456Z",
        "actor": "alice",
        "action": "machine.approve",
        "resource_type": "machine",
        "resource_id": "m-1",
        "result": "denied",
        "trace_id": "t-1",
        "source": "192.0.2.1",
        "details": {"why": "ünïcode"},
        "prev_hash": "0" * 64,
        "hash": "ab" * 32,
    }
    return {**event, **changes}


def test_message_follows_rfc5424():
    message = audit_forward.format_message(_event(actor='eve "the" [admin]\\'), "cb 1")
    header, _, body = message.partition(b" \xef\xbb\xbf")
    # PRI 13*8+4 (log audit, warning for a denied request), version 1.
    assert header.startswith(b"<108>1 2026-12-04T10:00:00.123456Z cb1 cloudboot - ")
    assert b'actor="eve \\"the\\" [admin\\]\\\\"' in header
    assert b'seq="7"' in header and b"[cloudboot@32473 " in header
    assert body.decode() == '{"why": "ünïcode"}'
    assert audit_forward.frame(b"abc") == b"3 abc"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tls://127.0.0.1:6514", ("tls", "127.0.0.1", 6514)),
        ("tcp://collector.bank", ("tcp", "collector.bank", 514)),
        ("udp://[::1]:5514", ("udp", "::1", 5514)),
    ],
)
def test_targets(text, expected):
    target = audit_forward.parse_target(text)
    assert (target.transport, target.host, target.port) == expected


@pytest.mark.parametrize("text", ["", "http://x", "tls://", "tcp://host:99999"])
def test_bad_targets_are_refused(text):
    with pytest.raises(audit_forward.ForwardError):
        audit_forward.parse_target(text)


async def _wait_for(rsyslog, wanted, seconds=20):
    with trio.move_on_after(seconds):
        while True:
            got = [int(m) for line in rsyslog.messages() for m in SEQ.findall(line)]
            if wanted <= set(got):
                return got
            await trio.sleep(0.1)
    got = [int(m) for line in rsyslog.messages() for m in SEQ.findall(line)]
    raise AssertionError(f"collector got {sorted(set(got))}, missing {sorted(wanted - set(got))}")


async def test_tls_forwarding_survives_the_collector_being_down(tmp_path):
    port = free_port()
    rsyslog = Rsyslog(tmp_path, port, "tls")
    store = await open_store(tmp_path)
    target = audit_forward.parse_target(f"tls://127.0.0.1:{port}")
    context = ssl.create_default_context(cafile=str(rsyslog.cert))
    forwarder = audit_forward.Forwarder(store, target, "cloudboot", context, poll_seconds=0.05)

    try:
        async with trio.open_nursery() as nursery:
            # The collector is down at first: events wait in the queue.
            await add_events(store, 30)
            nursery.start_soon(forwarder.run, 0.2)
            await trio.sleep(0.5)
            assert forwarder.sent == 0

            await trio.to_thread.run_sync(rsyslog.start)
            got = await _wait_for(rsyslog, set(range(1, 31)))
            assert got[:30] == list(range(1, 31)), "events arrived out of order"

            # The collector dies; events written meanwhile arrive once it is back.
            await trio.to_thread.run_sync(rsyslog.kill)
            await add_events(store, 20, actor="bob")
            await trio.sleep(0.5)
            await trio.to_thread.run_sync(rsyslog.start)
            await _wait_for(rsyslog, set(range(1, 51)))
            # The collector has them all; the forwarder records its cursor after
            # the send returns, so wait for that before stopping it.
            with trio.fail_after(30):
                while await store.read(audit_forward.cursor, target.name) != 50:
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    finally:
        rsyslog.kill()

    lines = rsyslog.messages()
    assert any('actor="bob"' in line for line in lines)
    assert all(line.startswith("<110>1 ") for line in lines)
    # The kill was noticed (the batch was not acknowledged) and the batch sent again.
    assert forwarder.reconnects >= 1
    await store.close()


async def test_udp_forwarding_is_best_effort_but_works(tmp_path):
    port = free_port(kind=socket.SOCK_DGRAM)
    rsyslog = Rsyslog(tmp_path, port, "udp")
    await trio.to_thread.run_sync(rsyslog.start)
    store = await open_store(tmp_path)
    target = audit_forward.parse_target(f"udp://127.0.0.1:{port}")
    forwarder = audit_forward.Forwarder(store, target, "cloudboot", poll_seconds=0.05)
    try:
        await trio.sleep(0.5)  # imudp binds after start() returns
        await add_events(store, 5)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(forwarder.run, 0.2)
            await _wait_for(rsyslog, set(range(1, 6)))
            nursery.cancel_scope.cancel()
    finally:
        rsyslog.kill()
    await store.close()


async def test_forwarding_settings(tmp_path):
    from appliance.config import Settings

    settings = Settings()
    assert audit_forward.forwarder_from_settings(None, settings) is None
    settings.audit.forward_target = "tls://127.0.0.1:6514"
    settings.audit.forward_ca_file = str(tmp_path / "missing.pem")
    with pytest.raises(audit_forward.ForwardError, match="forward_ca_file cannot be used"):
        audit_forward.forwarder_from_settings(None, settings)
    settings.audit.forward_target = "udp://127.0.0.1:5514"
    forwarder = audit_forward.forwarder_from_settings(None, settings)
    assert forwarder.target.transport == "udp" and forwarder.hostname == "cloudboot"
