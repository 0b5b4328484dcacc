"""HTTPS client for the agent protocol, pinned to the appliance's certificate.

BootOS has no CA store and the appliance usually has a self-signed
certificate, so trust comes from the kernel command line: cloudboot.fp is the
SHA-256 of the appliance certificate (DER). The TLS handshake is completed
without chain or name checks, then the peer certificate is hashed and
compared before a single byte of HTTP is sent: a wrong certificate never sees
the token or the inventory.

Standard library only (http.client, ssl). Each call opens its own connection,
so a dropped long poll never leaves a half-used socket behind. Errors are
raised as the few classes below, each with a message fit for the console.
"""

import hashlib
import hmac
import http.client
import json
import logging
import ssl
import urllib.parse

from appliance.proto import agent as protocol

log = logging.getLogger(__name__)

USER_AGENT = "cloudboot-agent/1"
# Head-room over the server-side long-poll wait before the read is given up.
POLL_GRACE_SECONDS = 15
# appliance/core/_agent_packages.py: the package route's digest header, and its 403 codes
# that refuse the package (the token is still good).
PACKAGE_SHA256_HEADER = "X-CloudBoot-Package-SHA256"
PROVIDER_REFUSALS = ("provider_refused", "job_not_yours")


class AgentClientError(Exception):
    """Base of the client's errors; str() is one console line."""


class Unreachable(AgentClientError):
    """No answer: refused, timed out, TLS failed, or a 5xx/429 the agent should retry."""


class PinMismatch(Unreachable):
    """The server's certificate is not the one cloudboot.fp names; nothing was sent."""

    def __init__(self, expected, presented):
        super().__init__(
            f"certificate fingerprint {presented} does not match cloudboot.fp {expected}; "
            "refusing to send anything"
        )
        self.expected = expected
        self.presented = presented


class ProtocolMismatch(AgentClientError):
    """426: the appliance does not speak this agent's protocol version."""


class Unauthorized(AgentClientError):
    """401/403: the token is unknown, expired or revoked; register again."""


class Rejected(AgentClientError):
    """Any other 4xx: the appliance refused the request as sent."""

    def __init__(self, status, code, message):
        super().__init__(f"appliance answered {status} {code}: {message}")
        self.status = status
        self.code = code


def fingerprint(der):
    """The cloudboot.fp form of a DER certificate: sha256:<64 hex>."""
    return "sha256:" + hashlib.sha256(der).hexdigest()


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """An HTTPS connection that fails unless the peer certificate hashes to `pin`."""

    def __init__(self, host, port, pin, timeout):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        # Chain and host name checks are replaced by the pin, which is stricter:
        # only this one certificate is accepted.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        super().__init__(host, port, timeout=timeout, context=context)
        self.pin = pin

    def connect(self):
        super().connect()
        presented = fingerprint(self.sock.getpeercert(binary_form=True) or b"")
        if not hmac.compare_digest(presented, self.pin):
            self.sock.close()
            self.sock = None
            raise PinMismatch(self.pin, presented)


