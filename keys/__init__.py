"""Keys: the master key, envelope encryption, and vendor signatures for providers.

Everything in this package that touches a key is reached through a master key
source (keys.master: key file, dual control, PKCS#11 token) and a keyring of
wrapped data keys (keys.envelope). Provider packages are checked with vendor
Ed25519 signatures (keys.signing) and watermarks (keys.watermark). docs/keys.md
is the description a bank's security team reads.

This package must never import from appliance/ (tests/test_layering.py checks),
and must never write a key in clear into the data directory, a log line or the
environment of a child process.
"""

from keys.errors import KeysError

__all__ = ["KeysError"]
