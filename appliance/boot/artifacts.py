"""HTTP handlers for the boot plane: boot files and per-machine iPXE scripts.

    GET|HEAD /boot/<relative path>   a file under settings.boot_root, with Range
    GET      /ipxe/<mac>.ipxe        the iPXE script for that NIC

No token is needed here (firmware cannot present one), so these handlers must
never serve anything outside the boot root: `..`, encoded dots or slashes,
hidden files and symlinks that lead out of the root are refused and logged.
Which script a MAC gets is not decided here: the core supplies script_for_mac.
"""

import logging
import re
import time
from pathlib import Path

from appliance import log
from appliance.http import HttpError, Response
from appliance.proto.bootparams import format_cmdline, normalize_mac
from appliance.proto.ipxe import render_bootos_script

logger = logging.getLogger(__name__)

_MAC_PATH = re.compile(r"[0-9A-Fa-f]{2}([-:])[0-9A-Fa-f]{2}(\1[0-9A-Fa-f]{2}){4}")
# Percent-encoded ".", "/" and "\" have no business in a boot file name; a client
# sending them is probing for traversal (they would be decoded before our checks).
_ENCODED_TRICKS = re.compile(r"%(2e|2f|5c|00)", re.IGNORECASE)
_SCRIPT_TYPE = "text/plain; charset=utf-8"
BOOTOS_CONSOLES = "console=tty0 console=ttyS0,115200"


class ScriptFetchLog:
    """When each MAC last fetched its iPXE script: the lab's proof that a VM reached iPXE.

    Bounded: the oldest MAC is forgotten when more than `limit` are known.
    """

    def __init__(self, limit=10000):
        self.limit = limit
        self._by_mac = {}

    def record(self, mac, client):
        entry = self._by_mac.pop(mac, None) or {"count": 0, "first": time.time()}
        entry.update(count=entry["count"] + 1, last=time.time(), client=client)
        self._by_mac[mac] = entry
        if len(self._by_mac) > self.limit:
            del self._by_mac[next(iter(self._by_mac))]

    def get(self, mac):
        """{"count", "first", "last", "client"} for the MAC (any notation), or None."""
        return self._by_mac.get(normalize_mac(mac))

    def __contains__(self, mac):
        return self.get(mac) is not None

    def macs(self):
        return list(self._by_mac)


class BootFiles:
    """The two boot-plane routes, bound to a boot root and a script source."""

    def __init__(self, boot_root, script_for_mac):
        self.boot_root = Path(boot_root)
        self.script_for_mac = script_for_mac
        self.fetch_log = ScriptFetchLog()

    async def get_file(self, request):
        relative = request.path_params["path"]
        path = self.resolve(relative, request.raw_path)
        return Response.file(path)

    def resolve(self, relative, raw_path=""):
        """The real path of a boot file, or HttpError (400 for probing, 404 for absent)."""
        if _ENCODED_TRICKS.search(raw_path) or "\\" in relative:
            _refuse("encoded dot, slash or backslash", relative)
            raise HttpError(400, "bad_path", f"boot file path {relative!r} is not allowed")

        segments = relative.split("/")
        if any(segment in ("", ".", "..") or segment.startswith(".") for segment in segments):
            _refuse("dot segment or hidden name", relative)
            raise HttpError(400, "bad_path", f"boot file path {relative!r} is not allowed")

        root = self.boot_root.resolve()
        try:
            path = root.joinpath(*segments).resolve(strict=True)
        except (FileNotFoundError, NotADirectoryError):
            raise HttpError(404, "not_found", f"no boot file {relative!r}") from None
        except (OSError, RuntimeError) as e:
            # RuntimeError: a symlink loop.
            _refuse(f"unresolvable ({e})", relative)
            raise HttpError(404, "not_found", f"no boot file {relative!r}") from None

        if not path.is_relative_to(root):
            _refuse("symlink leading out of the boot root", relative)
            raise HttpError(404, "not_found", f"no boot file {relative!r}")
        if not path.is_file():
            raise HttpError(404, "not_found", f"no boot file {relative!r}")
        return path

    async def get_script(self, request):
        given = request.path_params["mac"]
        if not _MAC_PATH.fullmatch(given):
            raise HttpError(
                400, "bad_mac", f"expected a MAC like 52-54-00-12-34-56, got {given!r}"
            )
        mac = normalize_mac(given)

        with log.context(mac=mac):
            script = await self.script_for_mac(mac)
            self.fetch_log.record(mac, request.client[0] if request.client else "")
            logger.info("ipxe script fetched")
        return Response(200, [("content-type", _SCRIPT_TYPE)], script.encode())


def register_routes(router, settings, script_for_mac):
    """Add the boot-plane routes to `router`; returns the BootFiles (with .fetch_log)."""
    files = BootFiles(settings.boot_root, script_for_mac)
    router.add("GET", "/boot/{path:*}", files.get_file)
    router.add("GET", "/ipxe/{mac}.ipxe", files.get_script)
    return files


def default_script_for_mac(settings, cmdline_args, address=None):
    """A script_for_mac that boots every machine into BootOS (discovery).

    `cmdline_args` are format_cmdline's keywords other than mac, e.g.
    {"url": "https://192.0.2.1:443", "fingerprint": "sha256:..."}. The kernel and
    initrd come from this server's /boot/bootos/ over plain HTTP.
    """
    address = address or settings.server.advertise_address
    if not address:
        raise ValueError("default_script_for_mac needs an address (server.advertise_address)")
    base = f"http://{address}:{settings.server.http_port}/boot/bootos"

    async def script_for_mac(mac):
        cmdline = f"{format_cmdline(mac=mac, **cmdline_args)} {BOOTOS_CONSOLES}"
        return render_bootos_script(f"{base}/vmlinuz", f"{base}/initrd.img", cmdline)

    return script_for_mac


def _refuse(reason, relative):
    logger.warning("refused boot file request (%s): %r", reason, relative)
