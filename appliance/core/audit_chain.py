"""Signing and verifying the audit hash chain.

The chain (appliance/core/audit.py) shows an edit, a deletion in the middle,
an insertion or a reordering by itself. What it cannot show alone is a chain
rewritten from some point on with fresh hashes, or events cut off its end:
for that the appliance signs the chain head at intervals with an Ed25519 key
(<data_dir>/keys/audit-signing.key, 0400, made on first use) and stores the
signed head in `audit_heads`. The retention job leaves a signed head of kind
'prune' where it cut the chain, so the chain stays verifiable across the cut.

verify() checks every link and every signed head against the key on disk and
names the first event that does not fit. It reads only; it must never repair
anything, and this module must never write the signing key anywhere but its
own file.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import nacl.exceptions
import nacl.signing

from appliance.backup.keysource import write_private_once
from appliance.core import audit
from appliance.store import now

log = logging.getLogger(__name__)

SIGNING_KEY_FILE = "audit-signing.key"
VERIFY_KEY_FILE = "audit-signing.pub"


class AuditChainError(Exception):
    """The signing key cannot be read or made."""


def _keys_dir(data_dir):
    return Path(data_dir) / "keys"


def signing_key(data_dir):
    """The appliance's audit signing key, made on first use (0400, beside the other keys)."""
    path = _keys_dir(data_dir) / SIGNING_KEY_FILE
    try:
        return nacl.signing.SigningKey(bytes.fromhex(path.read_text().strip()))
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as e:
        raise AuditChainError(f"audit signing key {path} is unreadable or damaged: {e}") from None

    key = nacl.signing.SigningKey.generate()
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not write_private_once(path, key.encode().hex() + "\n"):
            # Another process made it first: use theirs.
            return signing_key(data_dir)
        public = path.parent / VERIFY_KEY_FILE
        public.write_text(key.verify_key.encode().hex() + "\n")
    except OSError as e:
        raise AuditChainError(f"cannot create the audit signing key {path}: {e}") from None
    log.info("made the audit signing key %s", path)
    return key


def verify_key(data_dir):
    """The public half, for verification; made with the private key when missing."""
    path = _keys_dir(data_dir) / VERIFY_KEY_FILE
    try:
        return nacl.signing.VerifyKey(bytes.fromhex(path.read_text().strip()))
    except FileNotFoundError:
        return signing_key(data_dir).verify_key
    except (OSError, ValueError) as e:
        raise AuditChainError(f"audit verify key {path} is unreadable or damaged: {e}") from None


def _statement(kind, signed_at, event_id, event_hash):
    return f"cloudboot.audit-head/1|{kind}|{signed_at}|{event_id}|{event_hash}".encode()


def sign_head(conn, key, kind="head", event=None, archive=None):
    """Write function: sign the newest event (or `event` = (id, hash)); returns the head.

    Returns None when the log is empty or the newest event is already signed.
    """
    event_id, event_hash = event or audit.chain_head(conn)
    if event_id == 0:
        return None
    if kind == "head":
        signed = conn.execute(
            "SELECT 1 FROM audit_heads WHERE event_id = ? AND event_hash = ?",
            (event_id, event_hash),
        ).fetchall()
        if signed:
            return None

    signed_at = now()
    signature = key.sign(_statement(kind, signed_at, event_id, event_hash)).signature
    conn.execute(
        "INSERT INTO audit_heads (kind, signed_at, event_id, event_hash, verify_key, signature,"
        " archive) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            kind,
            signed_at,
            event_id,
            event_hash,
            key.verify_key.encode().hex(),
            signature.hex(),
            archive,
        ),
    )
    return {"kind": kind, "signed_at": signed_at, "event_id": event_id, "event_hash": event_hash}


async def sign_heads_forever(store, data_dir, interval_seconds):
    """Sign the chain head every interval; serve.py runs this in its nursery."""
    import trio

    key = await trio.to_thread.run_sync(signing_key, data_dir)
    while True:
        await store.write(sign_head, key)
        await trio.sleep(interval_seconds)


