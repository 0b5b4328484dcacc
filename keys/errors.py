"""Exceptions raised by the keys package.

One base, KeysError, whose message is a single line an operator can act on.
The subclasses tell callers (the CLI, the API) which answer to give; none of
them ever carries key material in its message.
"""


class KeysError(Exception):
    """An operator-facing error about keys: one line, no key bytes."""


class SealedError(KeysError):
    """The master key is sealed: officers must unseal before any key use."""


class PackageRejected(KeysError):
    """A provider package, signature, watermark or licence failed a check.

    `reason` is a short stable code (unsigned, bad_signature, unknown_vendor,
    revoked_key, expired_key, digest_mismatch, ...) for the API's error shape.
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class WatermarkViolation(PackageRejected):
    """The package is stamped for another licensee or appliance."""

    def __init__(self, message: str, violation: dict):
        super().__init__("watermark_violation", message)
        self.violation = violation
