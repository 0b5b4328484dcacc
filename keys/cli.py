"""Plain functions behind `cloudboot keys ...` and `cloudboot vendor ...`.

appliance/cli.py parses the command line and calls one function per
subcommand with the parsed arguments as keyword parameters plus data_dir.
Each prints what an operator needs to stdout and raises KeysError with a
one-line message for an operator error; none prints a key, a PIN or a
passphrase. Passphrases are read with `read_secret` (getpass by default) and
never taken from the command line, where /proc/<pid>/cmdline would show them.
"""

import getpass
import json
from pathlib import Path

from keys import audit as audit_mod
from keys import violations
from keys.dualcontrol import DEFAULT_LIMITS, DualControlMaster
from keys.envelope import Keyring
from keys.errors import KeysError
from keys.master import (
    KeyFileMaster,
    load_config,
    load_master,
    refuse_if_initialised,
    save_config,
)
from keys.signing import (
    TrustStore,
    encode_block,
    keygen,
    load_vendor_key,
    save_vendor_key,
    sha256,
    sign_digest,
    sign_package,
)
from keys.watermark import make_licence, stamp


def default_actor() -> str:
    return f"cli:{getpass.getuser()}"


def _print(document) -> None:
    print(json.dumps(document, indent=2, sort_keys=True))


