"""Building a fake tool directory around the storcli stand-in for one test scenario.

The stand-in reads the corpus in place (../shared/corpus/storcli). Only a sandboxed run,
which can read nothing outside its package, gets copies, and those go into the test's own
scratch package directory, never into the repository.
"""

import json
import os
import shutil
from pathlib import Path

STANDIN = Path(__file__).parent / "storcli64"


def make_bin(directory, commands, corpus_dir, tool_name="storcli64", copy_corpus=False):
    """Put the stand-in at directory/tool_name with a scenario; returns the tool's path.

    `commands` maps the argument line (after the tool's name) to a corpus file name or to
    synthesized({...}). With `copy_corpus` the files named are copied to directory/corpus.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tool = directory / tool_name
    shutil.copyfile(STANDIN, tool)
    os.chmod(tool, 0o755)
    if copy_corpus:
        local = directory / "corpus"
        local.mkdir(exist_ok=True)
        for entry in commands.values():
            if isinstance(entry, str):
                shutil.copyfile(Path(corpus_dir) / entry, local / entry)
                os.chmod(local / entry, 0o644)
        corpus_dir = local
    scenario = {"corpus": str(corpus_dir), "commands": commands}
    (directory / "scenario.json").write_text(json.dumps(scenario, indent=1))
    os.chmod(directory / "scenario.json", 0o644)
    return tool


def synthesized(description, controller=0, status="Success", details=None, exit_code=0):
    """A storcli envelope for a command the corpus has no capture of.

    Shaped like the captured ones (e.g. c0-e35-s12-set-offline-J__success.json): a Command
    Status with CLI Version, Controller, Status and Description, no Response Data.
    """
    command_status = {
        "CLI Version": "007.1704.0000.0000 Jan 16, 2021",
        "Operating system": "Linux 6.1.0-stand-in",
        "Controller": controller,
        "Status": status,
        "Description": description,
    }
    if details:
        command_status["Detailed Status"] = details
    document = {"Controllers": [{"Command Status": command_status}]}
    return {"synthesized": document, "exit": exit_code}
