"""The kernel command line that links a booted BootOS to its appliance.

The appliance's iPXE script renders it; the agent in BootOS parses it from
/proc/cmdline. It is the only channel that exists before the agent has an
address, so it carries everything the agent needs to find and trust the
appliance:

    cloudboot.url=https://192.0.2.1:443   where the API is (an IP, not a name:
                                           BootOS has no resolver configured)
    cloudboot.fp=sha256:<64 hex>          SHA-256 of the appliance's TLS
                                           certificate (DER); the agent pins it
    cloudboot.mac=aa:bb:cc:dd:ee:ff       the NIC the firmware booted from
    cloudboot.proto=1                     agent protocol version
    cloudboot.guid=<uuid>                 option 97 GUID seen at PXE time, when sent

Unknown cloudboot.* keys are kept, so a newer appliance can pass settings an
older agent ignores.
"""

import re

PREFIX = "cloudboot."
PROTOCOL_VERSION = 1

_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_FP_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


class BootParamsError(ValueError):
    """The command line lacks a parameter the agent needs, or one is malformed."""


def normalize_mac(value):
    """aa:bb:cc:dd:ee:ff from any of aa-bb-.., AABBCC.., aa:bb:..; None if not a MAC."""
    if value is None:
        return None
    digits = re.sub(r"[^0-9a-fA-F]", "", str(value)).lower()
    if len(digits) != 12 or len(re.sub(r"[:\-.]", "", str(value))) != 12:
        return None
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def format_cmdline(url, fingerprint, mac, guid=None, extra=None):
    """Render the cloudboot.* part of the kernel command line."""
    parts = [
        f"{PREFIX}url={url}",
        f"{PREFIX}fp={fingerprint}",
        f"{PREFIX}mac={mac}",
        f"{PREFIX}proto={PROTOCOL_VERSION}",
    ]
    if guid:
        parts.append(f"{PREFIX}guid={guid}")
    for key, value in (extra or {}).items():
        parts.append(f"{PREFIX}{key}={value}")
    return " ".join(parts)


def parse_cmdline(text):
    """Return {"url", "fp", "mac", "proto", ...} from /proc/cmdline text.

    Raises BootParamsError naming what is missing or malformed.
    """
    params = {}
    for word in text.split():
        if word.startswith(PREFIX) and "=" in word:
            key, _, value = word[len(PREFIX) :].partition("=")
            params[key] = value

    for required in ("url", "fp", "mac"):
        if required not in params:
            raise BootParamsError(f"kernel command line has no {PREFIX}{required}=")

    if not params["url"].startswith(("https://", "http://")):
        raise BootParamsError(f"{PREFIX}url must be an http(s) URL, got {params['url']!r}")

    fingerprint = params["fp"].lower()
    if not _FP_RE.match(fingerprint):
        raise BootParamsError(f"{PREFIX}fp must be sha256:<64 hex>, got {params['fp']!r}")
    params["fp"] = fingerprint

    mac = normalize_mac(params["mac"])
    if mac is None or not _MAC_RE.match(mac):
        raise BootParamsError(f"{PREFIX}mac is not a MAC address: {params['mac']!r}")
    params["mac"] = mac

    try:
        params["proto"] = int(params.get("proto", PROTOCOL_VERSION))
    except ValueError:
        raise BootParamsError(f"{PREFIX}proto must be a number, got {params['proto']!r}") from None

    return params
