"""Audit forwarding over RELP, against a real rsyslog with imrelp started on 127.0.0.1.

A scripted RELP peer on loopback stands in where rsyslog cannot be made to
misbehave on purpose (an `rsp 500`, bytes that are not RELP).
"""

import contextlib
import logging
import re

import pytest
import trio

from appliance.config import Settings
from appliance.core import audit_forward, relp
from tests.audit_support import add_events, open_store
from tests.syslog_support import Rsyslog, free_port

SEQ = re.compile(r'seq="(\d+)"')


def _seqs(rsyslog):
    return [int(m) for line in rsyslog.messages() for m in SEQ.findall(line)]


async def _wait_for(rsyslog, wanted, seconds=30):
    with trio.move_on_after(seconds):
        while not wanted <= set(_seqs(rsyslog)):
            await trio.sleep(0.1)
    got = _seqs(rsyslog)
    assert wanted <= set(got), f"collector got {sorted(set(got))}, missing {wanted - set(got)}"
    return got


async def _wait_cursor(store, target, last_id, seconds=30):
    with trio.fail_after(seconds):
        while await store.read(audit_forward.cursor, target.name) != last_id:
            await trio.sleep(0.05)


def _forwarder(store, port):
    target = audit_forward.parse_target(f"relp://127.0.0.1:{port}")
    return audit_forward.Forwarder(store, target, "cloudboot", poll_seconds=0.05)


async def test_events_arrive_once_each_in_order(tmp_path):
    port = free_port()
    rsyslog = Rsyslog(tmp_path, port, "relp")
    await trio.to_thread.run_sync(rsyslog.start)
    store = await open_store(tmp_path)
    forwarder = _forwarder(store, port)
    try:
        await add_events(store, 300)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(forwarder.run, 0.2)
            await _wait_cursor(store, forwarder.target, 300)
            nursery.cancel_scope.cancel()
    finally:
        rsyslog.kill()

    assert _seqs(rsyslog) == list(range(1, 301))
    assert forwarder.sent == 300 and forwarder.reconnects == 0
    assert all(line.startswith("<110>1 ") for line in rsyslog.messages())
    await store.close()


async def test_a_stopped_collector_queues_events_and_loses_none(tmp_path):
    port = free_port()
    rsyslog = Rsyslog(tmp_path, port, "relp")
    store = await open_store(tmp_path)
    forwarder = _forwarder(store, port)
    try:
        async with trio.open_nursery() as nursery:
            # The collector is down at first: events wait in the queue.
            await add_events(store, 40)
            nursery.start_soon(forwarder.run, 0.2)
            await trio.sleep(0.5)
            assert forwarder.sent == 0
            assert await store.read(audit_forward.cursor, forwarder.target.name) == 0

            await trio.to_thread.run_sync(rsyslog.start)
            await _wait_cursor(store, forwarder.target, 40)

            # Stopped (SIGTERM: imrelp sends serverclose); events written meanwhile
            # arrive once it is back.
            await trio.to_thread.run_sync(rsyslog.stop)
            await add_events(store, 25, actor="bob")
            await trio.sleep(0.5)
            assert await store.read(audit_forward.cursor, forwarder.target.name) == 40
            await trio.to_thread.run_sync(rsyslog.start)
            await _wait_cursor(store, forwarder.target, 65)
            nursery.cancel_scope.cancel()
    finally:
        rsyslog.kill()

    got = _seqs(rsyslog)
    assert set(got) == set(range(1, 66))
    assert sum('actor="bob"' in line for line in rsyslog.messages()) >= 25
    assert forwarder.reconnects >= 1
    await store.close()


async def test_a_collector_killed_mid_stream_loses_nothing(tmp_path):
    port = free_port()
    rsyslog = Rsyslog(tmp_path, port, "relp")
    await trio.to_thread.run_sync(rsyslog.start)
    store = await open_store(tmp_path)
    forwarder = _forwarder(store, port)
    total = 3000
    try:
        await add_events(store, total)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(forwarder.run, 0.2)

            # SIGKILL once part of the stream is written and the rest is in flight.
            with trio.fail_after(60):
                while len(_seqs(rsyslog)) < 50 or not await store.read(
                    audit_forward.cursor, forwarder.target.name
                ):
                    await trio.sleep(0.01)
            await trio.to_thread.run_sync(rsyslog.kill)
            # The daemon is dead: its file holds all it will ever hold of this run.
            written_before_restart = set(_seqs(rsyslog))
            cursor_at_kill = await store.read(audit_forward.cursor, forwarder.target.name)

            await add_events(store, 10, actor="after-kill")
            await trio.to_thread.run_sync(rsyslog.start)
            await _wait_cursor(store, forwarder.target, total + 10, seconds=120)
            nursery.cancel_scope.cancel()
    finally:
        rsyslog.kill()

    # RELP's promise: an event the collector acknowledged (the cursor moves only on
    # its rsp 200) was in its file when it died, not merely in its socket buffer.
    assert set(range(1, cursor_at_kill + 1)) <= written_before_restart
    # And after the restart nothing is missing; repeats carry their seq again.
    assert set(_seqs(rsyslog)) == set(range(1, total + 11))
    await store.close()