class AgentClient:
    """The agent calls of docs/architecture.md, "Agent protocol", and the provider download."""

    def __init__(self, url, pin, timeout=10.0, connection_class=PinnedHTTPSConnection):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError(f"appliance URL must be https://host[:port], got {url!r}")
        self.url = url.rstrip("/")
        self.host = parts.hostname
        self.port = parts.port or 443
        self.pin = pin
        self.timeout = timeout
        self.token = None
        self._connection_class = connection_class

    def register(self, boot_mac, pxe_guid, inventory):
        """POST register; keeps the token; returns {"machine_id", "token", "state", "approved"}."""
        body = {
            "protocol": protocol.CURRENT_VERSION,
            "boot_mac": boot_mac,
            "pxe_guid": pxe_guid,
            "inventory": inventory,
        }
        status, answer = self._call("POST", "/api/v1/agent/register", body, auth=False)
        if status != 200 or not isinstance(answer, dict) or "token" not in answer:
            raise Rejected(status, "bad_answer", f"registration answer {answer!r:.200}")
        self.token = answer["token"]
        return answer

    def next_job(self, wait=25):
        """The next job, validated, or None when the long poll ends with 204."""
        path = f"/api/v1/agent/jobs/next?wait={int(wait)}"
        status, answer = self._call("GET", path, None, timeout=wait + POLL_GRACE_SECONDS)
        if status == 204:
            return None
        try:
            return protocol.validate_job((answer or {}).get("job"))
        except (protocol.AgentProtocolError, AttributeError) as e:
            raise Rejected(status, "bad_job", str(e)) from None

    def post_events(self, job_id, lines, progress=None):
        body = {"progress": progress, "lines": list(lines)}
        self._call("POST", f"/api/v1/agent/jobs/{_quote(job_id)}/events", body)

    def post_result(self, job_id, status, message="", data=None):
        body = {"status": status, "message": message, "data": data or {}}
        self._call("POST", f"/api/v1/agent/jobs/{_quote(job_id)}/result", body)

    def provider_package(self, job_id):
        """(package bytes, the SHA-256 hex the appliance sent with them) for a raid job
        naming an imported provider; the caller compares the two before using the bytes."""
        path = f"/api/v1/agent/jobs/{_quote(job_id)}/provider"
        headers = {**self._headers(True), "Accept": "application/octet-stream"}
        status, raw, answer_headers = self._exchange("GET", path, None, headers, self.timeout)
        if status != 200:
            _check_status(status, raw, refusals=PROVIDER_REFUSALS)
            raise Rejected(status, "bad_answer", f"provider package answer {status}")
        return raw, answer_headers.get(PACKAGE_SHA256_HEADER.lower(), "")

    def _headers(self, auth):
        headers = {
            protocol.PROTOCOL_HEADER: str(protocol.CURRENT_VERSION),
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
        }
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _call(self, method, path, body, auth=True, timeout=None):
        headers = self._headers(auth)
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"

        status, raw, _ = self._exchange(method, path, payload, headers, timeout or self.timeout)
        return status, _check_status(status, raw)

    def _exchange(self, method, path, payload, headers, timeout):
        """(status, body, {lower-case header name: value})."""
        connection = self._connection_class(self.host, self.port, self.pin, timeout)
        try:
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            answer_headers = {name.lower(): value for name, value in response.getheaders()}
            return response.status, response.read(), answer_headers
        except PinMismatch:
            raise
        except ssl.SSLError as e:
            raise Unreachable(f"TLS handshake failed: {e.reason or e}") from None
        except TimeoutError:
            raise Unreachable("timed out") from None
        except (OSError, http.client.HTTPException) as e:
            raise Unreachable(_describe(e)) from None
        finally:
            connection.close()


def _check_status(status, raw, refusals=()):
    """The JSON answer of a success; else the error class for the status. A 403 whose code
    is in `refusals` refuses this one request (Rejected), not the agent's token."""
    answer = _json_or_none(raw)
    if status < 400:
        return answer

    error = (answer or {}).get("error") if isinstance(answer, dict) else None
    code = (error or {}).get("code", "unknown")
    message = (error or {}).get("message") or raw[:200].decode("utf-8", "replace")
    if status == 426:
        raise ProtocolMismatch(message)
    if status in (401, 403) and code != "registration_not_allowed" and code not in refusals:
        raise Unauthorized(f"appliance answered {status} {code}: {message}")
    if status == 429 or status >= 500:
        raise Unreachable(f"appliance answered {status} {code}: {message}")
    raise Rejected(status, code, message)


def _json_or_none(raw):
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _describe(error):
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, ConnectionResetError):
        return "connection reset"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return str(error) or type(error).__name__


def _quote(job_id):
    return urllib.parse.quote(str(job_id), safe="")
