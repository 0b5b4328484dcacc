"""Officers unseal a dual-control appliance through the API while it runs.

The real `cloudboot serve` on loopback, high ports, over a dual-control data
directory: /readyz is 503 until two of the three officers have entered their
passphrases through POST /api/v1/keys/unseal; a wrong passphrase is refused
and audited; passphrases appear nowhere in the audit log.
"""

import http.client
import json
import signal
import ssl
import subprocess
import sys
import time

from tests.conftest import REPO
from tests.keys_support import OFFICERS
from tests.syslog_support import free_port
from tests.test_cli import cloudboot, high_port_config
from tests.test_keys_wiring_readyz import get_readyz, init_dual_control


def call(port, method, path, token, body=None):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the appliance's own self-signed certificate
    connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=context)
    try:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        payload = json.dumps(body).encode() if body is not None else None
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_two_officers_unseal_the_running_appliance(tmp_path):
    data = tmp_path / "data"
    init_dual_control(data)
    http_port, https_port = free_port(), free_port()
    config = high_port_config(tmp_path, http_port=http_port, https_port=https_port)
    with open(tmp_path / "serve.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "appliance.cli", "serve", "--interface", "lo"]
            + ["--data-dir", str(data), "--config", str(config)],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            status, _ = get_readyz(https_port, time.monotonic() + 60)
            assert status == 503
            token = cloudboot("token", "issue", "--role", "admin", "--data-dir", str(data))
            token = token.stdout.strip()
            unseal = "/api/v1/keys/unseal"

            wrong = call(
                https_port, "POST", unseal, token, {"officer": "alice", "passphrase": "not it"}
            )
            first = call(
                https_port,
                "POST",
                unseal,
                token,
                {"officer": "alice", "passphrase": OFFICERS["alice"]},
            )
            second = call(
                https_port,
                "POST",
                unseal,
                token,
                {"officer": "bob", "passphrase": OFFICERS["bob"]},
            )
            status_after, body_after = get_readyz(https_port, time.monotonic() + 60)
            key_status = call(https_port, "GET", "/api/v1/keys/status", token)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)

    assert wrong[0] == 403 and wrong[1]["error"]["code"] == "unseal_refused"
    assert first[0] == 200 and first[1]["sealed"] is True
    assert first[1]["shares_entered"] == ["alice"]
    assert second[0] == 200 and second[1]["sealed"] is False
    assert status_after == 200 and body_after["checks"]["keys_unsealed"] is True
    assert key_status[1]["sealed"] is False

    audit = cloudboot(
        "audit", "query", "--data-dir", str(data), "--action", "key.unseal", "--json"
    )
    events = [json.loads(line) for line in audit.stdout.splitlines() if line.strip()]
    assert sorted(e["result"] for e in events) == ["denied", "ok", "ok"]
    for phrase in (*OFFICERS.values(), "not it"):
        assert phrase not in audit.stdout
