"""`cloudboot serve`: start every service of the appliance in one trio nursery.

Start-up checks come first and fail with one clear sentence (no such
interface, no IPv4 address, data directory not writable, port in use, not
permitted to bind). Once running, a failing request or packet is contained by
the service that received it; only a failure to start stops the appliance.
"""

import errno
import functools
import logging
import os
import signal
import socket
from pathlib import Path

import psutil
import trio

logger = logging.getLogger(__name__)


class StartupError(Exception):
    """The appliance cannot start; the message says why and what to change."""


def interface_address(name):
    """The first IPv4 address of interface `name`."""
    addresses = psutil.net_if_addrs()
    if name not in addresses:
        known = ", ".join(sorted(addresses)) or "none"
        raise StartupError(f"no such network interface {name!r} (interfaces here: {known})")

    for entry in addresses[name]:
        if entry.family == socket.AF_INET:
            return entry.address

    raise StartupError(f"interface {name!r} has no IPv4 address; the PXE plane needs one")


def prepare_data_dir(path):
    """Create the data directory (0700) and prove it is writable."""
    path = Path(path)
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise StartupError(f"data directory {path} is not writable: {e.strerror}") from None
    return path


def describe_bind_error(service, port, proto, error):
    """Turn an OSError from bind() into a sentence an operator can act on."""
    if error.errno == errno.EADDRINUSE:
        return f"{service}: port {port}/{proto} is already in use (another server running?)"
    if error.errno == errno.EACCES:
        return (
            f"{service}: not permitted to bind port {port}/{proto} "
            "(run as root or grant CAP_NET_BIND_SERVICE)"
        )
    if error.errno == errno.EADDRNOTAVAIL:
        return f"{service}: address for port {port}/{proto} is not on this machine"
    return f"{service}: cannot listen on port {port}/{proto}: {error.strerror or error}"


async def start_service(nursery, service, port, proto, fn, *args, **kwargs):
    try:
        return await nursery.start(functools.partial(fn, *args, **kwargs))
    except OSError as e:
        raise StartupError(describe_bind_error(service, port, proto, e)) from None


def main(settings):
    """Run until interrupted. Raises StartupError when a start-up check fails."""
    from appliance.core import audit_retention
    from keys import hygiene

    # Checked before anything starts, so a wrong flag costs no half-started services.
    interface_address(settings.server.interface)
    prepare_data_dir(settings.server.data_dir)
    try:
        audit_retention.check_retention(settings.audit.retention_days)
    except audit_retention.RetentionError as e:
        raise StartupError(str(e)) from None

    # No core dumps: a dump of this process could hold unwrapped data keys.
    hygiene.harden_process()

    try:
        trio.run(run, settings)
    except BaseExceptionGroup as group:
        # `except*` would wrap a re-raised error in a new group; take it out by hand.
        startup, _others = group.split(StartupError)
        if startup is None:
            raise
        raise _first_leaf(startup) from None


def _first_leaf(group):
    # Nurseries nest: the StartupError may sit several exception groups deep.
    while isinstance(group, BaseExceptionGroup):
        group = group.exceptions[0]
    return group


async def run(settings, *, task_status=trio.TASK_STATUS_IGNORED):
    from appliance import api, bootfiles, key_audit
    from appliance.boot import artifacts, dns, proxydhcp, tftp
    from appliance.core import engine
    from appliance.core.app import App
    from appliance.http import (
        Router,
        certificate_fingerprint,
        ensure_self_signed,
        make_ssl_context,
    )
    from appliance.http import serve as serve_http
    from appliance.store import Store
    from appliance.workers import WorkerPool

    address = interface_address(settings.server.interface)
    if not settings.server.advertise_address:
        settings.server.advertise_address = address
    data_dir = prepare_data_dir(settings.server.data_dir)
    for folder in (settings.tftp_root, settings.boot_root):
        folder.mkdir(parents=True, exist_ok=True)

    for path in bootfiles.missing(settings):
        logger.warning("boot file %s is missing: run `cloudboot bootfiles install`", path)

    # Every key event of this process goes to the audit log (appliance/key_audit.py).
    key_events = key_audit.ApplianceKeyAudit(data_dir)
    master = load_master_key(data_dir, key_events)
    store = await Store.open(data_dir / "cloudboot.db", settings.store)
    cert, key = _certificate(settings, data_dir, address, ensure_self_signed)
    fingerprint = certificate_fingerprint(cert)
    app = App(store=store, settings=settings)
    app.fingerprint = fingerprint
    app.address = address
    # The unseal API (appliance/api/keys.py) reaches the same master key source.
    app.master = master
    # Extra processes serving HTTPS beside this one (http.workers; appliance/workers.py).
    app.workers = WorkerPool(settings)
    app.keyring = key_audit.appliance_keyring(data_dir, master, key_events)
    logger.info(
        "appliance %s starting on %s (%s), certificate %s",
        store.appliance_id,
        settings.server.interface,
        address,
        fingerprint,
    )

    boot_router = Router()
    artifacts.register_routes(boot_router, settings, api.script_for_mac(app))
    api_router = Router()
    services = {}
    api.register_routes(api_router, app, readiness(services, master))

    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(key_events.run, store)
            await _start_all(
                nursery,
                settings,
                address,
                services,
                boot_router,
                api_router,
                app,
                make_ssl_context(cert, key),
                serve_http,
                proxydhcp,
                tftp,
                dns,
                engine,
            )
            await nursery.start(app.workers.run, api_router, (cert, key), address)
            logger.info(
                "appliance ready: http://%s:%d https://%s:%d",
                address,
                settings.server.http_port,
                address,
                settings.server.https_port,
            )
            task_status.started(app)
            nursery.start_soon(_stop_on_signal, nursery.cancel_scope)
    finally:
        with trio.CancelScope(shield=True):
            await key_events.drain()
            await store.close()
        if master is not None:
            master.close()


