"""An imported RAID provider package handed to the agent running the job that names it.

Issue 6: a package is checked at import and before every run. A raid job naming an
imported package (params.provider) runs in BootOS, so "before every run" is the moment the
agent asks for the package: GET /api/v1/agent/jobs/{job_id}/provider. Only the machine
running that raid job may ask; the stored package file is checked again right then by
appliance/provider_store.check_before_run (signature, trust, expiry, watermark, licence,
active violations), and the answer carries the very bytes that passed, with their SHA-256.

Every answer about a provider is audited as `provider.run` (ok, or denied with the
reason), actor machine:<id>, with the job id. This module must never hand out bytes that
did not pass the checks a moment before, nor a package to a machine whose job it is not.
"""

import hashlib
import logging

import trio

from appliance import key_audit, provider_store
from appliance.core import _jobsql as sql
from appliance.core import audit
from appliance.core._jobsql import JobError
from providers import manifest

log = logging.getLogger(__name__)

# The providers bootos/build puts into every BootOS image: never fetched, never imported.
BUILT_IN_RAID = frozenset({"mdadm", "megaraid"})
SHA256_HEADER = "X-CloudBoot-Package-SHA256"


class _Findings:
    """Audit sink for provider_store in a worker thread; written by the caller afterwards."""

    def __init__(self, trace_id, source):
        self.where = {"trace_id": trace_id, "source": source}
        self.records = []

    def __call__(self, event):
        self.records.append({**key_audit.record_fields(event), **self.where})

    def record(self, **fields):
        self.records.append({**fields, **self.where})


def check_provider_named(params, data_dir):
    """Job creation: a raid job's provider is built in or imported; JobError(400) if not."""
    name = params.get("provider") if isinstance(params, dict) else None
    if not isinstance(name, str) or name in BUILT_IN_RAID:
        return  # a missing or malformed name is the agent's to refuse, with its reason
    try:
        if data_dir is None:
            raise provider_store.ProviderStoreError(f"provider {name} is not imported")
        version = provider_store.only_version(data_dir, name)
    except provider_store.ProviderStoreError as e:
        built_in = ", ".join(sorted(BUILT_IN_RAID))
        raise JobError(
            400,
            "unknown_provider",
            f"raid job params.provider: {e} (built in: {built_in}; "
            "`cloudboot provider import` a vendor package first)",
        ) from None
    kind = _imported_kind(data_dir, name, version)
    if kind not in (None, "raid"):
        raise JobError(
            400, "unknown_provider", f"provider {name} is a {kind} provider, not a raid one"
        )


def _imported_kind(data_dir, name, version):
    """The kind its import recorded; None when unreadable (the check before the run decides)."""
    folder = provider_store.providers_dir(data_dir) / name / version / provider_store.UNPACKED_DIR
    try:
        return manifest.load(folder).kind
    except (OSError, ValueError):
        return None


async def package_for_agent(store, settings, machine_id, job_id, trace_id=None, source=None):
    """(package bytes, sha256 hex) for the agent's running raid job; JobError otherwise."""
    job = await store.read(_raid_job_of, machine_id, job_id)
    name = job["params"].get("provider")
    if not isinstance(name, str) or name in BUILT_IN_RAID:
        raise JobError(
            404, "no_provider_package", f"job {job_id} names no imported package ({name!r:.80})"
        )

    findings = _Findings(trace_id, source)
    context = {"actor": f"machine:{machine_id}", "job_id": job_id, "machine_id": machine_id}
    try:
        blob = await trio.to_thread.run_sync(_checked_blob, settings, name, context, findings)
    finally:
        await store.write(_record_all, findings.records)
    return blob, hashlib.sha256(blob).hexdigest()


def _raid_job_of(conn, machine_id, job_id):
    job = sql.load_or_raise(conn, job_id)
    if job["machine_id"] != machine_id:
        raise JobError(403, "job_not_yours", f"job {job_id} belongs to another machine")
    if job["state"] in sql.FINISHED:
        raise JobError(409, "job_finished", f"job {job_id} already ended ({job['state']})")
    if job["state"] != "running":
        raise JobError(409, "job_not_running", f"job {job_id} has not been handed out yet")
    if job["kind"] != "raid":
        raise JobError(404, "no_provider_package", f"job {job_id} is a {job['kind']} job")
    return job


def _checked_blob(settings, name, context, findings):
    """In a worker thread: the stored package's bytes once every check passed again."""
    data_dir, actor = settings.server.data_dir, context["actor"]
    try:
        checked = provider_store.check_imported_for_job(
            data_dir, name, licensee=settings.server.licensee, actor=actor, audit=findings
        )
    except provider_store.ProviderRefused as e:
        # check_before_run audited it; the job id goes with the refusal as well.
        _add_job(findings, context)
        raise JobError(
            403, "provider_refused", f"provider {name} refused: {e} ({e.reason})"
        ) from None
    except provider_store.ProviderStoreError as e:
        _ran(findings, context, name, "denied", {"reason": "not_imported", "message": str(e)})
        raise JobError(404, "provider_not_imported", str(e)) from None

    resource = f"{name}/{checked.version}"
    kind = checked.package.manifest.kind
    if kind != "raid":
        # A BMC package would be given the BMC's password on the appliance, never in BootOS.
        message = f"provider {name} is a {kind} provider, not a raid one"
        _ran(findings, context, resource, "denied", {"reason": "wrong_kind", "message": message})
        raise JobError(403, "provider_refused", f"{message} (wrong_kind)")

    sha256 = hashlib.sha256(checked.blob).hexdigest()
    _ran(findings, context, resource, "ok", {"reason": "sent_to_agent", "sha256": sha256})
    log.info("provider %s checked and sent for job %s", resource, context["job_id"])
    return checked.blob


def _ran(findings, context, resource, result, details):
    findings.record(
        actor=context["actor"],
        action="provider.run",
        resource_type="provider",
        resource_id=resource,
        result=result,
        details={**details, "job_id": context["job_id"], "machine_id": context["machine_id"]},
    )


def _add_job(findings, context):
    for fields in findings.records:
        if fields.get("action") == "provider.run":
            details = fields.setdefault("details", {})
            details.update(job_id=context["job_id"], machine_id=context["machine_id"])


def _record_all(conn, records):
    for fields in records:
        audit.record(conn, **fields)
