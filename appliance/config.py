"""The appliance's one configuration file.

Every setting has a default here, may be set in the TOML file given with
--config, and has a line in docs/configuration.md (a test keeps the two in
step). A setting the file names but this module does not know is an error, so
a typo never silently falls back to a default.
"""

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path


class ConfigError(Exception):
    """The configuration file is unreadable or names a bad setting."""


@dataclass
class ServerSettings:
    # The PXE-facing interface; its first IPv4 address is where every service listens.
    interface: str = ""
    # Where the store, keys, certificates and boot files live.
    data_dir: str = "/var/lib/cloudboot"
    # Address put into offers and URLs; empty means the interface's own address.
    advertise_address: str = ""
    http_port: int = 80
    https_port: int = 443
    # Name the agent and technicians use for the appliance (also served by DNS).
    service_name: str = "cloudboot"
    # The bank's name as its provider vendors know it: packages are watermarked for it.
    licensee: str = ""


@dataclass
class DhcpSettings:
    enabled: bool = True
    # Port 67 is where firmware broadcasts; 4011 is PXE boot-server discovery.
    port: int = 67
    pxe_port: int = 4011
    # Network boot programs, relative to the TFTP root.
    bios_boot_file: str = "undionly.kpxe"
    uefi_x64_boot_file: str = "ipxe.efi"
    # Debian's iPXE is x86-64 only: ARM64 and 32-bit UEFI get an answer only
    # when a boot program for that architecture is configured here.
    uefi_arm64_boot_file: str = ""
    uefi_ia32_boot_file: str = ""
    # MAC addresses whose PXE requests are not answered (so that their firmware
    # moves on to UEFI HTTP boot); a test and lab setting.
    ignore_pxe_macs: list = field(default_factory=list)
    # The same MAC fetching the iPXE binary this often within this window is a boot loop.
    boot_loop_window_seconds: int = 60
    boot_loop_count: int = 3
    # Where replies go: clients listen on 68, relay agents on 67 (RFC 2131
    # section 4.1). Only tests on loopback change these.
    client_port: int = 68
    relay_port: int = 67


@dataclass
class TftpSettings:
    enabled: bool = True
    port: int = 69
    # Empty means <data_dir>/tftp.
    root: str = ""
    # A small fixed cap (50 in some servers) stalls boot storms; see docs/boot.md.
    max_transfers: int = 1000
    retries: int = 5
    timeout_seconds: float = 1.0
    max_window_size: int = 64
    # Largest block size offered; also capped by the interface MTU.
    max_block_size: int = 65464


@dataclass
class HttpSettings:
    # Empty means <data_dir>/boot.
    boot_root: str = ""
    header_timeout_seconds: float = 10.0
    max_header_bytes: int = 16384
    keepalive_timeout_seconds: float = 30.0
    keepalive_max_requests: int = 1000
    max_body_bytes: int = 8 * 1024 * 1024
    # Open connections per listener; more are closed at once. The process may
    # hold 20,000 files, and the HTTP and HTTPS listeners share them.
    max_connections: int = 8000
    # Operator-supplied certificate and key (PEM); a self-signed pair is made
    # under the data directory on first start when these are empty.
    tls_certificate: str = ""
    tls_private_key: str = ""
    # Processes serving the HTTPS port together (SO_REUSEPORT); 1 is the main process alone.
    # Extra workers answer reads themselves and pass everything else to the main process.
    workers: int = 1


@dataclass
class DnsSettings:
    enabled: bool = False
    port: int = 53
    domain: str = "pxe.internal"
    ttl_seconds: int = 60


@dataclass
class ApiSettings:
    token_ttl_days: int = 30
    # Agent registration is open (the agent has no secret yet), so it is
    # rate-limited per source address and accepted only from these networks.
    registration_networks: list = field(default_factory=list)
    registration_per_minute: int = 120
    long_poll_seconds: float = 25.0
    # Audit plain reads of machines and jobs too (they are always counted).
    audit_reads: bool = False


@dataclass
class StoreSettings:
    read_connections: int = 4
    # Longest a write waits for others to join its transaction (group commit).
    group_commit_window_ms: float = 2.0
    max_group_size: int = 256


@dataclass
class JobSettings:
    default_timeout_seconds: int = 3600
    max_retries: int = 3
    retry_backoff_seconds: float = 30.0
    # A running job whose agent posts no events for this long is failed. The
    # agent posts every 30 s (bootos/agent/runtime.py), so the floor is two posts.
    lease_seconds: int = 120
    # BMC jobs (power, boot_pxe) run on the appliance, this many at a time.
    bmc_concurrency: int = 4
    # Where BMC providers' sandbox work directories go; empty means /opt/cloudboot/runtime
    # (the provider's uid must reach it, so never inside the 0700 data directory).
    bmc_runtime_root: str = ""
    # A BMC is another machine. Only a lab whose BMC simulators run on this host
    # (loopback) turns this on; the appliance's own service ports stay refused even then.
    bmc_allow_this_host: bool = False


