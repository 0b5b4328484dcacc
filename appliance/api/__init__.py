"""The REST API under /api/v1, and the per-machine iPXE script decision.

Each module registers its own routes; this package only puts them together,
so serve.py has one call to make.
"""

import logging

from appliance.proto import bootparams, ipxe

logger = logging.getLogger(__name__)


def register_routes(router, app, services_ready):
    from appliance.api import agent, audit, auth, health, jobs, keys, machines, metrics, openapi
    from appliance.api._accounting import AccountingRouter

    # Every handler counted per route, and refusals (and reads, when set) audited.
    router = AccountingRouter(router, app)
    from appliance.api import bmc as bmc_settings

    health.register_routes(router, app, services_ready)
    agent.register_routes(router, app)
    auth.register_routes(router, app)
    machines.register_routes(router, app)
    jobs.register_routes(router, app)
    bmc_settings.register_routes(router, app)
    audit.register_routes(router, app)
    keys.register_routes(router, app)
    metrics.register_routes(router, app)
    openapi.register_routes(router, app)


def script_for_mac(app):
    """Return the async callable the boot plane asks for a machine's iPXE script."""
    from appliance.boot import artifacts
    from appliance.core import machines

    settings = app.settings
    address = settings.server.advertise_address
    boot_base = f"http://{address}:{settings.server.http_port}/boot/bootos"
    api_url = f"https://{address}:{settings.server.https_port}"

    async def render(mac):
        state = await machines.boot_state_for_mac(app.store, mac)
        if state == "deployed":
            logger.info("ipxe: %s is deployed, booting from local disk", mac)
            return ipxe.render_local_disk_script()

        cmdline = bootparams.format_cmdline(api_url, app.fingerprint, mac)
        return ipxe.render_bootos_script(
            f"{boot_base}/vmlinuz",
            f"{boot_base}/initrd.img",
            f"{cmdline} {artifacts.BOOTOS_CONSOLES}",
        )

    return render
