"""The `cloudboot` command.

Every subcommand takes --data-dir. Errors a technician can fix (a missing
interface, a port in use, an unwritable data directory) are printed as one
line starting with "cloudboot: error:" and exit with status 2; a traceback is
a bug, never a message.
"""

import argparse
import sys

from appliance import cli_keys, cli_providers, cli_records, config


class CliError(Exception):
    """An error the operator can act on; printed as one line."""


def _add_data_dir(parser):
    parser.add_argument(
        "--data-dir",
        default=None,
        help="appliance data directory (store, keys, certificates, boot files); "
        "default: server.data_dir from the configuration, /var/lib/cloudboot",
    )
    parser.add_argument("--config", default=None, help="TOML configuration file")


def build_parser():
    parser = argparse.ArgumentParser(prog="cloudboot", description="CloudBoot NG appliance")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run proxyDHCP, TFTP, HTTP(S), DNS and the API")
    _add_data_dir(serve)
    serve.add_argument("--interface", help="the PXE-facing network interface")
    serve.add_argument("--http-port", type=int, help="boot files and iPXE scripts (default 80)")
    serve.add_argument("--https-port", type=int, help="API and web page (default 443)")
    serve.add_argument(
        "--workers", type=int, help="processes serving the HTTPS port together (default 1)"
    )
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--log-format", choices=["text", "json"])

    token = commands.add_parser("token", help="API tokens")
    token_commands = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    issue = token_commands.add_parser("issue", help="issue a token and print it once")
    _add_data_dir(issue)
    issue.add_argument("--role", required=True, choices=["viewer", "operator", "admin"])
    issue.add_argument("--user", default="admin", help="user the token belongs to")

    bootfiles = commands.add_parser("bootfiles", help="boot programs and BootOS")
    actions = bootfiles.add_subparsers(dest="bootfiles_command", required=True, metavar="ACTION")
    install = actions.add_parser("install", help="copy iPXE and BootOS into the data directory")
    _add_data_dir(install)
    install.add_argument("--bootos", required=True, help="folder with vmlinuz and initrd.img")
    install.add_argument("--ipxe", default="/usr/lib/ipxe", help="folder with the iPXE binaries")

    cli_providers.add_parsers(commands)
    cli_keys.add_parsers(commands)
    cli_records.add_parsers(commands)
    commands.add_parser("version", help="print the version")
    return parser


def load_settings(args):
    overrides = {
        "server.data_dir": getattr(args, "data_dir", None),
        "server.interface": getattr(args, "interface", None),
        "server.http_port": getattr(args, "http_port", None),
        "server.https_port": getattr(args, "https_port", None),
        "http.workers": getattr(args, "workers", None),
        "log.level": getattr(args, "log_level", None),
        "log.format": getattr(args, "log_format", None),
    }
    return config.load(args.config, overrides)


def cmd_serve(args):
    from appliance import log, serve

    settings = load_settings(args)
    if not settings.server.interface:
        raise CliError("serve needs --interface (or server.interface in the configuration)")

    log.setup(settings.log.level, settings.log.format)
    try:
        serve.main(settings)
    except serve.StartupError as e:
        raise CliError(str(e)) from None
    return 0


def cmd_token_issue(args):
    from appliance.core import auth

    settings = load_settings(args)
    try:
        token = auth.issue_token_cli(
            settings.server.data_dir, args.role, args.user, ttl_days=settings.api.token_ttl_days
        )
    except auth.AuthError as e:
        raise CliError(str(e)) from None
    print(token)
    return 0


def cmd_bootfiles(args):
    from appliance import bootfiles

    settings = load_settings(args)
    try:
        written, _ = bootfiles.install(settings, args.bootos, args.ipxe)
    except bootfiles.BootFilesError as e:
        raise CliError(str(e)) from None
    print("\n".join(written))
    return 0


def cmd_records(args):
    settings = load_settings(args)
    run = cli_records.run_audit if args.command == "audit" else cli_records.run_backup
    try:
        run(args, settings)
    except cli_records.operator_errors() as e:
        raise CliError(str(e)) from None
    return 0


def cmd_version(args):
    from importlib.metadata import PackageNotFoundError, version

    try:
        print(version("cloudboot-ng"))
    except PackageNotFoundError:
        print("unknown (not installed as a package)")
    return 0


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    # keys, backup and serve hold key material in memory: no core dumps, and
    # no ptrace or /proc/<pid>/mem by other users, for every subcommand alike.
    from keys import hygiene

    hygiene.harden_process()
    handlers = {
        "serve": cmd_serve,
        "token": cmd_token_issue,
        "version": cmd_version,
        "keys": cli_keys.run,
        "vendor": cli_keys.run,
        "bootfiles": cmd_bootfiles,
        "provider": cli_providers.run,
        "audit": cmd_records,
        "backup": cmd_records,
    }

    try:
        return handlers[args.command](args)
    except (
        CliError,
        config.ConfigError,
        cli_keys.KeysCliError,
        cli_providers.ProviderCliError,
    ) as e:
        print(f"cloudboot: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `cloudboot ... | head`: the reader left; that is not an error of ours.
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
