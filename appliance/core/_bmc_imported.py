"""An imported provider package for a BMC job (param "provider"), checked before every run.

Issue 6: the appliance checks a package's signature, vendor and watermark at import and
before every run. The BMC runner calls package_for_run() in its worker thread for each
provider run of a job that names an imported package: appliance/provider_store.py checks
the stored file again (a revoked vendor key, a changed byte, an active watermark violation
or a foreign licensee refuses it) and unpacks a fresh copy under the sandbox's runtime
root, removed after the run. Only a package of kind "bmc" is run: any other would be handed
the BMC's password.

What the checks and the run report is kept in a Findings sink and written to the audit
log by the runner (the worker thread cannot wait on the store's writer). This module must
never run a package that failed a check, and never see the password.
"""

import logging
from contextlib import ExitStack, contextmanager

from appliance import key_audit, provider_store
from providers import manifest

log = logging.getLogger(__name__)

SOURCE = "bmc"


class Refused(Exception):
    """The named package may not run; `reason` is provider_store's code, or not_imported."""

    def __init__(self, reason, message):
        super().__init__(message)
        self.reason = reason


class Findings:
    """The audit sink of the checks, in a worker thread: keys/ events (a callable) and
    provider_store records (.record); the runner writes them with take()."""

    def __init__(self):
        self._records = []

    def __call__(self, event):
        self._records.append(key_audit.record_fields(event, SOURCE))

    def record(self, **fields):
        self._records.append({"source": SOURCE, **fields})

    def take(self):
        records, self._records = self._records, []
        return records


@contextmanager
def package_for_run(settings, name, actor, findings, runtime_root):
    """(directory, manifest) of a fresh, checked copy of imported package `name`."""
    data_dir = settings.server.data_dir
    try:
        checked = provider_store.check_imported_for_job(
            data_dir, name, licensee=settings.server.licensee, actor=actor, audit=findings
        )
    except provider_store.ProviderRefused as e:
        # check_before_run audited it (provider.run, denied).
        raise Refused(e.reason, f"provider {name} refused: {e}") from None
    except provider_store.ProviderStoreError as e:
        _denied(findings, actor, name, "not_imported", str(e))
        raise Refused("not_imported", f"{e} (`cloudboot provider import` it first)") from None

    kind = checked.package.manifest.kind
    if kind != "bmc":
        message = f"provider {name} is a {kind} provider, not a BMC one"
        _denied(findings, actor, f"{name}/{checked.version}", "wrong_kind", message)
        raise Refused("wrong_kind", message)
    with ExitStack() as stack:
        try:
            directory = stack.enter_context(provider_store.unpacked_for_run(checked, runtime_root))
            found = manifest.load(directory)
        except (OSError, ValueError) as e:
            raise Refused("unpack_failed", f"provider {name} could not be unpacked: {e}") from None
        yield directory, found


def ran(findings, actor, name, result, details):
    """Audit one finished run of an imported package (the CLI's `provider run` does too)."""
    findings.record(
        actor=actor,
        action="provider.run",
        resource_type="provider",
        resource_id=name,
        result="ok" if result.status == "succeeded" else "failed",
        details={"reason": result.reason, **details},
    )


def _denied(findings, actor, resource, reason, message):
    findings.record(
        actor=actor,
        action="provider.run",
        resource_type="provider",
        resource_id=resource,
        result="denied",
        details={"reason": reason, "message": message},
    )
