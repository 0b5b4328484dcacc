"""`cloudboot provider exec DIR`: run an unpacked provider the way production does.

Vendors use it to test a provider before packing it: the same manifest validation, the same
sandbox and limits, the request read from stdin, and every event printed as a JSON line as
it arrives, followed by one `run` line with the outcome, the protections in force and every
refusal the runner saw. It must never relax the sandbox for convenience.
"""

import json
import logging

from providers import manifest, protocol
from providers.sandbox import runner

log = logging.getLogger(__name__)

EXIT_SUCCEEDED = 0
EXIT_PROVIDER_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_SANDBOX = 3
MAX_REQUEST_BYTES = 1 << 20
SANDBOX_REASONS = ("sandbox_setup_failed", "sandbox_error")


def cmd_exec(directory, request_stream, out_stream, grants=None, settings=None):
    """Run DIR's provider on the request read from `request_stream`; returns the exit code.

    `out_stream` gets text lines. `grants` is the operator's grant ({"network": [ports],
    "allow_missing": bool}); `settings` a runner.SandboxSettings (the default puts work
    directories under /opt/cloudboot/runtime).
    """
    try:
        found = manifest.load(directory)
        request = read_request(request_stream)
    except (manifest.ManifestError, ValueError) as exc:
        _print(out_stream, {"type": "run", "status": "failed", "reason": "bad_input",
                            "message": str(exc)})  # fmt: skip
        return EXIT_BAD_INPUT

    grants = grants or {}
    settings = settings or runner.SandboxSettings()
    if grants.get("allow_missing"):
        settings = runner.SandboxSettings(**{**settings.__dict__, "allow_missing": True})
    result = runner.run(
        directory, found, request, grants, settings, on_event=lambda e: _print(out_stream, e)
    )
    if result.status == "succeeded" or result.events and result.events[-1]["type"] == "result":
        _print(out_stream, result.events[-1])
    _print(out_stream, summary(result))
    if result.status == "succeeded":
        return EXIT_SUCCEEDED
    return EXIT_SANDBOX if result.reason in SANDBOX_REASONS else EXIT_PROVIDER_FAILED


def read_request(stream):
    """One JSON object; `protocol` is filled in when the vendor left it out."""
    raw = stream.read(MAX_REQUEST_BYTES + 1)
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if len(raw) > MAX_REQUEST_BYTES:
        raise ValueError(f"request larger than {MAX_REQUEST_BYTES} bytes")
    if not raw.strip():
        raise ValueError("no request on stdin: expected one JSON object")
    try:
        request = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"request is not JSON: {exc}") from None
    if not isinstance(request, dict):
        raise ValueError(f"request must be a JSON object, got {type(request).__name__}")
    request.setdefault("protocol", protocol.VERSION)
    if request["protocol"] not in protocol.SUPPORTED_VERSIONS:
        raise ValueError(f"request protocol {request['protocol']!r} is not supported")
    return request


def summary(result):
    return {
        "type": "run",
        "status": result.status,
        "reason": result.reason,
        "message": result.message,
        "exit_code": result.exit_code,
        "duration": result.duration,
        "protections": result.protections,
        "refusals": result.refusals,
        "limits": result.limits,
        "stderr": result.stderr,
    }


def _print(stream, obj):
    stream.write(json.dumps(obj, sort_keys=True) + "\n")
    stream.flush()
