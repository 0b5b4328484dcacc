"""Adversarial storage: the data disk fills while agents register and operators work.

Before the fix the store's clear StorageFullError ("the data disk ... is
full: this change was not saved; free space there ...") reached the client
as an opaque 500 internal_error with a traceback in the log. It must be a
503 storage_full carrying that sentence and a Retry-After, and the same
call must work once space returns.

The data directory is a 2 MiB tmpfs mounted by the test (root only).
"""

import os
import subprocess

import pytest

from tests.agent_api_support import start_api


@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "data"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path):
    with open(path, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


def registration(index):
    mac = f"52:54:01:00:{index >> 8:02x}:{index & 0xFF:02x}"
    inventory = {
        "schema": "cloudboot.inventory/1",
        "system": {"serial": f"FULL{index:05d}"},
        "nics": [{"name": "eth0", "mac": mac}],
        "warnings": ["w" * 1000] * 20,
    }
    return {"protocol": 1, "boot_mac": mac, "pxe_guid": None, "inventory": inventory}


async def test_a_registration_on_a_full_disk_is_a_clear_503(nursery, small_disk):
    api = await start_api(nursery, small_disk)
    fill(small_disk / "filler")

    replies = []
    for index in range(200):
        reply = await api.call("POST", "/api/v1/agent/register", registration(index))
        replies.append(reply)
        if reply.status != 200:
            break

    refused = replies[-1]
    assert refused.status == 503, refused.body
    assert refused.error_code == "storage_full"
    assert "free space" in refused.json["error"]["message"]
    assert refused.headers["retry-after"] == "60"

    (small_disk / "filler").unlink()
    again = await api.call("POST", "/api/v1/agent/register", registration(len(replies) - 1))
    assert again.status == 200, again.body
    await api.store.close()