def load_master_key(data_dir, audit=None):
    """The master key source named by `keys init`, loaded without prompting; None if none.

    A dual-control source comes back sealed (officers unseal it after every
    restart); key-file and PKCS#11 sources are usable at once. A key file
    readable by others, a wrong PIN or a missing token stops the start here.
    """
    from keys import KeysError
    from keys.master import CONFIG_NAME, load_master

    if not (Path(data_dir) / "keys" / CONFIG_NAME).exists():
        return None
    try:
        return load_master(data_dir, audit)
    except KeysError as e:
        raise StartupError(f"master key: {e}") from None


def readiness(services, master):
    """The services_ready() callable /readyz asks: each started service, and the keys.

    "keys_unsealed" is false while a dual-control master key waits for its
    officers: boot files are still served, but every operation that needs a
    key is refused, so a load balancer must not count the appliance ready.
    """

    def services_ready():
        states = dict(services)
        states["keys_unsealed"] = master is None or not master.is_sealed()
        return states

    return services_ready


async def _start_all(
    nursery,
    settings,
    address,
    services,
    boot_router,
    api_router,
    app,
    ssl_context,
    serve_http,
    proxydhcp,
    tftp,
    dns,
    engine,
):
    if settings.dhcp.enabled:
        await start_service(
            nursery,
            "proxyDHCP",
            settings.dhcp.port,
            "udp",
            proxydhcp.serve,
            settings,
            address,
            settings.server.interface,
        )
        services["proxydhcp"] = True
    if settings.tftp.enabled:
        await start_service(
            nursery, "TFTP", settings.tftp.port, "udp", tftp.serve, settings, address
        )
        services["tftp"] = True
    await start_service(
        nursery,
        "HTTP",
        settings.server.http_port,
        "tcp",
        serve_http,
        boot_router,
        address,
        settings.server.http_port,
        settings.http,
    )
    services["http"] = True
    await start_service(
        nursery,
        "HTTPS",
        settings.server.https_port,
        "tcp",
        serve_http,
        api_router,
        address,
        settings.server.https_port,
        settings.http,
        ssl_context=ssl_context,
        reuse_port=app.workers.reuse_port,
        stats=app.workers.main_stats,
    )
    services["https"] = True
    if settings.dns.enabled:
        await start_service(nursery, "DNS", settings.dns.port, "udp", dns.serve, settings, address)
        services["dns"] = True
    await nursery.start(engine.run, app)
    services["jobs"] = True
    # BMC jobs (power, boot_pxe) run here on the appliance, never on an agent.
    from appliance.core import bmc

    await nursery.start(bmc.run, app)
    _start_records(nursery, app, settings)


def _start_records(nursery, app, settings):
    """Audit chain signing, retention, syslog forwarding and scheduled backups."""
    from appliance.backup import service as backups
    from appliance.core import audit_chain, audit_forward, audit_retention

    data_dir = settings.server.data_dir
    nursery.start_soon(
        audit_chain.sign_heads_forever, app.store, data_dir, settings.audit.sign_interval_seconds
    )
    nursery.start_soon(audit_retention.retention_forever, app.store, settings)
    nursery.start_soon(backups.run_backups_forever, app.store, settings)
    forwarder = audit_forward.forwarder_from_settings(app.store, settings)
    if forwarder is not None:
        nursery.start_soon(forwarder.run)


async def _stop_on_signal(cancel_scope):
    # SIGTERM from systemd or `timeout` ends the appliance the same way Ctrl-C
    # does: every service stops, and the store is closed cleanly.
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            logger.info("stopping on %s", signal.Signals(signum).name)
            cancel_scope.cancel()
            return


def _certificate(settings, data_dir, address, ensure_self_signed):
    if settings.http.tls_certificate:
        for path in (settings.http.tls_certificate, settings.http.tls_private_key):
            if not os.access(path, os.R_OK):
                raise StartupError(f"TLS file {path!r} is not readable")
        return settings.http.tls_certificate, settings.http.tls_private_key

    names = [settings.server.service_name, f"{settings.server.service_name}.{settings.dns.domain}"]
    return ensure_self_signed(data_dir, names, [address])
