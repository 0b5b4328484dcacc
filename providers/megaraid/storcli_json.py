"""Parsing storcli / perccli JSON output (the `J` suffix) into plain inventory records.

Pure: it takes the text a tool printed and returns dicts and lists; it never runs a tool,
reads a file or touches the clock, so every field case is tested from captured output.
It must never raise anything but StorcliError, and never turn a missing key into a guess:
what the tool did not say becomes None.

Every storcli JSON document has the same envelope:

    {"Controllers": [{"Command Status": {...}, "Response Data": {...}}, ...]}

one element per controller the command addressed. The Response Data of a controller
comes in two layouts: `/cN show J` is flat ("Product Name", "FW Version", "PD LIST"),
`/cN show all J` groups it ("Basics", "Version", "Bus", "HwCfg", ...). Field quirks
handled here, each seen in real output:

- "Status": "Failure" with a full Response Data (storcli 007.2309, ErrCd 59 "Incomplete
  foreign configuration"): the data is used and the error becomes a warning;
- "Controller 0 not found" and perccli's "No Controller found": no controllers, not an
  error; `show J` reports zero controllers as "Number of Controllers": 0;
- detailed errors are keyed by what they are about ("Ctrl", "Drive", "VD");
- model strings are padded with spaces; the IT-mode HBA (LSI3008) has no TOPOLOGY or
  VD LIST at all; cache vault and ROC temperature exist only on some controllers.
"""

import functools
import json
import re

NOT_FOUND = re.compile(r"(no controller found|controller \d+ not found)", re.IGNORECASE)
RAID_TYPE = re.compile(r"RAID(\d+)$")

# State abbreviations from storcli's own legend under each table.
VD_STATES = {
    "Optl": "optimal",
    "OfLn": "offline",
    "Pdgd": "partially_degraded",
    "Dgrd": "degraded",
    "Rec": "recovery",
    "Cac": "cachecade",
    "Frgn": "foreign",
}
PD_STATES = {
    "Onln": "online",
    "Offln": "offline",
    "UGood": "unconfigured_good",
    "UGUnsp": "unconfigured_good_unsupported",
    "UGShld": "unconfigured_good_shielded",
    "UBad": "unconfigured_bad",
    "UBUnsp": "unconfigured_bad_unsupported",
    "JBOD": "jbod",
    "GHS": "global_hot_spare",
    "DHS": "dedicated_hot_spare",
    "Rbld": "rebuild",
    "Cpybck": "copyback",
    "Frgn": "foreign",
    "Sntze": "sanitize",
}


class StorcliError(ValueError):
    """The tool's output cannot be used; the message says what arrived."""


def _clear_errors(function):
    """A wrong type anywhere in the tool's output is bad output, never a crash."""

    @functools.wraps(function)
    def guarded(text):
        try:
            return function(text)
        except (AttributeError, TypeError, KeyError, IndexError) as exc:
            raise StorcliError(f"unexpected shape in the tool's output ({exc})") from None

    return guarded


def load(text):
    """The envelope's controller elements, or StorcliError for anything else."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise StorcliError(f"tool output is not JSON ({exc}): {_excerpt(text)}") from None
    if not isinstance(document, dict) or not isinstance(document.get("Controllers"), list):
        raise StorcliError(f'expected an object with a "Controllers" list: {_excerpt(text)}')
    for element in document["Controllers"]:
        if not isinstance(element, dict) or not isinstance(element.get("Command Status"), dict):
            raise StorcliError(f'a controller element without "Command Status": {element!r}')
    return document["Controllers"]


def command_status(element):
    """One element's outcome: ok flag, controller, description and detailed errors."""
    status = element["Command Status"]
    details = status.get("Detailed Status")
    details = details if isinstance(details, list) else [details]
    errors = [_detail(d) for d in details if isinstance(d, dict)]
    return {
        "ok": status.get("Status") == "Success",
        "controller": _whole(status.get("Controller")),
        "description": _text(status.get("Description")),
        "cli_version": _text(status.get("CLI Version")),
        "errors": errors,
    }


def failure_message(status):
    """A sentence naming the error codes and descriptions, for a failed command."""
    parts = [status["description"] or "the tool reported a failure"]
    for error in status["errors"]:
        code = f"ErrCd {error['code']}" if error["code"] is not None else "no error code"
        about = f"{error['about']}: " if error["about"] else ""
        parts.append(f"{about}{code} {error['message'] or ''}".strip())
    return "; ".join(parts)


@_clear_errors
def check(text):
    """Outcome of a command that changes something; raises StorcliError when it failed."""
    statuses = [command_status(e) for e in load(text)]
    failed = [s for s in statuses if not s["ok"]]
    if failed:
        raise StorcliError(" | ".join(failure_message(s) for s in failed))
    return statuses


