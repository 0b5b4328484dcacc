"""Adversarial pass on audit forwarding over RELP: a hostile collector on loopback.

A collector that acknowledges nothing must not hold the forwarder for good, however it
fills the silence: the forwarder drops the connection after its acknowledgement timeout
and tries again, and every event stays queued. Here the collector accepts `open`, then
answers each syslog frame with the start of an `rsp` whose data it sends one byte at a
time (a slowloris): bytes keep coming, an acknowledgement never does.
"""

import contextlib
import types

import pytest
import trio

from appliance.api._accounting import GLOBAL_PER_MINUTE, REFUSALS_PER_MINUTE, AccountingRouter
from appliance.config import Settings
from appliance.core import audit, audit_forward, relp
from appliance.http import HttpError, Router
from tests.audit_support import add_events, open_store


async def _dripping_collector(task_status=trio.TASK_STATUS_IGNORED):
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])

    async def session(stream):
        reader = relp.FrameReader()
        async with stream:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                while data := await stream.receive_some(65536):
                    for frame in reader.feed(data):
                        if frame.command == "open":
                            answer = b"200 OK\ncommands=syslog"
                            await stream.send_all(relp.encode_frame(frame.txnr, "rsp", answer))
                        else:
                            await _drip(stream, frame.txnr)

    await trio.serve_listeners(session, listeners)


async def _drip(stream, txnr):
    # An rsp that would be 1 MiB long, sent a byte at a time: never a whole frame.
    await stream.send_all(f"{txnr} rsp 1000000 ".encode())
    while True:
        await stream.send_all(b"2")
        await trio.sleep(0.02)


async def test_a_collector_dripping_bytes_without_acknowledging_is_dropped(tmp_path, monkeypatch):
    monkeypatch.setattr(audit_forward, "ACK_TIMEOUT_SECONDS", 0.5)
    store = await open_store(tmp_path)
    await add_events(store, 3)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(_dripping_collector)
        target = audit_forward.parse_target(f"relp://127.0.0.1:{port}")
        forwarder = audit_forward.Forwarder(store, target, "cloudboot", poll_seconds=0.05)
        nursery.start_soon(forwarder.run, 0.1)
        # A bound against a hang, far above the 0.5 s acknowledgement timeout.
        with trio.move_on_after(30):
            while forwarder.reconnects < 1:
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()

    assert forwarder.reconnects >= 1, "the forwarder waited on the dripping collector for good"
    assert await store.read(audit_forward.cursor, target.name) == 0
    assert forwarder.sent == 0
    await store.close()


# -- request.refused rate bound: one source must not silence another -----------------


def _request(source, trace_id):
    return types.SimpleNamespace(
        client=(source, 40000), trace_id=trace_id, state={}, path_params={}, query={}
    )


async def _refuse(request):
    raise HttpError(403, "forbidden", "this token's role may not do that")


async def test_a_flood_from_one_source_does_not_hide_another_sources_refusal(tmp_path):
    store = await open_store(tmp_path)
    app = types.SimpleNamespace(store=store, settings=Settings())
    router = AccountingRouter(Router(), app)
    routes = GLOBAL_PER_MINUTE // REFUSALS_PER_MINUTE + 1
    for n in range(routes):
        router.add("POST", f"/api/v1/flood{n}", _refuse)
    router.add("POST", "/api/v1/keys/unseal", _refuse)

    for n in range(routes):
        handler, _ = router.resolve("POST", f"/api/v1/flood{n}")
        for k in range(REFUSALS_PER_MINUTE):
            with pytest.raises(HttpError):
                await handler(_request("192.0.2.66", f"flood-{n}-{k}"))
    handler, _ = router.resolve("POST", "/api/v1/keys/unseal")
    with pytest.raises(HttpError):
        await handler(_request("198.51.100.7", "the-real-one"))

    found, _ = await store.read(
        lambda conn: audit.search(conn, action="request.refused", limit=1000)
    )
    assert "the-real-one" in {event["trace_id"] for event in found}
    await store.close()
