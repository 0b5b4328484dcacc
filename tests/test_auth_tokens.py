"""Users, roles and bearer tokens: hashes only, expiry, revocation, 401/403 at the API."""

import hashlib
import sys

import pytest
import trio

from appliance.core import audit, auth
from appliance.store import Store
from tests.agent_api_support import start_api, user_token


def _rows(conn, query, args=()):
    return conn.execute(query, args).fetchall()


async def first_start(data_dir):
    """The database as `cloudboot serve` leaves it: token issue needs an existing one."""
    store = await Store.open(data_dir / auth.DATABASE_FILE)
    await store.close()


async def test_cli_issue_makes_the_admin_and_a_working_token(nursery, tmp_path):
    await first_start(tmp_path)
    # The real command, as a technician types it.
    done = await trio.run_process(
        [
            sys.executable,
            "-m",
            "appliance.cli",
            "token",
            "issue",
            "--role",
            "admin",
            "--data-dir",
            str(tmp_path),
        ],
        capture_stdout=True,
        capture_stderr=True,
    )
    token = done.stdout.decode().strip()
    assert token.startswith(auth.TOKEN_PREFIX) and len(token) > 40

    # The same store the appliance opens; the token works against it.
    api = await start_api(nursery, tmp_path)
    reply = await api.call("GET", "/api/v1/auth/whoami", token=token, agent=False)
    assert reply.status == 200
    assert reply.json["name"] == "admin" and reply.json["role"] == "admin"

    users = await api.call("GET", "/api/v1/users", token=token, agent=False)
    assert [u["name"] for u in users.json["items"]] == ["admin"]


async def test_only_the_hash_of_a_token_is_stored(tmp_path):
    await first_start(tmp_path)
    token = await trio.to_thread.run_sync(auth.issue_token_cli, tmp_path, "admin", "root-ops")
    store = await Store.open(tmp_path / auth.DATABASE_FILE)
    rows = await store.read(_rows, "SELECT token_hash FROM api_tokens")
    await store.close()

    assert [bytes(r[0]) for r in rows] == [hashlib.sha256(token.encode()).digest()]
    secret = token.encode()
    for path in tmp_path.iterdir():
        assert secret not in path.read_bytes(), path.name


def test_cli_refuses_a_role_that_does_not_match_the_user(tmp_path):
    trio.run(first_start, tmp_path)
    auth.issue_token_cli(tmp_path, "viewer", "vera")
    with pytest.raises(auth.AuthError, match="has role 'viewer'"):
        auth.issue_token_cli(tmp_path, "admin", "vera")
    with pytest.raises(auth.AuthError, match="role must be one of"):
        auth.issue_token_cli(tmp_path, "root", "vera")


async def test_missing_malformed_and_unknown_tokens_get_401_with_a_challenge(nursery, tmp_path):
    api = await start_api(nursery, tmp_path)
    cases = [
        ((), "unauthenticated"),
        ((("authorization", "Basic dXNlcjpwYXNz"),), "invalid_authorization"),
        ((("authorization", "Bearer cbt_not-a-real-token"),), "invalid_token"),
    ]
    for headers, code in cases:
        reply = await api.call("GET", "/api/v1/users", agent=False, headers=headers)
        assert reply.status == 401, headers
        assert reply.error_code == code
        assert reply.headers["www-authenticate"].startswith("Bearer")


async def test_roles_are_ordered_viewer_operator_admin(nursery, tmp_path):
    api = await start_api(nursery, tmp_path)
    tokens = {role: await user_token(api.store, f"u-{role}", role) for role in auth.ROLES}

    for role, token in tokens.items():
        listing = await api.call("GET", "/api/v1/enrolment/expected", token=token, agent=False)
        assert listing.status == 200, role

        imported = await api.call(
            "POST",
            "/api/v1/enrolment/expected",
            {"macs": ["52:54:00:30:00:01"]},
            token=token,
            agent=False,
        )
        assert imported.status == (403 if role == "viewer" else 200), role

        users = await api.call("GET", "/api/v1/users", token=token, agent=False)
        assert users.status == (200 if role == "admin" else 403), role
        if users.status == 403:
            assert "needs role 'admin'" in users.json["error"]["message"]


