"""`cloudboot audit ...` and `cloudboot backup ...`: argument parsing only.

The work is in appliance/core/audit_cli.py and appliance/backup/cli.py; this
module turns flags into their arguments, so appliance/cli.py stays a table.
Commands that seal or open with the master key (backup create|verify|restore,
audit prune|verify-archive) first unseal it on this console: with_master_key().
"""

import functools


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


def run_audit(args, settings, read_secret=None):
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
    # Archives are sealed under the master key: unsealed here, as for backups.
    if command == "prune":
        step = functools.partial(audit_cli.audit_prune, data_dir, settings)
    else:
        step = functools.partial(audit_cli.audit_verify_archive, data_dir, settings, args.path)
    return with_master_key(data_dir, settings, step, read_secret, audit_cli.AuditCliError)


def run_backup(args, settings, read_secret=None):
    """One backup command; create, verify and restore first unseal the master key here."""
    from appliance.backup import cli as backup_cli
    from appliance.backup.backups import BackupError

    data_dir = settings.server.data_dir
    command = args.backup_command
    if command == "list":
        return backup_cli.backup_list(data_dir, settings, as_json=args.as_json)
    if command == "create":
        step = functools.partial(backup_cli.backup_create, data_dir, settings, args.as_json)
    elif command == "verify":
        step = functools.partial(backup_cli.backup_verify, data_dir, settings, args.name)
    else:
        step = functools.partial(
            backup_cli.backup_restore, data_dir, settings, args.name, args.allow_foreign
        )
    return with_master_key(data_dir, settings, step, read_secret, BackupError)


def with_master_key(data_dir, settings, step, read_secret, error):
    """Run step() holding the master key, unsealed on this console; its key events audited.

    Under dual control the officers type their passphrases here (the running
    appliance's unsealed key is in another process). The key events are
    committed to the audit log after the step, because a restore must not
    have the store open while it swaps the database.
    """
    from appliance import key_audit
    from appliance.backup import cli as backup_cli
    from appliance.backup import keysource
    from keys import hygiene

    # This process unwraps backup and archive keys: no core dump may carry them.
    hygiene.harden_process()
    pending = key_audit.PendingAudit(source="cli")
    try:
        master = _unsealed_master(data_dir, pending, read_secret, error)
        if master is None:
            # Before `keys init`: the development key source, nothing to unseal.
            return step()
        with keysource.holding(master, pending, actor=backup_cli.operator()):
            return step()
    finally:
        pending.commit_to(data_dir, settings.store)


def _unsealed_master(data_dir, audit, read_secret, error):
    """The master key source, unsealed by its officers on this console; None before keys init."""
    import getpass
    from pathlib import Path

    from keys import KeysError
    from keys.master import CONFIG_NAME, load_master

    if not (Path(data_dir) / "keys" / CONFIG_NAME).exists():
        return None
    read_secret = read_secret or getpass.getpass
    try:
        master = load_master(data_dir, audit)
        state = master.status()
        for officer in state.get("officers", []) if master.is_sealed() else []:
            if not master.is_sealed():
                break
            # An empty answer skips an officer who is not in the room: M of N suffice.
            passphrase = read_secret(f"Passphrase for officer {officer} (empty to skip): ")
            if passphrase:
                master.unseal(officer, passphrase)
    except KeysError as e:
        raise error(f"master key: {e}") from None
    if master.is_sealed():
        raise error(f"master key {master.key_id} is still sealed")
    return master


def operator_errors():
    """The exception types these commands raise for an operator to read."""
    from appliance.backup.backups import BackupError
    from appliance.core.audit_cli import AuditCliError
    from appliance.core.audit_retention import RetentionError
    from appliance.store import StoreError

    return (AuditCliError, BackupError, RetentionError, StoreError)