@_clear_errors
def parse_controllers(text):
    """Controllers from `show J`, `/cN show J` or `/call show all J` output.

    Returns {"controllers": [...], "warnings": [...], "cli_version": str|None}.
    A "not found" failure gives an empty list; any other failure without data raises.
    """
    controllers, warnings, version = [], [], None
    for element in load(text):
        status = command_status(element)
        version = version or status["cli_version"]
        data = element.get("Response Data")
        if not status["ok"] and not isinstance(data, dict):
            if NOT_FOUND.search(status["description"] or ""):
                continue
            raise StorcliError(failure_message(status))
        if not isinstance(data, dict):
            raise StorcliError(f"controller {status['controller']}: no Response Data object")
        if not status["ok"]:
            warnings.append(f"controller {status['controller']}: {failure_message(status)}")
        controllers.extend(_shaped(_controllers_in, data, status["controller"]))
    return {"controllers": controllers, "warnings": warnings, "cli_version": version}


@_clear_errors
def parse_foreign(text):
    """Foreign drive groups from `/cN/fall show J` (an empty list when there are none)."""
    groups = []
    for data in _response_data(text):
        groups.extend(_shaped(_foreign_groups, data))
    return groups


def _foreign_groups(data):
    return [
        {
            "drive_group": _whole(row.get("DG")),
            "raid_type": _text(row.get("Type")),
            "state": _text(row.get("State")),
            "size": _text(row.get("Size")),
            "virtual_drives": _whole(row.get("NoVDs")),
        }
        for row in data.get("FOREIGN CONFIGURATION") or []
    ]


def _shaped(function, *args):
    """Run a record builder; a list where an object belongs is bad output, not a crash."""
    try:
        return function(*args)
    except (AttributeError, TypeError, KeyError) as exc:
        raise StorcliError(
            f"unexpected shape in Response Data ({exc}): {args[0]!r:.200}"
        ) from None


def _controllers_in(data, index):
    if "Number of Controllers" in data:
        return [_from_overview(row) for row in data.get("System Overview") or []]
    if "Basics" in data:
        return [_from_grouped(data)]
    if "Product Name" in data:
        return [_from_flat(data, _whole(index))]
    raise StorcliError(f"not a controller listing: Response Data keys {sorted(data)!r}")


@_clear_errors
def parse_virtual_drives(text):
    """VDs from `/cN/vM show J` or `/cN/vall show all J`, with properties when shown."""
    drives = []
    for data in _response_data(text):
        drives.extend(_shaped(_virtual_drives_in, data))
    return drives


def _virtual_drives_in(data):
    found = []
    for key, rows in data.items():
        # `/cN/vM show J` says "Virtual Drives"; `show all` names each VD "/c0/v239".
        if key != "Virtual Drives" and not re.fullmatch(r"/c\d+/v\d+", key):
            continue
        for row in rows:
            record = _virtual_drive(row)
            properties = data.get(f"VD{record['vd']} Properties") or {}
            record["strip_size"] = _text(properties.get("Strip Size"))
            record["span_depth"] = _whole(properties.get("Span Depth"))
            record["drives_per_span"] = _whole(properties.get("Number of Drives Per Span"))
            record["os_drive"] = _text(properties.get("OS Drive Name"))
            members = data.get(f"PDs for VD {record['vd']}") or []
            record["physical_drives"] = [_physical_drive(r) for r in members]
            found.append(record)
    return found


@_clear_errors
def parse_physical_drives(text):
    """Drives from `/cN/eE/sS show J` ("Drive Information")."""
    drives = []
    for data in _response_data(text):
        rows = data.get("Drive Information") or []
        drives.extend(_shaped(lambda r: [_physical_drive(x) for x in r], rows))
    return drives


@_clear_errors
def parse_enclosures(text):
    """Enclosures from `/cN/eall show J` ("Properties")."""
    found = []
    for data in _response_data(text):
        rows = data.get("Properties") or []
        found.extend(_shaped(lambda r: [_enclosure(x) for x in r], rows))
    return found


def _response_data(text):
    """Each element's Response Data; a failure without it raises with its error codes."""
    found = []
    for element in load(text):
        status = command_status(element)
        data = element.get("Response Data")
        if not isinstance(data, dict):
            raise StorcliError(failure_message(status) if not status["ok"] else "no Response Data")
        found.append(data)
    return found


def _from_overview(row):
    """`show J` knows little per controller: index, model and counts."""
    return _controller(
        index=_whole(row.get("Ctl")),
        model=_text(row.get("Model")),
        health=_text(row.get("Hlth")),
    )


def _from_flat(data, index):
    """The older `/cN show J` layout: everything at the top level of Response Data."""
    return _controller(
        index=index,
        model=_text(data.get("Product Name")),
        serial=_text(data.get("Serial Number")),
        firmware_version=_text(data.get("FW Version")),
        firmware_package=_text(data.get("FW Package Build")),
        bios_version=_text(data.get("BIOS Version")),
        driver=_text(data.get("Driver Name")),
        driver_version=_text(data.get("Driver Version")),
        pci_address=_text(data.get("PCI Address")),
        sas_address=_text(data.get("SAS Address")),
        data=data,
    )


