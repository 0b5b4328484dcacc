"""`cloudboot keys ...` and `cloudboot vendor ...`: argument parsing only.

The work is in keys/cli.py, which knows nothing of argparse; this module maps
flags to its keyword arguments. Passphrases are always asked for on the
terminal, never taken from flags, so they stay out of shell history and ps.
"""

# (subcommand path, keys.cli function, [(flag, kwargs for add_argument)])
_DATA_DIR = ("--data-dir", {"required": True, "help": "appliance data directory"})
COMMANDS = [
    (
        ("keys", "init"),
        "keys_init",
        [
            _DATA_DIR,
            ("--source", {"required": True, "choices": ["key-file", "dual-control", "pkcs11"]}),
            ("--key-file", {"help": "key file path (key-file source; outside the data dir)"}),
            ("--officers", {"help": "comma-separated officer names (dual-control)"}),
            ("--threshold", {"type": int, "help": "officers needed to unseal (dual-control)"}),
            ("--library", {"help": "PKCS#11 library of the HSM (pkcs11)"}),
            ("--token-label", {"help": "token label (pkcs11)"}),
            ("--pin-file", {"help": "file holding the token PIN, mode 0400 (pkcs11)"}),
        ],
    ),
    (("keys", "unseal"), "keys_unseal", [_DATA_DIR, ("--officers", {})]),
    (("keys", "status"), "keys_status", [_DATA_DIR]),
    (
        ("keys", "rotate"),
        "keys_rotate",
        [
            _DATA_DIR,
            ("--officers", {"help": "officers who unseal for the rotation"}),
            ("--new-officers", {"help": "re-issue the shares to these officers"}),
            ("--threshold", {"type": int}),
            ("--retire", {"type": int, "help": "retire this old version instead of rotating"}),
        ],
    ),
    (
        ("vendor", "keygen"),
        "vendor_keygen",
        [
            ("--vendor", {"required": True}),
            ("--out-dir", {"required": True}),
            ("--not-after", {"required": True, "help": "expiry, ISO 8601 date"}),
        ],
    ),
    (
        ("vendor", "sign"),
        "vendor_sign",
        [
            ("--key-file", {"required": True}),
            ("--package", {"required": True}),
            ("--manifest", {"help": "manifest JSON (a provider package carries its own)"}),
            ("--output", {"required": True}),
        ],
    ),
    (
        ("vendor", "stamp"),
        "vendor_stamp",
        [
            ("--key-file", {"required": True}),
            ("--package", {"required": True}),
            ("--provider", {"required": True}),
            ("--licensee", {"required": True}),
            ("--downloader-id", {"required": True}),
            ("--appliance-ids", {"required": True, "help": "comma-separated"}),
            ("--expires", {"required": True}),
            ("--output", {"required": True}),
        ],
    ),
    (
        ("vendor", "licence"),
        "vendor_licence",
        [
            ("--key-file", {"required": True}),
            ("--licensee", {"required": True}),
            ("--appliance-ids", {"required": True}),
            ("--providers", {"required": True}),
            ("--expires", {"required": True}),
            ("--output", {"required": True}),
        ],
    ),
    (
        ("vendor", "trust", "add"),
        "vendor_trust_add",
        [_DATA_DIR, ("--public-key-file", {"required": True})],
    ),
    (
        ("vendor", "trust", "revoke"),
        "vendor_trust_revoke",
        [_DATA_DIR, ("--key-id", {"required": True}), ("--reason", {"default": ""})],
    ),
    (("vendor", "trust", "list"), "vendor_trust_list", [_DATA_DIR]),
]


def add_parsers(commands):
    """Add the keys and vendor subcommands under the top-level `commands`."""
    groups = {}
    for path, function, flags in COMMANDS:
        parent = commands
        for depth in range(len(path) - 1):
            key = path[: depth + 1]
            if key not in groups:
                group = parent.add_parser(key[-1], help=f"{' '.join(key)} commands")
                groups[key] = group.add_subparsers(dest="_".join(key), required=True)
            parent = groups[key]

        leaf = parent.add_parser(path[-1], help=f"{' '.join(path)}")
        for flag, options in flags:
            leaf.add_argument(flag, **options)
        leaf.set_defaults(keys_function=function, keys_flags=[f for f, _ in flags])


def run(args):
    """Call the keys.cli function the parsed arguments name."""
    import inspect

    import keys
    from appliance import key_audit
    from appliance.config import StoreSettings
    from keys import cli, hygiene

    # These commands hold a master key, an officer's share or a vendor's signing
    # key in memory: no core dump and no ptrace by other users may reach them.
    hygiene.harden_process()
    function = getattr(cli, args.keys_function)
    kwargs = {
        flag.lstrip("-").replace("-", "_"): getattr(args, flag.lstrip("-").replace("-", "_"))
        for flag in args.keys_flags
    }
    try:
        if "audit" in inspect.signature(function).parameters:
            # Key use is recorded in the appliance's audit log (appliance/key_audit.py).
            with key_audit.store_audit(kwargs["data_dir"], StoreSettings()) as sink:
                function(**kwargs, audit=sink)
        else:
            function(**kwargs)
    except keys.KeysError as e:
        raise KeysCliError(str(e)) from None
    return 0


class KeysCliError(Exception):
    pass
