"""`cloudboot provider ...`: argument parsing and the thin glue to the provider code.

Vendor side, no data directory: `pack` (a folder into one package file) and
`exec` (run an unpacked, unsigned folder in the production sandbox, to test
it before packing and signing). Appliance side, on imported packages only:
`import`, `verify`, `list`, `licence`, `remove` and `run`, whose checks and records are
in appliance/provider_store.py. Every appliance-side command records what it
did in the audit log (appliance/key_audit.py). Nothing here runs a package
that has not just passed the checks of appliance/provider_store.py.
"""

import json
import sys

_DATA_DIR = ("--data-dir", {"required": True, "help": "appliance data directory"})
_CONFIG = ("--config", {"help": "TOML configuration file (server.licensee)"})
_VERSION = ("--version", {"help": "the version (needed when several are imported)"})
_SANDBOX = [
    ("--runtime-root", {"help": "where work directories go (/opt/cloudboot/runtime)"}),
    (
        "--grant-port",
        {
            "type": int,
            "action": "append",
            "default": [],
            "metavar": "PORT",
            "help": "allow TCP connections to this port (repeat for more)",
        },
    ),
    (
        "--allow-missing",
        {"action": "store_true", "help": "run even if the kernel lacks a required protection"},
    ),
]


class ProviderCliError(Exception):
    """One line for the operator."""


def _print(document):
    print(json.dumps(document, indent=2, sort_keys=True))


def _settings(args):
    from appliance import config

    return config.load(args.config, {"server.data_dir": args.data_dir})


def _actor():
    from keys.cli import default_actor

    return default_actor()


def _sandbox_settings(args):
    from providers.sandbox import runner

    settings = runner.SandboxSettings(allow_missing=args.allow_missing)
    if args.runtime_root:
        settings = runner.SandboxSettings(
            **{**settings.__dict__, "runtime_root": args.runtime_root}
        )
    return settings


def cmd_pack(args):
    from providers import package

    found = package.pack(args.directory, args.output)
    _print({"package": args.output, "name": found.manifest.name, "digest": found.digest})
    return 0


def cmd_exec(args):
    from providers import cli as provider_cli

    grants = {"network": args.grant_port, "allow_missing": args.allow_missing}
    settings = _sandbox_settings(args)
    return provider_cli.cmd_exec(args.directory, sys.stdin, sys.stdout, grants, settings)


def _with_store(args, work):
    """Run work(settings, sink) with the audit sink open on the data directory's store."""
    from appliance import key_audit

    settings = _settings(args)
    with key_audit.store_audit(args.data_dir, settings.store) as sink:
        return work(settings, sink)


def cmd_import(args):
    from appliance import provider_store

    def work(settings, sink):
        return provider_store.import_package(
            args.data_dir, args.package, licensee=settings.server.licensee,
            actor=_actor(), audit=sink,
        )  # fmt: skip

    _print(_with_store(args, work))
    return 0


def cmd_verify(args):
    from appliance import provider_store

    def work(settings, sink):
        return provider_store.verify_file(
            args.data_dir, args.package, licensee=settings.server.licensee,
            actor=_actor(), audit=sink,
        )  # fmt: skip

    _print(_with_store(args, work))
    return 0


def cmd_list(args):
    from appliance import provider_store

    # Reading only: nothing to audit, so the store is not opened.
    _print(provider_store.list_imported(args.data_dir))
    return 0


def cmd_licence(args):
    from appliance import provider_store

    def work(settings, sink):
        return provider_store.import_licence(
            args.data_dir, args.licence, licensee=settings.server.licensee,
            actor=_actor(), audit=sink,
        )  # fmt: skip

    _print(_with_store(args, work))
    return 0


def cmd_remove(args):
    from appliance import provider_store

    def work(settings, sink):
        return provider_store.remove(
            args.data_dir, args.name, args.version, actor=_actor(), audit=sink
        )

    _print(_with_store(args, work))
    return 0