async def test_admin_issues_lists_and_revokes_tokens_with_audit(nursery, tmp_path):
    api = await start_api(nursery, tmp_path)
    admin = await user_token(api.store, "ada", "admin")

    created = await api.call(
        "POST", "/api/v1/users", {"name": "otto", "role": "operator"}, token=admin, agent=False
    )
    assert created.status == 201 and created.json["role"] == "operator"

    issued = await api.call(
        "POST", "/api/v1/tokens", {"user": "otto", "ttl_days": 7}, token=admin, agent=False
    )
    assert issued.status == 201
    otto, token_id = issued.json["token"], issued.json["id"]
    assert (await api.call("GET", "/api/v1/auth/whoami", token=otto, agent=False)).json[
        "role"
    ] == "operator"

    listing = await api.call("GET", "/api/v1/tokens?user=otto", token=admin, agent=False)
    assert [t["id"] for t in listing.json["items"]] == [token_id]
    assert all("token" not in t and "token_hash" not in t for t in listing.json["items"])

    revoked = await api.call("POST", f"/api/v1/tokens/{token_id}/revoke", token=admin, agent=False)
    assert revoked.status == 200 and revoked.json["revoked_at"]
    after = await api.call("GET", "/api/v1/auth/whoami", token=otto, agent=False)
    assert after.status == 401 and after.error_code == "token_revoked"

    actions = [e["action"] for e in await api.store.read(audit.events, "token", token_id)]
    assert actions == ["token.revoke", "token.issue"]


async def test_bad_token_requests_say_what_was_expected(nursery, tmp_path):
    api = await start_api(nursery, tmp_path)
    admin = await user_token(api.store, "ada", "admin")
    cases = [
        ({"user": "nobody"}, 404, "user_not_found"),
        ({"user": "ada", "ttl_days": 0}, 400, "invalid_ttl"),
        ({"user": "ada", "ttl_days": "7"}, 400, "invalid_ttl"),
        ({"user": None}, 400, "invalid_user"),
    ]
    for body, status, code in cases:
        reply = await api.call("POST", "/api/v1/tokens", body, token=admin, agent=False)
        assert (reply.status, reply.error_code) == (status, code), body

    duplicate = await api.call(
        "POST", "/api/v1/users", {"name": "ada", "role": "viewer"}, token=admin, agent=False
    )
    assert (duplicate.status, duplicate.error_code) == (409, "user_exists")
    missing = await api.call("DELETE", "/api/v1/tokens/tok_nope", token=admin, agent=False)
    assert missing.status == 404


async def test_an_expired_token_is_refused(nursery, tmp_path):
    api = await start_api(nursery, tmp_path)
    token = await user_token(api.store, "ada", "admin")

    def _expire(conn):
        conn.execute("UPDATE api_tokens SET expires_at = '2000-01-01T00:00:00.000000Z'")

    await api.store.write(_expire)
    reply = await api.call("GET", "/api/v1/auth/whoami", token=token, agent=False)
    assert reply.status == 401 and reply.error_code == "token_expired"


async def test_a_disabled_user_and_a_demoted_user_lose_their_powers(nursery, tmp_path):
    api = await start_api(nursery, tmp_path)
    token = await user_token(api.store, "ada", "admin")

    def _demote(conn):
        conn.execute("UPDATE users SET role = 'viewer' WHERE name = 'ada'")

    await api.store.write(_demote)
    assert (await api.call("GET", "/api/v1/users", token=token, agent=False)).status == 403

    def _disable(conn):
        conn.execute("UPDATE users SET disabled = 1 WHERE name = 'ada'")

    await api.store.write(_disable)
    reply = await api.call("GET", "/api/v1/auth/whoami", token=token, agent=False)
    assert reply.status == 401 and reply.error_code == "user_disabled"


async def test_user_creation_refuses_bad_names_and_roles(nursery, tmp_path):
    api = await start_api(nursery, tmp_path)
    admin = await user_token(api.store, "ada", "admin")
    cases = [
        ({"name": "0", "role": {}}, "invalid_role"),
        ({"name": "x", "role": ["admin"]}, "invalid_role"),
        ({"name": "x", "role": "root"}, "invalid_role"),
        ({"name": " padded", "role": "viewer"}, "invalid_user"),
        ({"name": 7, "role": "viewer"}, "invalid_user"),
        ({"role": "viewer"}, "invalid_user"),
    ]
    for body, code in cases:
        reply = await api.call("POST", "/api/v1/users", body, token=admin, agent=False)
        assert (reply.status, reply.error_code) == (400, code), body


async def test_the_cli_reports_a_role_mismatch_without_a_traceback(tmp_path):
    await first_start(tmp_path)
    command = [
        sys.executable,
        "-m",
        "appliance.cli",
        "token",
        "issue",
        "--data-dir",
        str(tmp_path),
    ]
    first = await trio.run_process(
        [*command, "--role", "viewer", "--user", "vera"], capture_stdout=True, capture_stderr=True
    )
    assert first.stdout.decode().startswith(auth.TOKEN_PREFIX)

    second = await trio.run_process(
        [*command, "--role", "admin", "--user", "vera"],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert second.returncode == 2
    assert b"Traceback" not in second.stderr
    assert b"has role 'viewer'" in second.stderr
