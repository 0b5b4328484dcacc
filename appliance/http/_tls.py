"""TLS for the API listener: the SSL context, a self-signed certificate, its fingerprint.

When the operator gives no certificate, the appliance makes a self-signed one on
first start and keeps it in the data directory. The agent in BootOS cannot check
it against a CA, so the iPXE script passes its SHA-256 fingerprint on the kernel
command line (appliance/proto/bootparams.py) and the agent pins that. The
private key is written 0600 and never logged or returned by any API.
"""

import datetime
import hashlib
import ipaddress
import logging
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

logger = logging.getLogger(__name__)

_VALID_DAYS = 3650


def make_ssl_context(cert_path, key_path):
    """A server-side SSLContext (TLS 1.2 or later, HTTP/1.1 by ALPN) for the given PEM files."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(os.fspath(cert_path), os.fspath(key_path))
    context.set_alpn_protocols(["http/1.1"])
    return context


def ensure_self_signed(data_dir, names, addresses):
    """Return (cert_path, key_path) under <data_dir>/tls, making a self-signed pair if absent.

    `names` are DNS names and `addresses` IP addresses for the subjectAltName.
    An existing pair is kept as it is: the agents already pin its fingerprint.
    """
    folder = Path(data_dir) / "tls"
    cert_path = folder / "appliance.crt"
    key_path = folder / "appliance.key"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path

    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = _self_signed(key, list(names), list(addresses))

    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write(key_path, key_pem, 0o600)
    _write(cert_path, certificate.public_bytes(serialization.Encoding.PEM), 0o644)
    logger.info(
        "made a self-signed TLS certificate %s (%s)", cert_path, certificate_fingerprint(cert_path)
    )
    return cert_path, key_path


def certificate_fingerprint(cert_path):
    """ "sha256:<hex>" of the certificate's DER encoding, the form the agent pins."""
    certificate = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    der = certificate.public_bytes(serialization.Encoding.DER)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def _self_signed(key, names, addresses):
    common_name = names[0] if names else "cloudboot"
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    alt_names = [x509.DNSName(name) for name in names]
    alt_names += [x509.IPAddress(ipaddress.ip_address(address)) for address in addresses]
    now = datetime.datetime.now(datetime.UTC)

    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    return builder.sign(key, hashes.SHA256())


def _write(path, data, mode):
    # Write beside the target and rename, so a crash never leaves half a key.
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(partial, path)
