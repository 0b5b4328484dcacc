"""HTTPS: the self-signed certificate, its fingerprint, and curl over TLS on loopback."""

import base64
import hashlib
import json
import os
import stat

import trio
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from appliance.http import (
    HttpStats,
    Response,
    Router,
    certificate_fingerprint,
    ensure_self_signed,
    make_ssl_context,
)
from appliance.proto.bootparams import format_cmdline, parse_cmdline
from tests.http_support import curl, start_server


async def whoami(request):
    return Response.json({"tls": request.tls, "path": request.path})


def _router(blob):
    async def file(request):
        return Response.file(blob)

    router = Router()
    router.add("GET", "/whoami", whoami)
    router.add("GET", "/blob", file)
    return router


def test_self_signed_pair_is_made_once_with_a_private_key(tmp_path):
    cert_path, key_path = ensure_self_signed(
        tmp_path, ["cloudboot", "cloudboot.pxe.internal"], ["127.0.0.1"]
    )

    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "cloudboot.pxe.internal" in names.get_values_for_type(x509.DNSName)
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]

    first = certificate_fingerprint(cert_path)
    again = ensure_self_signed(tmp_path, ["other"], ["127.0.0.2"])
    assert again == (cert_path, key_path)
    assert certificate_fingerprint(cert_path) == first


def test_fingerprint_is_sha256_of_der_and_fits_the_kernel_command_line(tmp_path):
    cert_path, _ = ensure_self_signed(tmp_path, ["cloudboot"], ["127.0.0.1"])
    der = x509.load_pem_x509_certificate(cert_path.read_bytes()).public_bytes(
        serialization.Encoding.DER
    )

    fingerprint = certificate_fingerprint(cert_path)

    assert fingerprint == "sha256:" + hashlib.sha256(der).hexdigest()
    line = format_cmdline("https://127.0.0.1:443", fingerprint, "52:54:00:12:34:56")
    assert parse_cmdline(line)["fp"] == fingerprint


def _pinned_public_key(cert_path):
    certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256//" + base64.b64encode(hashlib.sha256(spki).digest()).decode()


async def test_curl_over_tls_with_cacert_and_pinned_key(nursery, tmp_path):
    blob = tmp_path / "blob.bin"
    blob.write_bytes(os.urandom(1024 * 1024 + 3))
    cert_path, key_path = ensure_self_signed(tmp_path, ["localhost"], ["127.0.0.1"])
    port = await start_server(
        nursery, _router(blob), ssl_context=make_ssl_context(cert_path, key_path)
    )

    plain = await curl("--cacert", str(cert_path), f"https://127.0.0.1:{port}/whoami")
    assert json.loads(plain.stdout) == {"tls": True, "path": "/whoami"}

    pinned = await curl(
        "-k", "--pinnedpubkey", _pinned_public_key(cert_path), f"https://127.0.0.1:{port}/blob"
    )
    assert pinned.stdout == blob.read_bytes()

    ranged = await curl(
        "--cacert", str(cert_path), "-r", "100-199", f"https://127.0.0.1:{port}/blob"
    )
    assert ranged.stdout == blob.read_bytes()[100:200]


async def test_wrong_pin_is_rejected_by_the_client(nursery, tmp_path):
    cert_path, key_path = ensure_self_signed(tmp_path, ["localhost"], ["127.0.0.1"])
    other_cert, _ = ensure_self_signed(tmp_path / "other", ["localhost"], ["127.0.0.1"])
    port = await start_server(
        nursery, _router(cert_path), ssl_context=make_ssl_context(cert_path, key_path)
    )

    result = await curl(
        "-k",
        "--pinnedpubkey",
        _pinned_public_key(other_cert),
        f"https://127.0.0.1:{port}/whoami",
        check=False,
    )

    assert result.returncode == 90  # CURLE_SSL_PINNEDPUBKEYNOTMATCH
    assert result.stdout == b""


async def test_plain_http_and_broken_handshakes_do_not_stop_the_tls_server(nursery, tmp_path):
    cert_path, key_path = ensure_self_signed(tmp_path, ["localhost"], ["127.0.0.1"])
    stats = HttpStats()
    port = await start_server(
        nursery, _router(cert_path), ssl_context=make_ssl_context(cert_path, key_path), stats=stats
    )

    for garbage in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x16\x03\x01\x00\x05hello", b""):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            if garbage:
                await stream.send_all(garbage)
            with trio.move_on_after(2):
                await stream.receive_some(1024)

    result = await curl("--cacert", str(cert_path), f"https://127.0.0.1:{port}/whoami")
    assert json.loads(result.stdout)["tls"] is True
    assert stats.peer_gone >= 2
