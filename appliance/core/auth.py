"""Users, roles and bearer tokens.

Roles are ordered viewer < operator < admin: a role may do everything the
roles below it may. A user token belongs to a named local user and carries
that user's current role (demoting a user demotes every token they hold). An
agent token belongs to exactly one machine and reaches only that machine's
agent routes.

Tokens are 32 random bytes (256 bits), shown once when issued and kept only
as their SHA-256. A slow password hash (bcrypt, argon2) exists to make
guessing a low-entropy password expensive; a 256-bit random token cannot be
guessed, so one fast hash per request is enough and a stolen database still
yields no usable token. The lookup is by hash, and the stored hash is then
compared with hmac.compare_digest, so no comparison of secret bytes
short-circuits. This module never logs or stores a token in clear.
"""

import dataclasses
import datetime
import hashlib
import hmac
import logging
import secrets
from pathlib import Path

from appliance.core import audit
from appliance.store import now

log = logging.getLogger(__name__)

ROLES = ("viewer", "operator", "admin")
_RANK = {role: rank for rank, role in enumerate(ROLES)}

# The user `cloudboot token issue` creates when none is named.
BUILTIN_ADMIN = "admin"
TOKEN_PREFIX = "cbt_"
MAX_TTL_DAYS = 3650

# The file serve.py opens in the data directory.
DATABASE_FILE = "cloudboot.db"


class AuthError(Exception):
    """An auth request that cannot be done; `status` and `code` are what the API answers."""

    def __init__(self, status, code, message):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who a request acts as. `name` goes into audit records and job records."""

    kind: str  # "user" or "agent"
    name: str
    role: str  # a user's role, or "agent"
    token_id: str
    machine_id: str | None = None


def hash_token(token):
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def new_token():
    """(token text shown once, token id, SHA-256 of the token)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, "tok_" + secrets.token_hex(8), hash_token(token)


def expiry(days):
    moment = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=days)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def check_role(role):
    if not isinstance(role, str) or role not in _RANK:
        raise AuthError(400, "invalid_role", f"role must be one of {list(ROLES)}, got {role!r}")
    return role


def check_user_name(name):
    if not isinstance(name, str) or not 1 <= len(name) <= 64 or not name.isprintable():
        raise AuthError(
            400, "invalid_user", f"user name must be 1-64 printable characters, got {name!r:.80}"
        )
    if name != name.strip() or ":" in name:
        raise AuthError(
            400,
            "invalid_user",
            f"user name must not hold spaces at its ends or ':', got {name!r:.80}",
        )
    return name


def role_allows(have, need):
    return have in _RANK and _RANK[have] >= _RANK[need]


# -- write functions (run inside store.write) ---------------------------------


def create_user(conn, name, role, actor, trace_id=None, source=None):
    check_user_name(name)
    check_role(role)
    if _user(conn, name) is not None:
        raise AuthError(409, "user_exists", f"user {name!r} already exists")

    conn.execute(
        "INSERT INTO users (name, role, created_at) VALUES (?, ?, ?)", (name, role, now())
    )
    audit.record(
        conn,
        actor=actor,
        action="user.create",
        resource_type="user",
        resource_id=name,
        trace_id=trace_id,
        source=source,
        details={"role": role},
    )
    return user_view(_user(conn, name))


def issue_user_token(conn, user_name, ttl_days, actor, minted, description="", **where):
    """Store the token `minted` (from new_token) for a user; returns its public record."""
    check_user_name(user_name)
    user = _user(conn, user_name)
    if user is None:
        raise AuthError(404, "user_not_found", f"no user named {user_name!r}")
    if user["disabled"]:
        raise AuthError(409, "user_disabled", f"user {user_name!r} is disabled")
    if not isinstance(ttl_days, int) or isinstance(ttl_days, bool):
        raise AuthError(400, "invalid_ttl", f"ttl_days must be a whole number, got {ttl_days!r}")
    if not 1 <= ttl_days <= MAX_TTL_DAYS:
        raise AuthError(400, "invalid_ttl", f"ttl_days must be 1-{MAX_TTL_DAYS}, got {ttl_days}")

    _token, token_id, digest = minted
    conn.execute(
        "INSERT INTO api_tokens (id, token_hash, kind, user_name, description, created_at,"
        " expires_at) VALUES (?, ?, 'user', ?, ?, ?, ?)",
        (token_id, digest, user_name, str(description)[:200], now(), expiry(ttl_days)),
    )
    audit.record(
        conn,
        actor=actor,
        action="token.issue",
        resource_type="token",
        resource_id=token_id,
        details={"user": user_name, "role": user["role"], "ttl_days": ttl_days},
        **where,
    )
    return token_view(_token_row(conn, token_id))