async def test_relp_over_tls(tmp_path):
    port = free_port()
    rsyslog = Rsyslog(tmp_path, port, "relp+tls")
    await trio.to_thread.run_sync(rsyslog.start)
    store = await open_store(tmp_path)
    # Through the settings, as serve.py builds it. librelp asks the client for a
    # certificate once it has one itself (mutual TLS); the test's self-signed
    # collector certificate is also the CA it trusts, so it serves as the client's.
    settings = Settings()
    settings.audit.forward_target = f"relp+tls://127.0.0.1:{port}"
    settings.audit.forward_ca_file = str(rsyslog.cert)
    settings.audit.forward_cert_file = str(rsyslog.cert)
    settings.audit.forward_key_file = str(rsyslog.key)
    forwarder = audit_forward.forwarder_from_settings(store, settings)
    forwarder.poll_seconds = 0.05
    try:
        await add_events(store, 20)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(forwarder.run, 0.2)
            await _wait_cursor(store, forwarder.target, 20)
            nursery.cancel_scope.cancel()
    finally:
        rsyslog.kill()
    assert _seqs(rsyslog) == list(range(1, 21))
    await store.close()


def test_a_client_certificate_that_cannot_be_loaded_is_refused(tmp_path):
    settings = Settings()
    settings.audit.forward_target = "relp+tls://127.0.0.1:2514"
    settings.audit.forward_cert_file = str(tmp_path / "missing.pem")
    with pytest.raises(audit_forward.ForwardError, match="forward_cert_file"):
        audit_forward.forwarder_from_settings(None, settings)


def test_relp_targets():
    target = audit_forward.parse_target("relp://collector.bank")
    assert (target.transport, target.port) == ("relp", 2514)
    assert audit_forward.parse_target("relp+tls://[::1]:20514").host == "::1"


# -- a scripted peer for what rsyslog will not do on request ------------------------


async def _scripted_collector(answer_syslog, task_status=trio.TASK_STATUS_IGNORED):
    """A RELP peer on 127.0.0.1 that accepts open and answers syslog frames with
    `answer_syslog(frame)` (bytes to send back)."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])

    async def session(stream):
        reader = relp.FrameReader()
        async with stream:
            # The forwarder drops the connection on a bad answer: that ends the session.
            with contextlib.suppress(trio.BrokenResourceError):
                while data := await stream.receive_some(65536):
                    for frame in reader.feed(data):
                        await stream.send_all(_answer(frame, answer_syslog))

    await trio.serve_listeners(session, listeners)


def _answer(frame, answer_syslog):
    if frame.command == "open":
        return relp.encode_frame(frame.txnr, "rsp", b"200 OK\ncommands=syslog")
    return answer_syslog(frame)


async def test_a_refused_message_stays_queued_with_a_clear_log_line(tmp_path, caplog):
    def refuse(frame):
        return relp.encode_frame(frame.txnr, "rsp", b"500 message too large for this ruleset")

    store = await open_store(tmp_path)
    await add_events(store, 3)
    caplog.set_level(logging.ERROR, logger="appliance.core.audit_forward")
    async with trio.open_nursery() as nursery:
        port = await nursery.start(_scripted_collector, refuse)
        forwarder = _forwarder(store, port)
        nursery.start_soon(forwarder.run, 0.1)
        with trio.fail_after(30):
            while forwarder.reconnects < 2:
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()

    assert await store.read(audit_forward.cursor, forwarder.target.name) == 0
    assert forwarder.sent == 0
    lines = [r.getMessage() for r in caplog.records]
    assert any(
        "refused audit event seq=1: 500 message too large" in line and "stay queued" in line
        for line in lines
    ), lines
    await store.close()


@pytest.mark.parametrize("garbage", [b"HTTP/1.1 400 Bad Request\r\n\r\n", b"2 rsp 6 2OO OK\n"])
async def test_a_peer_that_does_not_speak_relp_is_reported(tmp_path, caplog, garbage):
    store = await open_store(tmp_path)
    await add_events(store, 2)
    caplog.set_level(logging.ERROR, logger="appliance.core.audit_forward")
    async with trio.open_nursery() as nursery:
        port = await nursery.start(_scripted_collector, lambda frame: garbage)
        forwarder = _forwarder(store, port)
        nursery.start_soon(forwarder.run, 0.1)
        with trio.fail_after(30):
            while forwarder.reconnects < 1:
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()

    assert await store.read(audit_forward.cursor, forwarder.target.name) == 0
    assert any("RELP" in r.getMessage() for r in caplog.records), caplog.records
    await store.close()