@dataclass
class Verdict:
    ok: bool
    events_checked: int
    heads_checked: int
    first_bad_id: int | None = None
    message: str = ""

    def as_dict(self):
        return dict(self.__dict__)


class _Break(Exception):
    def __init__(self, event_id, message):
        super().__init__(message)
        self.event_id = event_id
        self.message = message


def verify(conn, trusted_key):
    """Read function: check the whole chain and every signed head; returns a Verdict."""
    heads = conn.execute(
        "SELECT id, kind, signed_at, event_id, event_hash, signature FROM audit_heads ORDER BY id"
    ).fetchall()
    checked = 0
    try:
        _check_signatures(heads, trusted_key)
        checked = _check_links(conn, heads)
    except _Break as e:
        return Verdict(False, checked, len(heads), e.event_id, e.message)
    return Verdict(
        True, checked, len(heads), None, f"{checked} events and {len(heads)} signed heads verified"
    )


def _check_signatures(heads, trusted_key):
    for head_id, kind, signed_at, event_id, event_hash, signature in heads:
        try:
            trusted_key.verify(
                _statement(kind, signed_at, event_id, event_hash), bytes.fromhex(signature)
            )
        except (nacl.exceptions.BadSignatureError, ValueError):
            raise _Break(
                event_id,
                f"signed head #{head_id} (event {event_id}, {signed_at}) does not carry a valid "
                "signature of this appliance's audit key: heads were forged or altered",
            ) from None


def _check_links(conn, heads):
    pruned = [h for h in heads if h[1] == "prune"]
    expected_id, expected_prev = 1, audit.GENESIS
    if pruned:
        last_cut = max(pruned, key=lambda h: h[3])
        expected_id, expected_prev = last_cut[3] + 1, last_cut[4]
    signed = {}
    for head in heads:
        signed.setdefault(head[3], []).append(head)
    _check_nothing_before(conn, expected_id, bool(pruned))

    checked = 0
    for row in audit.iter_events(conn, after_id=expected_id - 1):
        _check_event(row, expected_id, expected_prev, signed)
        expected_id, expected_prev = row[0] + 1, row[-1]
        checked += 1

    _check_tail(signed, expected_id - 1)
    return checked


def _check_nothing_before(conn, first_id, pruned):
    """The chain starts at first_id: an event below it was slipped in, never checked.

    Searches and exports show every row, so a row the walk below would skip (an id of 0
    or less, or one at or below the last prune cut, which the retention job deleted) is a
    forgery the verifier must name.
    """
    rows = conn.execute("SELECT MIN(id) FROM audit_events WHERE id < ?", (first_id,)).fetchall()
    stray = rows[0][0]
    if stray is None:
        return
    where = f"at or below the prune cut at event {first_id - 1}" if pruned else "before event 1"
    raise _Break(
        stray, f"event {stray} lies {where}: it was inserted after the chain passed there"
    )


def _check_event(row, expected_id, expected_prev, signed):
    *columns, prev_hash, stored_hash = row
    event_id = columns[0]

    if event_id != expected_id:
        raise _Break(
            expected_id,
            f"event {expected_id} is missing (deleted): the next event present is {event_id}",
        )
    if prev_hash != expected_prev:
        raise _Break(
            event_id,
            f"event {event_id} does not link to the event before it: an event before it was "
            "deleted, inserted or moved, or its link was edited",
        )
    if stored_hash != audit.link_hash(prev_hash, columns):
        raise _Break(event_id, f"event {event_id} was edited: its content does not match its hash")

    for head in signed.get(event_id, ()):
        if head[4] != stored_hash:
            raise _Break(
                event_id,
                f"event {event_id} differs from the head signed at {head[2]}: the chain was "
                "rewritten from this event on",
            )


def _check_tail(signed, last_id):
    beyond = [h for event_id, hs in signed.items() if event_id > last_id for h in hs]
    if beyond:
        head = max(beyond, key=lambda h: h[3])
        raise _Break(
            last_id + 1,
            f"events after {last_id} are missing: a head signed at {head[2]} covers up to "
            f"event {head[3]}",
        )