def issue_agent_token(conn, machine_id, ttl_days, minted, **where):
    """Revoke the machine's earlier agent tokens and store a new one."""
    _token, token_id, digest = minted
    stamp = now()
    revoked = conn.execute(
        "UPDATE api_tokens SET revoked_at = ? WHERE kind = 'agent' AND machine_id = ?"
        " AND revoked_at IS NULL RETURNING id",
        (stamp, machine_id),
    ).fetchall()
    conn.execute(
        "INSERT INTO api_tokens (id, token_hash, kind, machine_id, description, created_at,"
        " expires_at) VALUES (?, ?, 'agent', ?, 'agent registration', ?, ?)",
        (token_id, digest, machine_id, stamp, expiry(ttl_days)),
    )
    audit.record(
        conn,
        actor=f"machine:{machine_id}",
        action="token.issue",
        resource_type="token",
        resource_id=token_id,
        details={"kind": "agent", "machine_id": machine_id, "revoked": [r[0] for r in revoked]},
        **where,
    )
    return token_id


def revoke_token(conn, token_id, actor, **where):
    row = _token_row(conn, token_id)
    if row is None:
        raise AuthError(404, "token_not_found", f"no token with id {token_id!r}")

    if row["revoked_at"] is None:
        conn.execute("UPDATE api_tokens SET revoked_at = ? WHERE id = ?", (now(), token_id))
    audit.record(
        conn,
        actor=actor,
        action="token.revoke",
        resource_type="token",
        resource_id=token_id,
        details={"user": row["user_name"], "machine_id": row["machine_id"]},
        **where,
    )
    return token_view(_token_row(conn, token_id))


def revoke_machine_tokens(conn, machine_id):
    conn.execute(
        "UPDATE api_tokens SET revoked_at = ? WHERE machine_id = ? AND revoked_at IS NULL",
        (now(), machine_id),
    )


# -- read functions (run inside store.read) -----------------------------------


def principal_for_digest(conn, digest, at):
    """The Principal a token hash stands for, or an AuthError saying why not."""
    row = conn.execute(
        "SELECT t.id, t.token_hash, t.kind, t.user_name, t.machine_id, t.expires_at,"
        " t.revoked_at, u.role, u.disabled, m.state FROM api_tokens t"
        " LEFT JOIN users u ON u.name = t.user_name"
        " LEFT JOIN machines m ON m.id = t.machine_id WHERE t.token_hash = ?",
        (digest,),
    ).fetchone()

    if row is None or not hmac.compare_digest(bytes(row[1]), digest):
        return AuthError(401, "invalid_token", "the bearer token is not known to this appliance")
    token_id, _, kind, user_name, machine_id, expires_at, revoked_at, role, disabled, state = row
    if revoked_at is not None:
        return AuthError(401, "token_revoked", f"token {token_id} was revoked at {revoked_at}")
    if expires_at <= at:
        return AuthError(401, "token_expired", f"token {token_id} expired at {expires_at}")

    if kind == "agent":
        if state == "retired":
            return AuthError(401, "machine_retired", f"machine {machine_id} is retired")
        return Principal("agent", f"machine:{machine_id}", "agent", token_id, machine_id)
    if disabled:
        return AuthError(401, "user_disabled", f"user {user_name!r} is disabled")
    return Principal("user", user_name, role, token_id)


def list_users(conn):
    rows = conn.execute("SELECT name, role, created_at, disabled FROM users ORDER BY name")
    return [user_view(_as_user(row)) for row in rows.fetchall()]


def list_tokens(conn, user_name=None, include_agents=False):
    sql = f"{_TOKEN_SELECT} WHERE (? IS NULL OR user_name = ?)"
    if not include_agents:
        sql += " AND kind = 'user'"
    rows = conn.execute(sql + " ORDER BY created_at", (user_name, user_name)).fetchall()
    return [token_view(_as_token(row)) for row in rows]


def user_view(user):
    return {**user, "disabled": bool(user["disabled"])}


def token_view(token):
    """The public record of a token: never its hash."""
    return {k: v for k, v in token.items() if k != "token_hash"}


_TOKEN_COLUMNS = (
    "id",
    "kind",
    "user_name",
    "machine_id",
    "description",
    "created_at",
    "expires_at",
    "revoked_at",
)
_TOKEN_SELECT = f"SELECT {', '.join(_TOKEN_COLUMNS)} FROM api_tokens"


