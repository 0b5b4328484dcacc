"""A small real HTTPS server speaking the agent routes, for the agent's tests.

It listens on 127.0.0.1 with a self-signed certificate made by `cryptography`,
records every request it parses, and answers from a queue of jobs the test
fills. Tests use it to check what actually crossed the wire, including that
nothing did when the certificate pin is wrong. It is not the appliance: the
appliance's own routes are tested against this agent separately.
"""

import datetime
import http.server
import json
import queue
import socket
import ssl
import threading

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bootos.agent.client import fingerprint


def make_certificate(directory, name="cloudboot-test"):
    """Write cert.pem and key.pem; returns (cert path, key path, "sha256:..." pin)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path, fingerprint(cert.public_bytes(serialization.Encoding.DER))


class FakeAppliance:
    """State shared with the handler: requests seen, jobs to hand out, results received."""

    def __init__(self, cert_path, key_path, port=0):
        self.requests = []
        self.results = []
        self.jobs = queue.Queue()
        self.register_answer = None  # (status, body) to answer instead of success
        self.poll_answers = queue.Queue()  # (status, body) answered before jobs
        self.token = "agent-token-1"
        self.registrations = 0

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_path, key_path)
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self.server.daemon_threads = True
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.server.appliance = self
        self.port = self.server.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        self._dispatch()

    def do_GET(self):
        self._dispatch()

    def _dispatch(self):
        appliance = self.server.appliance
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        appliance.requests.append(
            {
                "method": self.command,
                "path": self.path,
                "headers": dict(self.headers),
                "body": body,
            }
        )

        if self.headers.get("X-CloudBoot-Agent-Protocol") != "1":
            return self._error(426, "agent_protocol_unsupported", "this appliance speaks 1")
        if self.path == "/api/v1/agent/register":
            return self._register(appliance, body)
        if self.headers.get("Authorization") != f"Bearer {appliance.token}":
            return self._error(401, "unauthorized", "unknown agent token")
        if self.path.startswith("/api/v1/agent/jobs/next"):
            return self._next_job(appliance)
        if self.path.endswith("/result"):
            appliance.results.append({"job_id": self.path.split("/")[5], **body})
            return self._send(204, None)
        return self._send(204, None)

    def _register(self, appliance, body):
        appliance.registrations += 1
        if appliance.register_answer:
            status, answer = appliance.register_answer
            return self._send(status, answer)
        answer = {"machine_id": "m-1", "token": appliance.token, "state": "new", "approved": True}
        return self._send(200, answer)

    def _next_job(self, appliance):
        try:
            status, answer = appliance.poll_answers.get_nowait()
            return self._send(status, answer)
        except queue.Empty:
            pass
        try:
            job = appliance.jobs.get(timeout=0.2)
        except queue.Empty:
            return self._send(204, None)
        return self._send(200, {"job": job})

    def _error(self, status, code, message):
        self._send(status, {"error": {"code": code, "message": message, "trace_id": "t"}})

    def _send(self, status, answer):
        data = json.dumps(answer).encode() if answer is not None else b""
        self.send_response(status)
        if data:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def closed_port():
    """A loopback port with nothing listening (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
