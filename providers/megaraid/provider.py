"""The MegaRAID provider: Broadcom storcli or Dell perccli, driven through their JSON output.

Runs inside BootOS under the provider sandbox with Debian's python3 and nothing else, so it
uses the standard library only. It reads one request on stdin and writes protocol events
on stdout (docs/providers.md). Actions: inventory, create_vd, delete_vd, set_jbod,
set_good, clear_foreign. It must never run a command line built from unvalidated input,
never end without exactly one result, and never let a traceback be the only answer.
"""

import json
import os
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # python3 -I leaves it out

import storcli_commands as commands  # noqa: E402
import storcli_json as parser  # noqa: E402

ADD_VD_TIMEOUT = 300.0  # a large array's first write can take minutes on slow firmware


class ActionFailed(Exception):
    """Ends the action with a failed result; the message is what the operator reads."""


class Session:
    """One request: the tool in use, the commands run and the warnings collected."""

    def __init__(self, params):
        self.params = params
        self.tool = None
        self.commands = []
        self.warnings = []

    def find_tool(self):
        package_dir = os.environ.get("CLOUDBOOT_PACKAGE_DIR")
        self.tool = commands.find_tool(package_dir, os.environ.get("PATH", ""))
        if self.tool is None:
            raise ActionFailed(
                f"none of {', '.join(commands.TOOL_NAMES)} found in the package's bin/, "
                f"PATH or {', '.join(commands.INSTALL_DIRS)}"
            )
        log("info", f"using {self.tool.path}")

    def call(self, words, timeout=commands.DEFAULT_TIMEOUT):
        """Run one command and return its stdout; an output-less failure is an error."""
        line = " ".join([self.tool.name, *words])
        self.commands.append(line)
        output = commands.run(self.tool, words, timeout)
        if not output.stdout.strip():
            tail = output.stderr.strip()[-500:] or "nothing on stderr"
            raise ActionFailed(f"{line}: exit status {output.exit_code}, no output ({tail})")
        return output.stdout

    def warn(self, messages):
        for message in messages:
            self.warnings.append(message)
            log("warning", message)

    def data(self, **fields):
        tool = {"name": self.tool.name, "path": self.tool.path} if self.tool else None
        return {"tool": tool, "commands": self.commands, "warnings": self.warnings, **fields}


def inventory(session):
    session.find_tool()
    progress(30, "reading controllers")
    found = parser.parse_controllers(session.call(commands.inventory()))
    session.warn(found["warnings"])
    controllers = found["controllers"]
    summary = f"{len(controllers)} controller{'' if len(controllers) == 1 else 's'}"
    return summary, session.data(cli_version=found["cli_version"], controllers=controllers)


def create_vd(session):
    words = commands.add_vd(session.params)
    number = session.params["controller"]
    session.find_tool()
    progress(20, f"checking controller {number} and its drives")
    found = parser.parse_controllers(session.call(commands.controller_show(number)))
    session.warn(found["warnings"])
    _check_drives(_the_controller(found, number), session.params["drives"])

    progress(50, "creating the virtual drive")
    parser.check(session.call(words, ADD_VD_TIMEOUT))
    message = f"controller {number}: RAID {session.params['raid_level']} created"
    return message, session.data(controller=number, command=session.commands[-1])


def _the_controller(found, number):
    for record in found["controllers"]:
        if record["index"] == number:
            return record
    raise ActionFailed(f"controller {number} not found")


def _check_drives(record, drives):
    """Refuse before the tool does, with the drive's own state in the message."""
    if record["raid_capable"] is False:
        raise ActionFailed(
            f"controller {record['index']} ({record['model']}) has no RAID support "
            "(an IT-mode HBA): it cannot build a virtual drive"
        )
    states = {d["position"]: d["state"] for d in record["physical_drives"]}
    for drive in drives:
        if drive not in states:
            raise ActionFailed(f"drive {drive} is not on controller {record['index']}")
        if states[drive] != "UGood":
            raise ActionFailed(
                f"drive {drive} is {states[drive]}, not UGood (unconfigured good): "
                "set it good, or clear its foreign configuration, first"
            )


def delete_vd(session):
    words = commands.delete_vd(session.params)
    number, vd = session.params["controller"], session.params["vd"]
    session.find_tool()
    progress(20, f"reading virtual drive {vd} on controller {number}")
    # Read it first: the job record then says what was destroyed, and a VD that is not
    # there fails here with the tool's own words instead of at `del`.
    shown = parser.parse_virtual_drives(session.call(commands.vd_show(number, vd)))
    progress(50, f"deleting virtual drive {vd}")
    parser.check(session.call(words))
    return f"controller {number}: virtual drive {vd} deleted", session.data(deleted=shown)


def set_jbod(session):
    return _set_drives(session, "jbod")


def set_good(session):
    return _set_drives(session, "good")


def _set_drives(session, verb):
    lines = commands.drive_commands(session.params, verb)
    session.find_tool()
    for done, words in enumerate(lines):
        progress(10 + 80 * done // len(lines), f"{words[0]} set {verb}")
        parser.check(session.call(words))
    return f"{len(lines)} drive(s) set {verb}", session.data()


def clear_foreign(session):
    number = commands.controller(session.params.get("controller"))
    session.find_tool()
    progress(20, f"looking for foreign configurations on controller {number}")
    groups = parser.parse_foreign(session.call(commands.foreign_show(number)))
    if not groups:
        return f"controller {number}: no foreign configuration", session.data(cleared=[])
    progress(60, f"clearing {len(groups)} foreign drive group(s)")
    parser.check(session.call(commands.foreign_delete(number)))
    return f"controller {number}: {len(groups)} foreign group(s) cleared", session.data(
        cleared=groups
    )


ACTIONS = {
    "inventory": inventory,
    "create_vd": create_vd,
    "delete_vd": delete_vd,
    "set_jbod": set_jbod,
    "set_good": set_good,
    "clear_foreign": clear_foreign,
}


def emit(event):
    sys.stdout.write(json.dumps(event, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def progress(percent, message):
    emit({"type": "progress", "percent": percent, "message": message})


def log(level, message):
    emit({"type": "log", "level": level, "message": message})


def read_request(stream):
    try:
        request = json.loads(stream.readline())
    except ValueError as exc:
        raise ActionFailed(f"the request is not JSON: {exc}") from None
    if not isinstance(request, dict) or not isinstance(request.get("params", {}), dict):
        raise ActionFailed(f"the request must be an object with object params: {request!r}")
    if request.get("action") not in ACTIONS:
        known = ", ".join(ACTIONS)
        raise ActionFailed(f"unknown action {request.get('action')!r}; known: {known}")
    return request


def main():
    session = Session({})
    try:
        request = read_request(sys.stdin)
        session.params = request.get("params") or {}
        message, data = ACTIONS[request["action"]](session)
        warned = f" ({len(session.warnings)} warning(s))" if session.warnings else ""
        emit({"type": "result", "status": "succeeded", "message": message + warned, "data": data})
    except (ActionFailed, commands.CommandError, parser.StorcliError) as exc:
        emit({"type": "result", "status": "failed", "message": str(exc), "data": session.data()})
    except Exception as exc:  # the result must still come; the traceback goes to stderr
        traceback.print_exc()
        message = f"internal error: {type(exc).__name__}: {exc}"
        emit({"type": "result", "status": "failed", "message": message, "data": session.data()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
