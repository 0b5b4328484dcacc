"""Every CLI command that holds key material runs with core dumps off and not dumpable.

The real `cloudboot` entry runs in a child interpreter whose passphrase prompt
is answered by a probe: at the moment the command asks for a passphrase (it is
about to hold an officer's share), the probe reads the kernel's view of the
process, prctl(PR_GET_DUMPABLE) and RLIMIT_CORE, and the test checks it.
"""

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.keys_support import OFFICERS
from tests.test_keys_wiring_readyz import init_dual_control

PROBE = """
import getpass, json, sys
from keys import hygiene

phrases = json.loads(sys.argv[1])
states = []

def answer(prompt=""):
    states.append(hygiene.process_state())
    name = next((n for n in phrases if f"officer {n}" in prompt), None)
    return phrases.get(name, "")

getpass.getpass = answer
from appliance import cli

try:
    cli.main(sys.argv[2:])
finally:
    print("STATES " + json.dumps(states))
"""


def run_probed(*args):
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(OFFICERS), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    line = next(x for x in done.stdout.splitlines() if x.startswith("STATES "))
    return done, json.loads(line.removeprefix("STATES "))


@pytest.mark.parametrize(
    "command",
    [
        ["keys", "unseal"],
        ["keys", "rotate"],
        ["backup", "create"],
    ],
)
def test_key_holding_commands_are_not_dumpable_while_they_prompt(tmp_path, command):
    data = tmp_path / "data"
    init_dual_control(data)
    done, states = run_probed(*command, "--data-dir", data)

    assert done.returncode == 0, done.stderr
    assert states, "the command never asked for a passphrase"
    for state in states:
        assert state["dumpable"] == 0
        assert state["rlimit_core"] == [0, 0]
