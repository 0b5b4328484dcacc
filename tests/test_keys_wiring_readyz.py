"""/readyz says when the master key is sealed: dual control after a restart is not ready.

One test runs the real `cloudboot serve` on loopback with high ports over a dual-control
data directory; the others call the same readiness function serve hands to /readyz.
"""

import http.client
import json
import signal
import ssl
import subprocess
import sys
import time

from appliance import serve
from keys import cli as keys_cli
from tests.conftest import REPO
from tests.keys_support import FAST_LIMITS, OFFICERS, make_key_file
from tests.syslog_support import free_port
from tests.test_cli import assert_one_line_error, cloudboot, high_port_config


def officer_phrase(prompt):
    return next(phrase for name, phrase in OFFICERS.items() if f"officer {name}" in prompt)


def init_dual_control(data_dir):
    keys_cli.keys_init(
        data_dir=data_dir,
        source="dual-control",
        officers="alice,bob,carol",
        threshold=2,
        read_secret=officer_phrase,
        argon2_limits=FAST_LIMITS,
    )


def get_readyz(port, deadline):
    """(status, body) of GET /readyz once the appliance answers."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the appliance's own self-signed certificate
    while True:
        connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=context)
        try:
            connection.request("GET", "/readyz")
            response = connection.getresponse()
            return response.status, json.loads(response.read())
        except (ConnectionError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
        finally:
            connection.close()


def test_a_dual_control_appliance_after_restart_answers_503_keys_sealed(tmp_path):
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
            status, body = get_readyz(https_port, time.monotonic() + 60)
        except OSError:
            # Say why: the appliance's own log is the only witness of a failed start.
            raise AssertionError((tmp_path / "serve.log").read_text()[-3000:]) from None
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)

    assert status == 503, body
    assert body["status"] == "not_ready"
    assert body["checks"]["keys_unsealed"] is False
    # Only the keys hold it back: boot files and the API are up.
    assert body["checks"]["http"] is True and body["checks"]["https"] is True
    assert body["checks"]["store"] is True


def test_readiness_follows_the_master_key_as_officers_unseal(tmp_path):
    data = tmp_path / "data"
    init_dual_control(data)
    services = {"http": True}

    master = serve.load_master_key(data)
    ready = serve.readiness(services, master)
    assert ready() == {"http": True, "keys_unsealed": False}

    master.unseal("alice", OFFICERS["alice"])
    assert ready()["keys_unsealed"] is False  # one of two officers
    master.unseal("carol", OFFICERS["carol"])
    assert ready()["keys_unsealed"] is True


def test_no_keys_or_a_key_file_count_as_unsealed(tmp_path):
    data = tmp_path / "data"
    assert serve.load_master_key(data) is None
    assert serve.readiness({}, None)() == {"keys_unsealed": True}

    keys_cli.keys_init(data_dir=data, source="key-file", key_file=tmp_path / "master.key")
    master = serve.load_master_key(data)
    assert master.source == "key-file"
    assert serve.readiness({}, master)() == {"keys_unsealed": True}


def test_a_key_file_readable_by_others_stops_the_start(tmp_path):
    data = tmp_path / "data"
    make_key_file(tmp_path, data)
    keys_cli.keys_init(data_dir=data, source="key-file", key_file=tmp_path / "master.key")
    (tmp_path / "master.key").chmod(0o444)
    config = high_port_config(tmp_path, http_port=free_port(), https_port=free_port())

    result = cloudboot(
        "serve", "--interface", "lo", "--data-dir", str(data), "--config", str(config)
    )
    assert_one_line_error(result, "master key: master key file")
    assert "mode 0444" in result.stderr
