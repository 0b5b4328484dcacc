"""A small Redfish HTTP client for the Redfish provider: stdlib only, one BMC per instance.

BMCs almost always present self-signed certificates, so chain validation cannot be used.
The operator either pins the certificate (`tls_fingerprint_sha256`, the SHA-256 of its DER
bytes) or says `insecure: true` explicitly. With a pin, the fingerprint is compared right
after the TLS handshake and before any request, so credentials never reach a BMC that
presented another certificate. This module must never send credentials over a connection
whose certificate it has not checked (unless the request said insecure), never follow
redirects, and never read an unbounded body.
"""

import base64
import hashlib
import http.client
import json
import re
import socket
import ssl

MAX_BODY_BYTES = 4 << 20
FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")


class BmcError(Exception):
    """Talking to the BMC failed; the message says what was expected and what arrived."""

    def __init__(self, message, status=None, body=None):
        super().__init__(message)
        self.status = status
        self.body = body


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        if not self.body:
            return {}
        try:
            return json.loads(self.body)
        except ValueError:
            raise BmcError(f"expected JSON from the BMC, got {self.body[:80]!r}") from None


def normalise_fingerprint(text):
    """'AB:CD:...' or 'abcd...' to 64 lower-case hex digits; raises ValueError."""
    cleaned = str(text).replace(":", "").strip().lower()
    if not FINGERPRINT.match(cleaned):
        raise ValueError(f"tls_fingerprint_sha256: expected 64 hex digits, got {text!r:.100}")
    return cleaned


class Client:
    """GET/PATCH/POST JSON to one BMC with Basic authentication."""

    def __init__(self, host, port, username, password, scheme="https", fingerprint=None,
                 insecure=False, timeout=20.0):  # fmt: skip
        if scheme not in ("https", "http"):
            raise ValueError(f"scheme: expected https or http, got {scheme!r:.40}")
        if scheme == "https" and fingerprint is None and not insecure:
            raise ValueError(
                "https needs tls_fingerprint_sha256 (the BMC certificate's SHA-256) "
                "or an explicit insecure: true"
            )
        self.host = host
        self.port = port
        self.scheme = scheme
        self.fingerprint = None if fingerprint is None else normalise_fingerprint(fingerprint)
        self.timeout = timeout
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        self._authorization = f"Basic {token}"

    def get(self, path):
        return self.request("GET", path)

    def patch(self, path, body):
        return self.request("PATCH", path, body)

    def post(self, path, body):
        return self.request("POST", path, body)

    def request(self, method, path, body=None):
        """One request on a fresh connection; returns a Response for any HTTP status."""
        connection = self._connect()
        try:
            headers = {"Authorization": self._authorization, "Accept": "application/json"}
            payload = None
            if body is not None:
                payload = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            connection.request(method, path, body=payload, headers=headers)
            reply = connection.getresponse()
            data = reply.read(MAX_BODY_BYTES + 1)
            if len(data) > MAX_BODY_BYTES:
                raise BmcError(f"{method} {path}: answer larger than {MAX_BODY_BYTES} bytes")
            return Response(reply.status, dict(reply.getheaders()), data)
        except (OSError, http.client.HTTPException) as exc:
            raise BmcError(f"{method} {path}: {_describe(exc)}") from None
        finally:
            connection.close()

    def _connect(self):
        where = f"{self.scheme}://{self.host}:{self.port}"
        if self.scheme == "http":
            connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        else:
            connection = http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout, context=_tls_context()
            )
        try:
            connection.connect()
        except (OSError, http.client.HTTPException) as exc:
            raise BmcError(f"cannot connect to {where}: {_describe(exc)}") from None
        if self.fingerprint is not None:
            self._check_pin(connection, where)
        return connection

    def _check_pin(self, connection, where):
        der = connection.sock.getpeercert(binary_form=True) or b""
        seen = hashlib.sha256(der).hexdigest()
        if seen != self.fingerprint:
            connection.close()
            raise BmcError(
                f"{where} presented a certificate with SHA-256 {seen}, "
                f"expected the pinned {self.fingerprint}; nothing was sent"
            )


def _tls_context():
    # The chain of a BMC's self-signed certificate cannot be validated; the pin (or the
    # operator's explicit insecure flag) replaces it. TLS 1.2 is the floor: iDRAC 8 and
    # older iLO firmware speak nothing newer.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _describe(exc):
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc.reason or exc}"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
