"""Adversarial review of syslog forwarding: a collector that accepts and then stalls."""

import ssl
from functools import partial

import trio

from appliance.core import audit_forward
from tests.audit_support import add_events, open_store


async def _silent_collector(accepted, stream):
    # Accepts the connection, then neither answers the TLS handshake nor reads.
    accepted.append(stream)
    await trio.sleep_forever()


async def test_a_collector_that_never_answers_the_handshake_is_dropped_and_retried(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(audit_forward, "SEND_TIMEOUT_SECONDS", 0.5, raising=False)
    store = await open_store(tmp_path)
    await add_events(store, 3)
    accepted = []

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_tcp, host="127.0.0.1"), partial(_silent_collector, accepted), 0
        )
        port = listeners[0].socket.getsockname()[1]
        target = audit_forward.parse_target(f"tls://127.0.0.1:{port}")
        forwarder = audit_forward.Forwarder(
            store, target, "cloudboot", ssl.create_default_context(), poll_seconds=0.05
        )
        nursery.start_soon(forwarder.run, 0.1)
        with trio.move_on_after(5):
            while forwarder.reconnects < 2:
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()

    assert forwarder.reconnects >= 2, "the forwarder stayed stuck on the silent collector"
    assert len(accepted) >= 2
    assert await store.read(audit_forward.cursor, target.name) == 0
    await store.close()
