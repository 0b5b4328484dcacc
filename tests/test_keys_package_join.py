"""Signatures and watermarks carried in the provider package's SIGN and WMRK blocks.

keys/ signs a digest plus a manifest; providers/package.py computes the digest
of the signed region. This checks the two fit on a real packed package.
"""

import json
from datetime import UTC, datetime, timedelta

import pytest

from keys.errors import PackageRejected
from keys.signing import TrustStore, decode_block, encode_block, keygen, sign_digest
from keys.watermark import check, stamp

package_module = pytest.importorskip("providers.package")
SOON = (datetime.now(UTC) + timedelta(days=30)).isoformat(timespec="seconds")


@pytest.fixture
def packed(tmp_path):
    source = tmp_path / "src"
    (source / "bin").mkdir(parents=True)
    (source / "bin" / "provider.py").write_text("print('hello')\n")
    manifest = {
        "schema": "cloudboot.provider/1",
        "name": "raid-perc",
        "version": "1.0.0",
        "vendor": "Acme Storage",
        "kind": "raid",
        "entry": "bin/provider.py",
    }
    (source / "provider.json").write_text(json.dumps(manifest))
    return package_module.pack(source, tmp_path / "raid.cbp")


def test_signed_and_stamped_package_round_trips(tmp_path, packed):
    vendor = keygen("Acme Storage", SOON)
    trust = TrustStore(tmp_path / "data")
    trust.add(vendor.public_record(), actor="admin")
    manifest = json.loads(packed.manifest_bytes)

    signature = sign_digest(packed.digest, manifest, vendor)
    watermark = stamp(
        packed.digest,
        "raid-perc",
        vendor,
        licensee="Bank",
        downloader_id="u1",
        appliance_ids=["appl-1"],
        expires=SOON,
    )
    blob = package_module.encode(
        packed.manifest_bytes, packed.files, encode_block(signature), encode_block(watermark)
    )
    received = package_module.decode(blob)

    # Adding the blocks did not change the signed digest.
    assert received.digest == packed.digest
    record = decode_block(received.signature, "signature")
    assert trust.verify_digest(received.digest, json.loads(received.manifest_bytes), record)
    assert check(
        tmp_path / "data",
        provider="raid-perc",
        package_sha256=received.digest,
        watermark=decode_block(received.watermark, "watermark"),
        licensee="Bank",
        appliance_id="appl-1",
    )

    # A changed byte in the provider's files changes the digest: refused.
    files = bytearray(packed.files)
    files[files.index(b"hello")] ^= 0x20
    tampered = package_module.decode(
        package_module.encode(packed.manifest_bytes, bytes(files), encode_block(signature))
    )
    with pytest.raises(PackageRejected) as raised:
        trust.verify_digest(tampered.digest, manifest, decode_block(tampered.signature, "sig"))
    assert raised.value.reason == "digest_mismatch"


def test_garbage_blocks_are_refused_cleanly():
    with pytest.raises(PackageRejected, match="not JSON"):
        decode_block(b"\xff\xfe", "signature")
    with pytest.raises(PackageRejected, match="not a record"):
        decode_block(b"[1, 2]", "watermark")
    assert decode_block(None, "signature") is None
