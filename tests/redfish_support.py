"""A local Redfish BMC for the Redfish provider tests: real HTTP on 127.0.0.1, stdlib only.

It serves captured Redfish documents from ../shared/corpus/redfish in place (read when the
server starts, never copied into the repository), by their own @odata.id. Documents a
vendor's capture lacks (Dell's and Supermicro's Systems collection, Lenovo's service root)
are made up as the smallest collection pointing at the captured system, and their Name
says so. Writes are applied to the in-memory copy, with switches that reproduce what
field BMCs do: refuse a full PATCH body, answer 200 and keep the old value, turn a
one-time override into a continuous one, apply power changes a few reads later.
"""

import base64
import datetime
import hashlib
import ipaddress
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# The corpus files of one BMC each. Dell's captures hold two systems at the same path (an
# R6515 and a trimmed R660); the R6515 is the one with inventory.
VENDORS = {
    "dmtf": ("dmtf-public-rackmount1__",),
    "dell": ("bmclib__dell-idrac9__", "bmclib__dell-poweredge-r6515__"),
    "supermicro": ("bmclib__supermicro",),
    "lenovo": ("bmclib__lenovo-",),
}
USER, PASSWORD = "admin", "s3cret-bmc"


def load_documents(corpus, vendor):
    """The vendor's captured documents by @odata.id, plus the made-up missing links."""
    documents = {}
    for prefix in VENDORS[vendor]:
        for path in sorted(Path(corpus, "redfish").glob(prefix + "*.json")):
            document = json.loads(path.read_text())
            documents[_key(document["@odata.id"])] = document
    systems = [p for p, d in documents.items() if "Boot" in d and "PowerState" in d]
    if "/redfish/v1" not in documents:
        documents["/redfish/v1"] = {
            "@odata.id": "/redfish/v1",
            "Name": "made up by the test: the capture has no service root",
            "Systems": {"@odata.id": "/redfish/v1/Systems"},
        }
    if "/redfish/v1/Systems" not in documents:
        documents["/redfish/v1/Systems"] = {
            "@odata.id": "/redfish/v1/Systems",
            "Name": "made up by the test: the capture has no Systems collection",
            "Members": [{"@odata.id": p} for p in sorted(set(systems))],
        }
    return documents


def _key(path):
    return path.rstrip("/") or "/"


class FakeBmc:
    """The server and its state; the quirk switches may be changed between requests."""

    def __init__(self, documents, tls=None):
        self.documents = documents
        self.requests = []
        self.refuse_full_patch = False
        self.ignore_boot_writes = False
        self.once_becomes_continuous = False
        self.power_delay_reads = 2
        self._pending = None
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.port = self.server.server_address[1]
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    @property
    def system_path(self):
        return self.documents["/redfish/v1/Systems"]["Members"][0]["@odata.id"]

    def system(self):
        return self.documents[_key(self.system_path)]

    # --- behaviour ---------------------------------------------------------------------

    def get(self, path):
        with self._lock:
            document = self.documents.get(_key(path))
            if document is not None and _key(path) == _key(self.system_path):
                self._advance_power()
            return document

    def _advance_power(self):
        if self._pending is None:
            return
        self._pending["reads"] -= 1
        if self._pending["reads"] <= 0:
            self.system()["PowerState"] = self._pending["state"]
            self._pending = None

    def patch(self, path, body):
        if _key(path) != _key(self.system_path) or set(body) != {"Boot"}:
            return 405
        boot = body["Boot"]
        if self.refuse_full_patch and len(boot) > 1:
            return 400
        if not self.ignore_boot_writes:
            with self._lock:
                stored = self.system().setdefault("Boot", {})
                stored.update(boot)
                if self.once_becomes_continuous and boot.get("BootSourceOverrideEnabled"):
                    stored["BootSourceOverrideEnabled"] = "Continuous"
        return 200

    def post(self, path, body):
        action = self.system()["Actions"]["#ComputerSystem.Reset"]
        if path != action["target"]:
            return 404
        reset_type = body.get("ResetType")
        if reset_type not in action.get("ResetType@Redfish.AllowableValues", [reset_type]):
            return 400
        state = "Off" if reset_type in ("ForceOff", "GracefulShutdown") else "On"
        with self._lock:
            self._pending = {"state": state, "reads": self.power_delay_reads}
        return 204


def _handler(bmc):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _authorised(self):
            expected = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            if self.headers.get("Authorization") == f"Basic {expected}":
                return True
            self._answer(401, {"error": "authentication required"})
            return False

        def _body(self):
            length = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(length) or b"{}")

        def _answer(self, status, document=None):
            payload = json.dumps(document).encode() if document is not None else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self):
            bmc.requests.append(("GET", self.path, None))
            if self._authorised():
                document = bmc.get(self.path)
                self._answer(200 if document else 404, document or {"error": "not found"})

        def do_PATCH(self):
            body = self._body()
            bmc.requests.append(("PATCH", self.path, body))
            if self._authorised():
                self._answer(bmc.patch(self.path, body))

        def do_POST(self):
            body = self._body()
            bmc.requests.append(("POST", self.path, body))
            if self._authorised():
                self._answer(bmc.post(self.path, body))

    return Handler


class Recorder:
    """An event sink for the provider logic, keeping everything for the assertions."""

    def __init__(self):
        self.events = []

    def progress(self, percent, message):
        self.events.append(("progress", percent, message))

    def log(self, level, message):
        self.events.append(("log", level, message))

    def warnings(self):
        return [m for kind, level, m in self.events if kind == "log" and level == "warning"]


def self_signed_certificate(directory):
    """A BMC-like self-signed certificate for 127.0.0.1; returns (cert, key, sha256 hex)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bmc.test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "bmc.crt"
    key_path = directory / "bmc.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    der = certificate.public_bytes(serialization.Encoding.DER)
    return cert_path, key_path, hashlib.sha256(der).hexdigest()