@dataclass
class LogSettings:
    level: str = "info"
    # "text" for a console, "json" for a log collector.
    format: str = "text"


@dataclass
class AuditSettings:
    # Days an audit event is kept before it may be archived and pruned. Bank
    # regulators require at least 180; a lower value is refused, never applied.
    retention_days: int = 180
    # How often the chain head is signed (appliance/core/audit_chain.py).
    sign_interval_seconds: float = 300.0
    # Empty means <data_dir>/audit-archive.
    archive_dir: str = ""
    # The bank's syslog collector: "tls://host:6514" (RFC 5425), "tcp://host:514"
    # (RFC 6587 octet counting), "relp://host:2514" or "relp+tls://host:2514"
    # (RELP: acknowledged per message) or "udp://host:514" (best effort); empty is off.
    forward_target: str = ""
    # CA certificate (PEM) the collector's TLS certificate must chain to;
    # empty means the system's trust store.
    forward_ca_file: str = ""
    # Client certificate and key (PEM) the appliance shows the collector; rsyslog's
    # imrelp with TLS always asks for one. Empty: none is shown.
    forward_cert_file: str = ""
    forward_key_file: str = ""


@dataclass
class BackupSettings:
    # Empty means <data_dir>/backups.
    directory: str = ""
    # A second place (another disk or mount) every backup is also written to.
    mirror_directory: str = ""
    # Newest backups kept in each directory; older ones are deleted.
    keep: int = 14
    interval_hours: float = 24.0


@dataclass
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    dhcp: DhcpSettings = field(default_factory=DhcpSettings)
    tftp: TftpSettings = field(default_factory=TftpSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    dns: DnsSettings = field(default_factory=DnsSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    jobs: JobSettings = field(default_factory=JobSettings)
    log: LogSettings = field(default_factory=LogSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    backup: BackupSettings = field(default_factory=BackupSettings)

    @property
    def data_path(self):
        return Path(self.server.data_dir)

    @property
    def tftp_root(self):
        return Path(self.tftp.root) if self.tftp.root else self.data_path / "tftp"

    @property
    def boot_root(self):
        return Path(self.http.boot_root) if self.http.boot_root else self.data_path / "boot"


def all_setting_names(settings=None):
    """Yield every setting as "section.name", for the docs check and --help."""
    settings = settings or Settings()
    for section in dataclasses.fields(settings):
        for item in dataclasses.fields(getattr(settings, section.name)):
            yield f"{section.name}.{item.name}"


def load(path=None, overrides=None):
    """Read the TOML file (if any), then apply {"section.name": value} overrides."""
    settings = Settings()

    if path is not None:
        try:
            document = tomllib.loads(Path(path).read_text())
        except OSError as e:
            raise ConfigError(f"cannot read configuration file {path}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"configuration file {path} is not valid TOML: {e}") from None
        _apply_document(settings, document, str(path))

    for name, value in (overrides or {}).items():
        if value is not None:
            section, _, key = name.partition(".")
            _set(settings, section, key, value, "command line")

    return settings


def _apply_document(settings, document, origin):
    for section, values in document.items():
        if not isinstance(values, dict):
            raise ConfigError(f"{origin}: [{section}] must be a table, got {values!r}")
        for key, value in values.items():
            _set(settings, section, key, value, origin)


def _set(settings, section, key, value, origin):
    known = {f.name for f in dataclasses.fields(settings)}
    if section not in known:
        raise ConfigError(f"{origin}: unknown section [{section}] (known: {sorted(known)})")

    target = getattr(settings, section)
    fields = {f.name: f for f in dataclasses.fields(target)}
    if key not in fields:
        raise ConfigError(f"{origin}: unknown setting {section}.{key}")

    current = getattr(target, key)
    value = _coerce(current, value, f"{origin}: {section}.{key}")
    _check_bounds(f"{section}.{key}", value, origin)
    setattr(target, key, value)


# Settings with a range outside which the appliance would misbehave: name -> (lowest, highest).
BOUNDS = {"jobs.lease_seconds": (60, 86_400)}


def _check_bounds(name, value, origin):
    if name not in BOUNDS:
        return
    lowest, highest = BOUNDS[name]
    if not lowest <= value <= highest:
        raise ConfigError(
            f"{origin}: {name} must be between {lowest} and {highest}, got {value!r}"
        )


def _coerce(current, value, where):
    # bool is checked first: it is a subclass of int.
    expected = type(current)
    if expected is bool and not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{where} must be a whole number, got {value!r}")
    if not isinstance(value, expected):
        raise ConfigError(f"{where} must be {expected.__name__}, got {value!r}")
    return value
