"""Master key in a PKCS#11 token (a bank HSM; SoftHSM2 in tests).

Each master key version is an AES-256 secret key object generated inside the
token, marked sensitive and non-extractable, labelled `cloudboot-master-v<N>`
with CKA_ID <N>. Data keys are wrapped and unwrapped by the token with AES-GCM
(12-byte nonce, the version-binding AAD, 128-bit tag): the key never leaves
the token, and this process only sees data keys. The versions live in the
token itself; rotation generates a new object and retirement destroys one.

The user PIN is read from a file outside the data directory (mode 0400, like a
key file). Nothing here may log or store the PIN.

python-pkcs11 initialises the vendor library once per process, so one process
talks to one library (and, for SoftHSM2, one SOFTHSM2_CONF).
"""

import logging
import re
import secrets
from pathlib import Path

from keys.errors import KeysError
from keys.master import MasterKeySource, read_private_file, refuse_inside

log = logging.getLogger(__name__)

LABEL_PREFIX = "cloudboot-master-v"
GCM_NONCE = 12  # PKCS#11 tokens commonly accept at most a 96-bit GCM IV.


def _pkcs11():
    try:
        import pkcs11
    except ImportError:
        raise KeysError(
            "the PKCS#11 source needs python-pkcs11 (pip install python-pkcs11)"
        ) from None
    return pkcs11


def read_pin(pin_file, data_dir) -> str:
    refuse_inside(Path(pin_file), data_dir)
    return read_private_file(Path(pin_file), "PKCS#11 PIN file").decode().strip()


def _open_session(pkcs11, token, pin: str):
    """A read-write session, logged in as the user.

    PKCS#11 login state belongs to the application, not the session: a second
    source in the same process (the CLI's rotate after init) finds the user
    logged in already, and its new session shares that login.
    """
    try:
        return token.open(user_pin=pin, rw=True)
    except pkcs11.UserAlreadyLoggedIn:
        return token.open(rw=True)


class Pkcs11Master(MasterKeySource):
    """Master key versions held as non-extractable AES keys inside a token."""

    source = "pkcs11"

    def __init__(self, library: str, token_label: str, pin: str, audit_fn):
        pkcs11 = _pkcs11()
        self.library, self.token_label = library, token_label
        try:
            lib = pkcs11.lib(library)
            token = lib.get_token(token_label=token_label)
            self.session = _open_session(pkcs11, token, pin)
        except pkcs11.NoSuchToken:
            raise KeysError(f"no PKCS#11 token labelled {token_label!r} in {library}") from None
        except pkcs11.PinIncorrect:
            raise KeysError(f"the PIN for PKCS#11 token {token_label!r} is wrong") from None
        except (pkcs11.PKCS11Error, RuntimeError, OSError) as exc:
            raise KeysError(f"cannot open PKCS#11 token {token_label!r}: {exc!r}") from None
        super().__init__(f"pkcs11-{token_label}", audit_fn)

    @classmethod
    def from_config(cls, config: dict, audit_fn, data_dir) -> "Pkcs11Master":
        pin = read_pin(config["pin_file"], data_dir)
        return cls(config["library"], config["token_label"], pin, audit_fn)

    def _objects(self) -> dict[int, object]:
        pkcs11 = _pkcs11()
        found = {}
        for key in self.session.get_objects(
            {pkcs11.Attribute.CLASS: pkcs11.ObjectClass.SECRET_KEY}
        ):
            match = re.fullmatch(re.escape(LABEL_PREFIX) + r"(\d+)", key.label or "")
            if match:
                found[int(match.group(1))] = key
        return found

    def versions(self) -> list[int]:
        return sorted(self._objects())

    def current_version(self) -> int:
        versions = self.versions()
        if not versions:
            raise KeysError(
                f"token {self.token_label!r} holds no CloudBoot master key; run keys init"
            )
        return versions[-1]

    def _object(self, version: int):
        key = self._objects().get(version)
        if key is None:
            raise KeysError(f"master key version {version} is retired or unknown")
        return key

    def _wrap(self, version, data_key, aad) -> bytes:
        pkcs11 = _pkcs11()
        nonce = secrets.token_bytes(GCM_NONCE)
        params = pkcs11.GCMParams(nonce, aad)
        sealed = self._object(version).encrypt(
            bytes(data_key), mechanism=pkcs11.Mechanism.AES_GCM, mechanism_param=params
        )
        return nonce + sealed

    def _unwrap(self, version, blob, aad) -> bytearray:
        pkcs11 = _pkcs11()
        params = pkcs11.GCMParams(blob[:GCM_NONCE], aad)
        try:
            opened = self._object(version).decrypt(
                blob[GCM_NONCE:], mechanism=pkcs11.Mechanism.AES_GCM, mechanism_param=params
            )
        except pkcs11.PKCS11Error:
            raise KeysError("wrapped data was altered or belongs to another key") from None
        return bytearray(opened)

    def generate(self, version: int) -> None:
        """Make version `version` inside the token: AES-256, sensitive, never extractable."""
        pkcs11 = _pkcs11()
        attribute = pkcs11.Attribute
        self.session.generate_key(
            pkcs11.KeyType.AES,
            256,
            label=f"{LABEL_PREFIX}{version}",
            id=str(version).encode(),
            store=True,
            template={
                attribute.SENSITIVE: True,
                attribute.EXTRACTABLE: False,
                attribute.ENCRYPT: True,
                attribute.DECRYPT: True,
                attribute.WRAP: False,
                attribute.UNWRAP: False,
            },
        )

    def _rotate(self) -> int:
        version = max(self.versions(), default=0) + 1
        self.generate(version)
        return version

    def _retire(self, version) -> None:
        self._object(version).destroy()

    def status(self) -> dict:
        status = super().status()
        status.update(library=self.library, token_label=self.token_label)
        return status

    def close(self) -> None:
        self.session.close()