def _as_token(row):
    return dict(zip(_TOKEN_COLUMNS, row, strict=True))


def _token_row(conn, token_id):
    row = conn.execute(f"{_TOKEN_SELECT} WHERE id = ?", (token_id,)).fetchone()
    return None if row is None else _as_token(row)


def _as_user(row):
    return dict(zip(("name", "role", "created_at", "disabled"), row, strict=True))


def _user(conn, name):
    row = conn.execute(
        "SELECT name, role, created_at, disabled FROM users WHERE name = ?", (name,)
    ).fetchone()
    return None if row is None else _as_user(row)


# -- the request boundary -----------------------------------------------------


def bearer_token(request):
    """The token from `Authorization: Bearer <token>`, or None when the header is absent."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return AuthError(401, "invalid_authorization", "expected 'Authorization: Bearer <token>'")
    return token.strip()


async def authenticate(store, request):
    """Find who the request acts as and keep it in request.state["principal"].

    An error is kept as well (request.state["auth_error"]) rather than raised,
    so that routes without a token (health, boot files, registration) are not
    refused because of a stale header; `require` raises it.
    """
    token = bearer_token(request)
    if token is None:
        return None
    if isinstance(token, AuthError):
        request.state["auth_error"] = token
        return None

    outcome = await store.read(principal_for_digest, hash_token(token), now())
    if isinstance(outcome, AuthError):
        request.state["auth_error"] = outcome
        return None
    request.state["principal"] = outcome
    return outcome


async def authorize(store, request, role):
    """Authenticate the request (once) and check its role: `require` for async handlers."""
    if "principal" not in request.state and "auth_error" not in request.state:
        await authenticate(store, request)
    return require(request, role)


def require(request, role):
    """The request's Principal when its role reaches `role` ("viewer", "operator",
    "admin" or "agent"); HttpError 401 (with WWW-Authenticate) or 403 otherwise.
    """
    from appliance.http import HttpError

    principal = request.state.get("principal")
    if principal is None:
        error = request.state.get("auth_error") or AuthError(
            401, "unauthenticated", "this route needs 'Authorization: Bearer <token>'"
        )
        raise HttpError(
            401, error.code, error.message, headers=[("www-authenticate", _challenge(error))]
        )

    if role == "agent":
        if principal.kind != "agent":
            raise HttpError(403, "forbidden", "this route is for agent tokens only")
        return principal
    if principal.kind != "user" or not role_allows(principal.role, role):
        have = principal.role if principal.kind == "user" else "agent"
        raise HttpError(
            403, "forbidden", f"this route needs role {role!r}; the token has {have!r}"
        )
    return principal


def _challenge(error):
    # RFC 6750 section 3: name the error when a token was presented.
    if error.code == "unauthenticated":
        return 'Bearer realm="cloudboot"'
    return 'Bearer realm="cloudboot", error="invalid_token"'


# -- the command line ---------------------------------------------------------


def issue_token_cli(data_dir, role, user=None, ttl_days=None):
    """`cloudboot token issue`: make the user if missing and print a new token.

    Opens the store in the data directory itself, so it works with or without
    a running appliance (WAL lets both write). Raises AuthError on bad input.
    """
    import trio

    from appliance.config import Settings

    user = check_user_name(user or BUILTIN_ADMIN)
    check_role(role)
    ttl_days = ttl_days or Settings().api.token_ttl_days
    return trio.run(_issue_token_cli, Path(data_dir) / DATABASE_FILE, role, user, ttl_days)


async def _issue_token_cli(path, role, user, ttl_days):
    from appliance.store import SchemaError, Store, StoreError

    minted = new_token()
    try:
        store = await Store.open(path, create=False)
    except (StoreError, SchemaError) as e:
        # Shown to the technician as one line by the CLI, not as a traceback.
        raise AuthError(500, "store_unavailable", str(e)) from None
    try:
        await store.write(_cli_issue, user, role, ttl_days, minted)
    finally:
        await store.close()
    return minted[0]


def _cli_issue(conn, user, role, ttl_days, minted):
    existing = _user(conn, user)
    if existing is None:
        create_user(conn, user, role, actor="cli", source="cli")
    elif existing["role"] != role:
        raise AuthError(
            409,
            "role_mismatch",
            f"user {user!r} has role {existing['role']!r}, not {role!r}; "
            "name another user or ask an admin to change the role",
        )
    return issue_user_token(
        conn, user, ttl_days, "cli", minted, "cloudboot token issue", source="cli"
    )