def _from_grouped(data):
    """The `/cN show all J` layout (storcli 7.2x, perccli): Basics, Version, Bus, HwCfg."""
    basics, version = data.get("Basics") or {}, data.get("Version") or {}
    hardware, status = data.get("HwCfg") or {}, data.get("Status") or {}
    return _controller(
        index=_whole(basics.get("Controller")),
        model=_text(basics.get("Model")),
        serial=_text(basics.get("Serial Number")),
        firmware_version=_text(version.get("Firmware Version")),
        firmware_package=_text(version.get("Firmware Package Build")),
        bios_version=_text(version.get("Bios Version")),
        driver=_text(version.get("Driver Name")),
        driver_version=_text(version.get("Driver Version")),
        pci_address=_text(basics.get("PCI Address")),
        sas_address=_text(basics.get("SAS Address")),
        health=_text(status.get("Controller Status")),
        roc_temperature_c=_whole(hardware.get("ROC temperature(Degree Celsius)")),
        cache_vault=_cache_vault(data),
        data=data,
    )


def _controller(index, model, data=None, **fields):
    data = data or {}
    record = {
        "index": index,
        "model": model,
        "serial": None,
        "firmware_version": None,
        "firmware_package": None,
        "bios_version": None,
        "driver": None,
        "driver_version": None,
        "pci_address": None,
        "sas_address": None,
        "health": None,
        "roc_temperature_c": None,
        "cache_vault": None,
        **fields,
    }
    record["virtual_drives"] = [_virtual_drive(r) for r in data.get("VD LIST") or []]
    record["physical_drives"] = [_physical_drive(r) for r in data.get("PD LIST") or []]
    record["enclosures"] = [_enclosure(r) for r in data.get("Enclosure LIST") or []]
    # An IT-mode HBA (mpt3sas, e.g. LSI3008-IT) has no RAID sections at all.
    record["raid_capable"] = "VD LIST" in data or "TOPOLOGY" in data if data else None
    return record


def _cache_vault(data):
    """Only controllers with a CacheVault module print "Cachevault_Info"."""
    rows = data.get("Cachevault_Info")
    if not rows:
        return None
    row = rows[0] if isinstance(rows, list) else rows
    return {
        "model": _text(row.get("Model")),
        "state": _text(row.get("State")),
        "temperature": _text(row.get("Temp")),
    }


def _virtual_drive(row):
    group, _, number = str(row.get("DG/VD", "")).partition("/")
    raid_type = _text(row.get("TYPE"))
    level = RAID_TYPE.match(raid_type or "")
    state = _text(row.get("State"))
    return {
        "drive_group": _int(group),
        "vd": _int(number),
        "raid_type": raid_type,
        "raid_level": level.group(1) if level else None,
        "size": _text(row.get("Size")),
        "state": state,
        "status": VD_STATES.get(state),
        "access": _text(row.get("Access")),
        "cache": _text(row.get("Cache")),
        "name": _text(row.get("Name")),
    }


def _physical_drive(row):
    position = _text(row.get("EID:Slt"))
    enclosure, _, slot = (position or "").partition(":")
    state = _text(row.get("State"))
    return {
        "position": position,
        "enclosure": _int(enclosure),
        "slot": _int(slot),
        "device_id": _whole(row.get("DID")),
        "state": state,
        "status": PD_STATES.get(state),
        "drive_group": _whole(row.get("DG")),
        "size": _text(row.get("Size")),
        "interface": _text(row.get("Intf")),
        "media": _text(row.get("Med")),
        "model": _text(row.get("Model")),
        # PD LIST has no serial numbers; only `/cN/eall/sall show all J` does.
        "serial": _text(row.get("SN")),
        "sector_size": _text(row.get("SeSz")),
    }


def _enclosure(row):
    return {
        "id": _whole(row.get("EID")),
        "state": _text(row.get("State")),
        "slots": _whole(row.get("Slots")),
        "drives": _whole(row.get("PD")),
        "product": _text(row.get("ProdID")),
        "port": _text(row.get("Port#")),
    }


def _detail(row):
    about = next((f"{k} {row[k]}" for k in ("Drive", "VD", "Ctrl") if k in row), None)
    return {
        "about": about,
        "code": row.get("ErrCd"),
        "message": _text(row.get("ErrMsg")),
        "status": _text(row.get("Status")),
    }


def _text(value):
    """Trimmed text; storcli pads models and says "None" or "-" for nothing."""
    if value is None:
        return None
    text = str(value).strip()
    return None if text in ("", "None", "-", "N/A", "NA") else text


def _whole(value):
    """An integer the tool printed as a number; anything else ("-", a list) is None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _int(text):
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def _excerpt(text, limit=200):
    return repr(text[:limit]) + (" ..." if len(text) > limit else "")