def cmd_run(args):
    """Check the imported package again, then run a fresh copy of it; request on stdin."""
    from appliance import provider_store
    from providers import cli as provider_cli

    def work(settings, sink):
        name, actor = args.name, _actor()
        version = args.version or provider_store.only_version(args.data_dir, name)
        checked = provider_store.check_before_run(
            args.data_dir, name, version, licensee=settings.server.licensee,
            actor=actor, audit=sink,
        )  # fmt: skip
        sandbox = _sandbox_settings(args)
        grants = {"network": args.grant_port, "allow_missing": args.allow_missing}
        with provider_store.unpacked_for_run(checked, sandbox.runtime_root) as directory:
            code = provider_cli.cmd_exec(str(directory), sys.stdin, sys.stdout, grants, sandbox)
        sink.record(
            actor=actor,
            action="provider.run",
            resource_type="provider",
            resource_id=f"{name}/{version}",
            result="ok" if code == provider_cli.EXIT_SUCCEEDED else "failed",
            details={"exit_code": code, "package_sha256": checked.package.digest},
        )
        return code

    return _with_store(args, work)


# (action, help, handler, [(flag or positional, add_argument kwargs)])
COMMANDS = [
    (
        "pack",
        "vendor side: pack a provider folder into one package file (then `vendor sign|stamp`)",
        cmd_pack,
        [("directory", {"help": "the provider's folder"}), ("--output", {"required": True})],
    ),
    (
        "exec",
        "vendor side: run an unpacked, unsigned provider folder in the production sandbox "
        "to test it before packing; request on stdin (imported packages: `provider run`)",
        cmd_exec,
        [("directory", {"help": "the provider's folder (with provider.json)"}), *_SANDBOX],
    ),
    (
        "import",
        "check a signed, watermarked package and keep it in the data directory",
        cmd_import,
        [("package", {"help": "the package file"}), _DATA_DIR, _CONFIG],
    ),
    (
        "verify",
        "run the import checks on a package file without importing it",
        cmd_verify,
        [("package", {"help": "the package file"}), _DATA_DIR, _CONFIG],
    ),
    (
        "list",
        "imported providers with vendor and licence status, and active violations",
        cmd_list,
        [_DATA_DIR, _CONFIG],
    ),
    (
        "licence",
        "import a vendor-signed licence for this appliance; ends the violations it covers",
        cmd_licence,
        [("licence", {"help": "the licence file (`vendor licence`)"}), _DATA_DIR, _CONFIG],
    ),
    (
        "remove",
        "remove an imported provider; its licence violations end",
        cmd_remove,
        [("name", {}), _VERSION, _DATA_DIR, _CONFIG],
    ),
    (
        "run",
        "check an imported provider again and run it in the sandbox; request on stdin",
        cmd_run,
        [("name", {}), _VERSION, _DATA_DIR, _CONFIG, *_SANDBOX],
    ),
]


def add_parsers(commands):
    """Add `provider` and its actions under the top-level `commands`."""
    provider = commands.add_parser("provider", help="vendor providers")
    actions = provider.add_subparsers(dest="provider_command", required=True, metavar="ACTION")
    for name, text, handler, flags in COMMANDS:
        leaf = actions.add_parser(name, help=text, description=text)
        for flag, options in flags:
            leaf.add_argument(flag, **options)
        leaf.set_defaults(provider_handler=handler)


def run(args):
    """Call the handler the parsed arguments name; operator errors become ProviderCliError."""
    from appliance import config
    from appliance.provider_store import ProviderRefused, ProviderStoreError
    from keys import KeysError
    from providers.manifest import ManifestError
    from providers.package import PackageError

    try:
        return args.provider_handler(args)
    except ProviderRefused as e:
        raise ProviderCliError(f"refused ({e.reason}): {e}") from None
    except (ProviderStoreError, KeysError, PackageError, ManifestError, config.ConfigError) as e:
        raise ProviderCliError(str(e)) from None
