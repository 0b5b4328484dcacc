"""ipmi_sim (Debian's openipmi) as a BMC for the IPMI provider tests, on 127.0.0.1.

The simulator answers RMCP+ on a free UDP port of 127.0.0.1 and asks a chassis-control
script for power and boot device (`<mc> get power boot`, `<mc> set power 1`, ...). The
script here keeps that state in files beside it, and can make a power change land a few
reads later (`delay` file) or ignore boot-device writes (`ignore_boot` file), the way
slow or forgetful BMCs do.
"""

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

USER, PASSWORD = "cbadmin", "ipmi-pass-9"

CHASSIS_SCRIPT = """#!/bin/sh
# ipmi_sim chassis control for the tests: <mc> get|set <name> [value] ...
cd "$(dirname "$0")"
echo "$*" >> calls.log
shift
operation=$1
shift
if [ "$operation" = get ]; then
    for name in "$@"; do
        if [ "$name" = power ] && [ -f pending ]; then
            left=$(cat delay 2>/dev/null || echo 0)
            if [ "$left" -le 0 ]; then mv pending power; else echo $((left - 1)) > delay; fi
        fi
        case $name in
            power) echo "power:$(cat power)" ;;
            boot) echo "boot:$(cat boot)" ;;
        esac
    done
    exit 0
fi
while [ $# -ge 2 ]; do
    case $1 in
        power) echo "$2" > pending ;;
        boot) [ -f ignore_boot ] || echo "$2" > boot ;;
    esac
    shift 2
done
"""

LAN_CONF = """name "cloudboot-test"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 {port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid {guid}
  endlan
  chassis_control "{script} 0x20"
user 2 true "{user}" "{password}" admin 10 none md2 md5 straight
"""

EMULATION = """mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
mc_enable 0x20
"""


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class IpmiSim:
    def __init__(self, directory, power="0"):
        if not shutil.which("ipmi_sim") or not shutil.which("ipmitool"):
            pytest.skip("ipmi_sim (apt: openipmi) or ipmitool (apt: ipmitool) is not installed")
        self.directory = Path(directory)
        self.port = free_udp_port()
        script = self.directory / "chassis.sh"
        script.write_text(CHASSIS_SCRIPT)
        os.chmod(script, 0o755)
        (self.directory / "power").write_text(power + "\n")
        (self.directory / "boot").write_text("default\n")
        config = self.directory / "lan.conf"
        config.write_text(
            LAN_CONF.format(
                port=self.port,
                guid=os.urandom(16).hex(),
                script=script,
                user=USER,
                password=PASSWORD,
            )
        )
        emulation = self.directory / "emulation"
        emulation.write_text(EMULATION)
        (self.directory / "state").mkdir()
        self.log = open(self.directory / "ipmi_sim.log", "wb")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            ["ipmi_sim", "-n", "-c", str(config), "-f", str(emulation),
             "-s", str(self.directory / "state")],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self._wait_ready()

    def file(self, name):
        path = self.directory / name
        return path.read_text().strip() if path.exists() else None

    def set_file(self, name, text):
        (self.directory / name).write_text(text + "\n")

    def calls(self):
        return (self.file("calls.log") or "").splitlines()

    def _wait_ready(self):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ipmi_sim exited with {self.process.returncode}")
            probe = subprocess.run(
                ["ipmitool", "-I", "lanplus", "-C", "3", "-N", "1", "-R", "1", "-H", "127.0.0.1",
                 "-p", str(self.port), "-U", USER, "-E", "chassis", "power", "status"],
                env={"IPMI_PASSWORD": PASSWORD}, capture_output=True, timeout=15,
            )  # fmt: skip
            if probe.returncode == 0:
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("ipmi_sim did not answer within 20 s")

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.log.close()
