"""What the REST handlers share: the store, the settings and small per-process state.

serve.py makes one App at start and hands it to every register_routes. It
holds no domain logic; it must never hold secrets other than what the
handlers need to answer (the certificate fingerprint is public).
"""

import collections
import dataclasses
import ipaddress
import time

from appliance.config import Settings


class RateLimiter:
    """At most `per_minute` events per key in any sliding 60-second window.

    Keys are source addresses of agent registrations. Memory is bounded: at
    most `max_keys` addresses are tracked, the least recently seen forgotten
    first, so a flood from many addresses cannot grow it without limit.
    """

    WINDOW_SECONDS = 60.0

    def __init__(self, per_minute, max_keys=10_000, clock=time.monotonic):
        self.per_minute = per_minute
        self.max_keys = max_keys
        self._clock = clock
        self._seen = collections.OrderedDict()
        self.refused = 0

    def allow(self, key):
        """True (and counted) when the key is under its limit; else the seconds to wait."""
        now = self._clock()
        stamps = self._seen.pop(key, None) or collections.deque()
        while stamps and stamps[0] <= now - self.WINDOW_SECONDS:
            stamps.popleft()

        self._seen[key] = stamps
        while len(self._seen) > self.max_keys:
            self._seen.popitem(last=False)

        if len(stamps) >= self.per_minute:
            self.refused += 1
            return max(1, int(stamps[0] + self.WINDOW_SECONDS - now + 0.999))
        stamps.append(now)
        return True


def parse_networks(texts):
    """settings.api.registration_networks as ip_network objects (ValueError names a bad one)."""
    networks = []
    for text in texts:
        try:
            networks.append(ipaddress.ip_network(str(text), strict=False))
        except ValueError:
            raise ValueError(
                f"api.registration_networks: {text!r} is not a network like 192.0.2.0/24"
            ) from None
    return networks


def address_in(networks, address):
    """True when no networks are configured (any source) or the address is in one."""
    if not networks:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    # A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d.
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks if network.version == ip.version)


@dataclasses.dataclass
class App:
    store: object
    settings: Settings = dataclasses.field(default_factory=Settings)
    started_at: float = dataclasses.field(default_factory=time.time)
    # SHA-256 fingerprint of the API certificate (the agent pins it) and the
    # appliance address; serve.py fills both after the certificate is ready.
    fingerprint: str = ""
    address: str = ""
    registration_limiter: RateLimiter = None
    registration_networks: list = None

    def __post_init__(self):
        if self.registration_limiter is None:
            self.registration_limiter = RateLimiter(self.settings.api.registration_per_minute)
        if self.registration_networks is None:
            self.registration_networks = parse_networks(self.settings.api.registration_networks)
