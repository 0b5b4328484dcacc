"""`cloudboot-agent`: the command BootOS's /init starts, and a technician's tool.

    cloudboot-agent [run] [--cmdline TEXT]   register with the appliance and run jobs
    cloudboot-agent inventory [--root DIR]   print this machine's inventory as JSON
    cloudboot-agent capture DIR              copy what the inventory reads into DIR

`run` takes its parameters from /proc/cmdline (appliance/proto/bootparams.py).
Bad parameters are one clear line and exit status 2, never a traceback: the
technician at the console must see what to fix.
"""

import argparse
import logging
import sys
from pathlib import Path

from appliance.proto.bootparams import BootParamsError, parse_cmdline

EXIT_BAD_PARAMS = 2


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    if args.command == "inventory":
        from bootos.agent import inventory

        return inventory.cmd_inventory(args.root)
    if args.command == "capture":
        from bootos.agent import inventory

        return inventory.cmd_capture(args.dest)
    return cmd_run(args.cmdline)


def _parser():
    parser = argparse.ArgumentParser(prog="cloudboot-agent", description="CloudBoot BootOS agent")
    parser.set_defaults(command="run", cmdline=None)
    commands = parser.add_subparsers(dest="command")

    run = commands.add_parser("run", help="register with the appliance and run jobs (default)")
    run.add_argument("--cmdline", help="kernel command line text instead of /proc/cmdline")

    inventory = commands.add_parser("inventory", help="print the inventory document as JSON")
    inventory.add_argument("--root", help="read a capture directory instead of this machine")

    capture = commands.add_parser("capture", help="copy the inventory's inputs into DEST")
    capture.add_argument("dest")
    return parser


def cmd_run(cmdline=None):
    """Read the boot parameters and run the agent until it is told to stop."""
    from bootos.agent.client import AgentClient
    from bootos.agent.inventory import collect
    from bootos.agent.runtime import Runtime, console_line

    try:
        text = cmdline if cmdline is not None else Path("/proc/cmdline").read_text()
        params = parse_cmdline(text)
        client = AgentClient(params["url"], params["fp"])
    except (BootParamsError, ValueError, OSError) as e:
        console_line(f"cannot start: {e}")
        return EXIT_BAD_PARAMS

    runtime = Runtime(params, client, inventory=collect)
    return runtime.run()


if __name__ == "__main__":
    sys.exit(main())
