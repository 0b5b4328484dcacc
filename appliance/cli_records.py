"""`cloudboot audit ...` and `cloudboot backup ...`: argument parsing only.

The work is in appliance/core/audit_cli.py and appliance/backup/cli.py; this
module turns flags into their arguments, so appliance/cli.py stays a table.
"""


def _data_dir(parser):
    parser.add_argument("--data-dir", default=None, help="appliance data directory")
    parser.add_argument("--config", default=None, help="TOML configuration file")


def _filters(parser):
    parser.add_argument("--actor")
    parser.add_argument("--action")
    parser.add_argument("--resource-type")
    parser.add_argument("--resource-id")
    parser.add_argument("--since", help="ISO 8601 time")
    parser.add_argument("--until", help="ISO 8601 time")


def add_parsers(commands):
    audit = commands.add_parser("audit", help="the tamper-evident audit log")
    actions = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")

    verify = actions.add_parser("verify", help="check the hash chain and signed heads")
    _data_dir(verify)

    query = actions.add_parser("query", help="list events, newest first")
    _data_dir(query)
    _filters(query)
    query.add_argument("--limit", type=int, default=50)
    query.add_argument("--before-id", type=int)
    query.add_argument("--json", action="store_true", dest="as_json")

    export = actions.add_parser("export", help="export events as JSON lines or CSV")
    _data_dir(export)
    _filters(export)
    export.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    export.add_argument("--output", default="-")

    prune = actions.add_parser("prune", help="archive events past the retention, then prune")
    _data_dir(prune)

    archive = actions.add_parser("verify-archive", help="check an archive file")
    _data_dir(archive)
    archive.add_argument("path")

    backup = commands.add_parser("backup", help="encrypted backups of the store")
    steps = backup.add_subparsers(dest="backup_command", required=True, metavar="ACTION")
    create = steps.add_parser("create", help="make a backup now")
    _data_dir(create)
    create.add_argument("--json", action="store_true", dest="as_json")
    listing = steps.add_parser("list", help="list backups")
    _data_dir(listing)
    listing.add_argument("--json", action="store_true", dest="as_json")
    check = steps.add_parser("verify", help="decrypt and check a backup")
    _data_dir(check)
    check.add_argument("name")
    restore = steps.add_parser("restore", help="restore a backup (the appliance must be stopped)")
    _data_dir(restore)
    restore.add_argument("name")
    restore.add_argument(
        "--allow-foreign",
        action="store_true",
        help="restore another appliance's backup on replacement hardware (audited)",
    )


def _filter_values(args):
    names = ("actor", "action", "resource_type", "resource_id", "since", "until")
    return {name: getattr(args, name) for name in names}


def run_audit(args, settings):
    from appliance.core import audit_cli

    data_dir = settings.server.data_dir
    command = args.audit_command
    if command == "verify":
        return audit_cli.audit_verify(data_dir, settings)
    if command == "query":
        return audit_cli.audit_query(
            data_dir,
            settings,
            limit=args.limit,
            before_id=args.before_id,
            as_json=args.as_json,
            **_filter_values(args),
        )
    if command == "export":
        return audit_cli.audit_export(
            data_dir, settings, fmt=args.format, output=args.output, **_filter_values(args)
        )
    if command == "prune":
        return audit_cli.audit_prune(data_dir, settings)
    return audit_cli.audit_verify_archive(data_dir, settings, args.path)


def run_backup(args, settings):
    from appliance.backup import cli as backup_cli

    data_dir = settings.server.data_dir
    command = args.backup_command
    if command == "create":
        return backup_cli.backup_create(data_dir, settings, as_json=args.as_json)
    if command == "list":
        return backup_cli.backup_list(data_dir, settings, as_json=args.as_json)
    if command == "verify":
        return backup_cli.backup_verify(data_dir, settings, args.name)
    return backup_cli.backup_restore(data_dir, settings, args.name, args.allow_foreign)


def operator_errors():
    """The exception types these commands raise for an operator to read."""
    from appliance.backup.backups import BackupError
    from appliance.core.audit_cli import AuditCliError
    from appliance.core.audit_retention import RetentionError
    from appliance.store import StoreError

    return (AuditCliError, BackupError, RetentionError, StoreError)