def _read_file(path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise KeysError(f"cannot read {what} {path}: {exc.strerror}") from None


def _read_json_file(path, what: str):
    try:
        return json.loads(_read_file(path, what))
    except ValueError as exc:
        raise KeysError(f"{what} {path} is not JSON: {exc}") from None


def _ask_new_passphrase(name: str, read_secret) -> str:
    first = read_secret(f"New passphrase for officer {name}: ")
    if read_secret(f"Repeat passphrase for officer {name}: ") != first:
        raise KeysError(f"the two passphrases for officer {name} differ; nothing was changed")
    return first


def keys_init(
    *,
    data_dir,
    source,
    key_file=None,
    officers=None,
    threshold=None,
    library=None,
    token_label=None,
    pin_file=None,
    read_secret=getpass.getpass,
    argon2_limits=DEFAULT_LIMITS,
    audit=None,
):
    """Choose the master key source and make master key version 1."""
    refuse_if_initialised(data_dir)
    audit_fn = audit_mod.default_audit(data_dir, audit)
    config = {"source": source}
    if source == "key-file":
        if not key_file:
            raise KeysError("--key-file is required for the key-file source")
        path = Path(key_file)
        master = (
            KeyFileMaster(path, audit_fn, data_dir)
            if path.exists()
            else KeyFileMaster.create(path, audit_fn, data_dir)
        )
        config["key_file"] = str(path.resolve())
    elif source == "dual-control":
        names = _officer_names(officers)
        phrases = {name: _ask_new_passphrase(name, read_secret) for name in names}
        master = DualControlMaster.create(
            data_dir, phrases, int(threshold or 2), audit_fn, argon2_limits
        )
    elif source == "pkcs11":
        master = _init_pkcs11(data_dir, library, token_label, pin_file, audit_fn)
        config.update(
            library=library, token_label=token_label, pin_file=str(Path(pin_file).resolve())
        )
    else:
        raise KeysError(
            f"unknown master key source {source!r}: use key-file, dual-control or pkcs11"
        )
    save_config(data_dir, config)
    audit_fn(
        audit_mod.event(
            "init",
            actor=default_actor(),
            key_id=master.key_id,
            version=master.current_version(),
            purpose=f"master key source {source} set up",
        )
    )
    _print(master.status())
    return master


def _names(value) -> list[str]:
    """A comma-separated option (or a list already split) as clean names."""
    names = value.split(",") if isinstance(value, str) else list(value or [])
    return [name.strip() for name in names if name.strip()]


def _officer_names(officers) -> list[str]:
    names = _names(officers)
    if len(set(names)) != len(names):
        raise KeysError(f"officer names must be unique, got {names}")
    return names


def _init_pkcs11(data_dir, library, token_label, pin_file, audit_fn):
    from keys.pkcs11token import Pkcs11Master, read_pin

    if not (library and token_label and pin_file):
        raise KeysError("the pkcs11 source needs --library, --token-label and --pin-file")
    master = Pkcs11Master(library, token_label, read_pin(pin_file, data_dir), audit_fn)
    if not master.versions():
        master.generate(1)
    return master


def keys_unseal(*, data_dir, officers=None, read_secret=getpass.getpass, audit=None):
    """Officers enter their passphrases one after another; returns the unsealed master.

    Unsealed state lives in process memory: `cloudboot serve` calls this at
    start (or its API does, officer by officer); run on its own the command
    checks that the officers' passphrases unseal the key.
    """
    master = _unsealed_master(data_dir, officers, read_secret, audit)
    if master.source != "dual-control":
        print(f"master key source {master.source} is never sealed; nothing to unseal")
        return master
    _print(master.status())
    return master


def _unsealed_master(data_dir, officers, read_secret, audit):
    master = load_master(data_dir, audit)
    if not isinstance(master, DualControlMaster):
        return master
    state = master.status()
    for name in _officer_names(officers) or state["officers"]:
        if not master.is_sealed():
            break
        master.unseal(name, read_secret(f"Passphrase for officer {name}: "))
    if master.is_sealed():
        raise KeysError(
            f"still sealed: {len(master.status()['shares_entered'])} of {state['threshold']} "
            f"officers entered a passphrase"
        )
    return master


def keys_status(*, data_dir, audit=None):
    """Print the master key source, the data keys and the active violations."""
    master = load_master(data_dir, audit)
    status = {
        "master": master.status(),
        "keyring": Keyring(data_dir, master, audit).status(),
        "trusted_vendor_keys": len(TrustStore(data_dir, audit).list()),
        "active_violations": len(violations.list_active(data_dir)),
    }
    if master.source == "dual-control":
        status["note"] = "sealed state is per process; the running appliance reports on /readyz"
    _print(status)
    return status


def keys_rotate(
    *,
    data_dir,
    officers=None,
    new_officers=None,
    threshold=None,
    retire=None,
    read_secret=getpass.getpass,
    argon2_limits=DEFAULT_LIMITS,
    actor=None,
    audit=None,
):
    """New master key version, every data key re-wrapped; optionally retire an old version.

    With dual control the officers named in `officers` unseal first; with
    `new_officers` the shares go to a new set of officers (each enters a new
    passphrase) and `threshold` may change.
    """
    actor = actor or default_actor()
    config = load_config(data_dir)
    master = _unsealed_master(data_dir, officers, read_secret, audit)
    keyring = Keyring(data_dir, master, audit, actor=actor)
    if retire is not None:
        keyring.retire(int(retire), actor)
        result = {"retired": int(retire), "versions": master.versions()}
    else:
        options = {}
        if config["source"] == "dual-control" and (new_officers or threshold):
            names = _officer_names(new_officers) or master.status()["officers"]
            if new_officers:
                options["officers"] = {n: _ask_new_passphrase(n, read_secret) for n in names}
            options.update(threshold=int(threshold) if threshold else None, limits=argon2_limits)
        result = keyring.rotate_master(actor, **options)
    _print(result)
    return result


def vendor_keygen(*, data_dir=None, vendor, out_dir, not_after):
    """Vendor side: a new Ed25519 key; writes <slug>.secret.json (0400) and <slug>.public.json."""
    key = keygen(vendor, not_after)
    slug = "".join(c if c.isalnum() else "-" for c in vendor.lower())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    secret, public = out / f"{slug}.secret.json", out / f"{slug}.public.json"
    save_vendor_key(key, secret, public)
    result = {"key_id": key.key_id, "secret_key_file": str(secret), "public_key_file": str(public)}
    _print(result)
    return result


def vendor_sign(*, data_dir=None, key_file, package, manifest=None, output):
    """Vendor side: sign a package's bytes and manifest.

    For a provider package (providers/package.py) the signature covers its
    signed region and packaged manifest, and OUTPUT is the package with the
    signature in its SIGN block; for any other file OUTPUT is the signature record.
    """
    key = load_vendor_key(key_file)
    found, data = _provider_package(package)
    if found is not None:
        packaged = json.loads(found.manifest_bytes)
        if manifest is not None and _read_json_file(manifest, "manifest") != packaged:
            raise KeysError(f"{manifest} differs from the manifest packaged in {package}")
        record = sign_digest(found.digest, packaged, key)
        _write_package(found, output, signature=encode_block(record))
    else:
        if manifest is None:
            raise KeysError("--manifest is required to sign a file that is not a provider package")
        record = sign_package(data, _read_json_file(manifest, "manifest"), key)
        Path(output).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    _print(
        {
            "signature": str(output),
            "key_id": key.key_id,
            "package_sha256": record["package_sha256"],
        }
    )
    return record


def _provider_package(path):
    """(Package, bytes) for a provider package file, (None, bytes) for any other file."""
    from providers import package as package_module

    data = _read_file(path, "package")
    if not data.startswith(package_module.MAGIC):
        return None, data
    try:
        return package_module.decode(data), data
    except package_module.PackageError as exc:
        raise KeysError(f"package {path}: {exc}") from None


def _write_package(found, output, signature=None, watermark=None):
    """The package with its SIGN and/or WMRK block replaced; the signed region is unchanged."""
    from providers import package as package_module

    blob = package_module.encode(
        found.manifest_bytes,
        found.files,
        signature if signature is not None else found.signature,
        watermark if watermark is not None else found.watermark,
    )
    temporary = Path(f"{output}.partial")
    temporary.write_bytes(blob)
    temporary.replace(output)


def vendor_stamp(
    *,
    data_dir=None,
    key_file,
    package,
    provider,
    licensee,
    downloader_id,
    appliance_ids,
    expires,
    output,
):
    """Vendor download service: a signed watermark for one download of a package.

    For a provider package OUTPUT is the package with the watermark in its
    WMRK block (its signature kept); for any other file, the watermark record.
    """
    key = load_vendor_key(key_file)
    found, data = _provider_package(package)
    record = stamp(
        found.digest if found is not None else sha256(data),
        provider,
        key,
        licensee=licensee,
        downloader_id=downloader_id,
        appliance_ids=_names(appliance_ids),
        expires=expires,
    )
    if found is not None:
        # A provider package carries its watermark in its WMRK block.
        _write_package(found, output, watermark=encode_block(record))
    else:
        Path(output).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    _print({"watermark": str(output), "licensee": licensee, "downloader_id": downloader_id})
    return record


def vendor_licence(
    *, data_dir=None, key_file, licensee, appliance_ids, providers, expires, output
):
    """Vendor side: a signed licence for these appliances and providers."""
    key = load_vendor_key(key_file)
    record = make_licence(
        key,
        licensee=licensee,
        appliance_ids=_names(appliance_ids),
        providers=_names(providers),
        expires=expires,
    )
    Path(output).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    _print({"licence": str(output), "licensee": licensee})
    return record


def vendor_trust_add(*, data_dir, public_key_file, actor=None, audit=None):
    """Admin: trust a vendor public key (audited)."""
    record = _read_json_file(public_key_file, "vendor public key file")
    entry = TrustStore(data_dir, audit).add(record, actor or default_actor())
    _print(entry)
    return entry


def vendor_trust_revoke(*, data_dir, key_id, reason="", actor=None, audit=None):
    """Admin: revoke a vendor key; packages it signed are refused from now on (audited)."""
    entry = TrustStore(data_dir, audit).revoke(key_id, actor or default_actor(), reason or "")
    _print(entry)
    return entry


def vendor_trust_list(*, data_dir, audit=None):
    """Admin: the trusted and revoked vendor keys."""
    entries = TrustStore(data_dir, audit).list()
    _print(entries)
    return entries
