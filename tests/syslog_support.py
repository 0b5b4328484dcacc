"""A real rsyslog (Debian package) started on loopback as a second instance, for the tests.

`Rsyslog(folder, port, transport)` writes a configuration with imtcp ("tls"
with the gtls driver, or "tcp"), imudp ("udp") or imrelp ("relp", Debian
package rsyslog-relp; "relp+tls" with its GnuTLS support) on 127.0.0.1, and
an omfile action writing each received message as it arrived (%rawmsg%) to a
file. For RELP the main queue is Direct: the omfile write happens before
imrelp answers `rsp 200`, so an acknowledged message is in the file even if
the daemon is SIGKILLed right after (the configuration a bank's collector needs
for RELP's guarantee to mean "stored"). start() and kill() run and SIGKILL
the daemon; stop() ends it with SIGTERM; messages() reads what it wrote.
"""

import datetime
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
IMRELP = "/usr/lib/x86_64-linux-gnu/rsyslog/imrelp.so"


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def self_signed(folder):
    """A certificate for 127.0.0.1 and its key (PEM files); returns (cert, key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "collector.test")])
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "collector.pem", folder / "collector.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class Rsyslog:
    def __init__(self, folder, port, transport="tls"):
        if not os.path.exists(RSYSLOGD):
            pytest.skip("rsyslogd is not installed (Debian packages rsyslog, rsyslog-gnutls)")
        if transport.startswith("relp") and not os.path.exists(IMRELP):
            pytest.skip("rsyslog's imrelp is not installed (Debian package rsyslog-relp)")
        self.folder = folder
        self.port = port
        self.transport = transport
        self.output = folder / "received.log"
        self.pidfile = folder / "rsyslogd.pid"
        self.work = folder / "work"
        self.work.mkdir(exist_ok=True)
        self.process = None
        if transport in ("tls", "relp+tls"):
            self.cert, self.key = self_signed(folder)
        self.conf = folder / "rsyslog.conf"
        self.conf.write_text(self._config())

    def _config(self):
        lines = [f'global(workDirectory="{self.work}"']
        if self.transport == "tls":
            lines[0] += (
                f' defaultNetstreamDriver="gtls" defaultNetstreamDriverCAFile="{self.cert}"'
                f' defaultNetstreamDriverCertFile="{self.cert}"'
                f' defaultNetstreamDriverKeyFile="{self.key}"'
            )
        # Room for large details; imrelp refuses a frame over its maxDataSize.
        lines[0] += ' maxMessageSize="64k")'
        if self.transport.startswith("relp"):
            lines.append('main_queue(queue.type="Direct")')
            lines.append('module(load="imrelp")')
            lines.append(
                f'input(type="imrelp" address="127.0.0.1" port="{self.port}"{self._relp_tls()})'
            )
        elif self.transport == "udp":
            lines.append('module(load="imudp")')
            lines.append(f'input(type="imudp" address="127.0.0.1" port="{self.port}")')
        else:
            driver = (
                ' streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon"'
                if self.transport == "tls"
                else ""
            )
            lines.append(f'module(load="imtcp"{driver})')
            lines.append(f'input(type="imtcp" address="127.0.0.1" port="{self.port}")')
        lines.append('template(name="raw" type="string" string="%rawmsg%\\n")')
        lines.append(f'action(type="omfile" file="{self.output}" template="raw")')
        return "\n".join(lines) + "\n"

    def _relp_tls(self):
        if self.transport != "relp+tls":
            return ""
        return (
            # imrelp with its own certificate always asks the client for one (mutual
            # TLS); "certvalid" accepts any client certificate that chains to caCert.
            f' tls="on" tls.authMode="certvalid" tls.caCert="{self.cert}"'
            f' tls.myCert="{self.cert}" tls.myPrivKey="{self.key}"'
        )

    def start(self):
        self.pidfile.unlink(missing_ok=True)
        self.process = subprocess.Popen(
            [RSYSLOGD, "-n", "-f", str(self.conf), "-i", str(self.pidfile)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"rsyslogd exited: {self.process.stdout.read().decode()}")
            if self.transport == "udp" or _listening(self.port):
                return
            time.sleep(0.05)
        output = self.process.stdout.peek() if self.process.stdout else b""
        self.kill()
        raise RuntimeError(f"rsyslogd did not start listening within 15 s: {output!r:.500}")

    def stop(self):
        """A clean shutdown (SIGTERM), as `systemctl stop rsyslog` does."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)

    def kill(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def messages(self):
        try:
            return self.output.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []


def _listening(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False
