"""Golden tests: the storcli/perccli JSON parser on every real capture in the corpus.

Each value asserted here was read from the capture itself (../shared/corpus/storcli). Also:
every truncation of a capture, garbage and wrong shapes give StorcliError, never a crash.
"""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from providers.megaraid import storcli_json as parser

STORCLI = "storcli"
# Keys the parser looks for, so generated documents reach its deeper branches.
SHAPE_KEYS = [
    "Status", "Description", "Detailed Status", "Controller", "ErrCd", "Number of Controllers",
    "System Overview", "Basics", "Version", "HwCfg", "Product Name", "VD LIST", "PD LIST",
    "Enclosure LIST", "DG/VD", "EID:Slt", "Virtual Drives", "/c0/v1", "VD1 Properties",
    "PDs for VD 1", "Drive Information", "Properties", "FOREIGN CONFIGURATION",
    "Cachevault_Info", "Drive",
]  # fmt: skip


def read(corpus, name):
    return (corpus / STORCLI / name).read_text()


def only(result):
    assert len(result["controllers"]) == 1
    return result["controllers"][0]


def test_every_capture_has_a_golden_test(corpus):
    names = {path.name for path in (corpus / STORCLI).glob("*.json")}
    assert names == set(GOLDEN_FILES)


def test_intel_rs3dc080_flat_layout(corpus):
    result = parser.parse_controllers(read(corpus, GOLDEN_FILES[0]))
    controller = only(result)
    assert result["warnings"] == []
    assert result["cli_version"] == "007.1704.0000.0000 Jan 16, 2021"
    assert controller["index"] == 0
    assert controller["model"] == "Intel(R) RAID Controller RS3DC080"
    assert controller["serial"] == "SKPLACEH01"
    assert controller["firmware_version"] == "4.650.00-8128"
    assert controller["firmware_package"] == "24.15.0-0034"
    assert controller["sas_address"] == "500605b00d000001"  # the tool pads it with a space
    assert controller["driver"] == "megaraid_sas"
    assert controller["raid_capable"] is True
    # The flat layout has neither: they must be None, not missing and not guessed.
    assert controller["roc_temperature_c"] is None
    assert controller["cache_vault"] is None

    assert controller["virtual_drives"] == [
        {
            "drive_group": 2,
            "vd": 1,
            "raid_type": "RAID0",
            "raid_level": "0",
            "size": "43.655 TB",
            "state": "Optl",
            "status": "optimal",
            "access": "RW",
            "cache": "RWTD",
            "name": "dummy",
        }
    ]
    drives = controller["physical_drives"]
    assert len(drives) == 12
    assert [d["position"] for d in drives[:2]] == ["35:12", "35:13"]
    assert drives[0] == {
        "position": "35:12",
        "enclosure": 35,
        "slot": 12,
        "device_id": 21,
        "state": "UGood",
        "status": "unconfigured_good",
        "drive_group": None,
        "size": "3.637 TB",
        "interface": "SAS",
        "media": "HDD",
        "model": "HUS726040AL5210",
        "serial": None,
        "sector_size": "512B",
    }
    assert drives[-1]["position"] == "35:23" and drives[-1]["device_id"] == 30
    assert [e["id"] for e in controller["enclosures"]] == [35, 252]
    assert controller["enclosures"][0]["product"] == "SC846P"


def test_failure_with_response_data_uses_the_data_and_warns(corpus):
    result = parser.parse_controllers(read(corpus, GOLDEN_FILES[1]))
    controller = only(result)
    assert controller["model"] == "Intel(R) RAID Controller RS3DC080"
    assert len(controller["physical_drives"]) == 12
    assert controller["virtual_drives"][0]["name"] == "dummy"
    assert result["cli_version"] == "007.2309.0000.0000 Sep 16, 2022"
    [warning] = result["warnings"]
    assert "ErrCd 59" in warning
    assert "Incomplete foreign configuration" in warning


def test_lsi3008_it_mode_hba_has_drives_and_no_vds(corpus):
    controller = only(parser.parse_controllers(read(corpus, GOLDEN_FILES[2])))
    assert controller["model"] == "LSI3008-IT"
    assert controller["firmware_version"] == "16.00.01.00"
    assert controller["driver"] == "mpt3sas"
    assert controller["raid_capable"] is False
    assert controller["virtual_drives"] == []
    drives = controller["physical_drives"]
    assert [d["position"] for d in drives] == [f"12:{slot}" for slot in range(12)]
    assert {d["model"] for d in drives} == {"HGST HUS728T8TALE6L4"}
    assert {d["interface"] for d in drives} == {"SATA"}
    assert {d["size"] for d in drives} == {"7.277 TB"}
    assert {d["status"] for d in drives} == {"unconfigured_good"}


@pytest.mark.parametrize("index", [3, 4])
def test_not_found_gives_no_controllers(corpus, index):
    result = parser.parse_controllers(read(corpus, GOLDEN_FILES[index]))
    assert result["controllers"] == []
    assert result["warnings"] == []


def test_zero_controllers_in_show_j(corpus):
    result = parser.parse_controllers(read(corpus, GOLDEN_FILES[5]))
    assert result == {
        "controllers": [],
        "warnings": [],
        "cli_version": "007.1704.0000.0000 Jan 16, 2021",
    }


def test_two_controllers_in_show_j(corpus):
    result = parser.parse_controllers(read(corpus, GOLDEN_FILES[6]))
    assert [c["index"] for c in result["controllers"]] == [0, 1]
    assert {c["model"] for c in result["controllers"]} == {"Intel(R)RAIDControllerRS3DC080"}
    assert {c["health"] for c in result["controllers"]} == {"Opt"}
    assert result["controllers"][0]["serial"] is None


def test_show_all_overview_with_aso_table(corpus):
    controller = only(parser.parse_controllers(read(corpus, GOLDEN_FILES[7])))
    assert controller["model"] == "HPEMR216i-aGen10+"
    assert controller["index"] == 0


def test_hpe_mr216i_grouped_layout(corpus):
    result = parser.parse_controllers(read(corpus, GOLDEN_FILES[8]))
    controller = only(result)
    assert result["cli_version"] == "007.2408.0000.0000 Nov 15, 2022"
    assert controller["model"] == "HPE MR216i-a Gen10+"
    assert controller["serial"] == "PXBSA0PLACEH01"
    assert controller["firmware_version"] == "5.160.03-3444"
    assert controller["firmware_package"] == "52.16.3-3913"
    assert controller["bios_version"] == "7.16.00.0_0x07100501"
    assert controller["pci_address"] == "00:64:00:00"
    assert controller["health"] == "Optimal"
    assert controller["roc_temperature_c"] == 49
    assert controller["cache_vault"] is None  # "Energy Pack": "Absent", no Cachevault_Info
    [vd] = controller["virtual_drives"]
    assert (vd["drive_group"], vd["vd"], vd["raid_level"]) == (0, 239, "1")
    assert (vd["size"], vd["name"], vd["status"]) == ("744.687 GiB", "NVMe-RAID-1", "optimal")
    drives = controller["physical_drives"]
    assert [d["position"] for d in drives] == ["251:1", "251:2"]
    assert {d["model"] for d in drives} == {"MZXLR800HBHQ-000H3"}  # padded with 22 spaces
    assert {d["interface"] for d in drives} == {"NVMe"}
    assert {d["drive_group"] for d in drives} == {0}
    assert controller["enclosures"][0]["port"] == "2I"


def test_perccli_h345_grouped_layout(corpus):
    result = parser.parse_controllers(read(corpus, GOLDEN_FILES[9]))
    controller = only(result)
    assert result["cli_version"] == "007.1020.0000.0000 July 1, 2019"
    assert controller["model"] == "PERC H345 Front"
    assert controller["serial"] == "PLCH01D"
    assert controller["firmware_version"] == "5.160.01-3530"
    assert controller["firmware_package"] == "51.16.0-4076"
    assert controller["roc_temperature_c"] == 43
    assert controller["cache_vault"] is None
    [vd] = controller["virtual_drives"]
    assert (vd["vd"], vd["raid_type"], vd["size"], vd["name"]) == (0, "RAID0", "1.089 TB", None)
    drives = controller["physical_drives"]
    assert [(d["position"], d["device_id"]) for d in drives] == [("69:0", 1), ("69:1", 0)]
    assert {(d["model"], d["interface"], d["size"]) for d in drives} == {
        ("ST600MM0069", "SAS", "558.375 GB")
    }
    assert controller["enclosures"] == []  # this capture has no Enclosure LIST


def test_set_good_failure_names_code_and_description(corpus):
    text = read(corpus, GOLDEN_FILES[10])
    with pytest.raises(parser.StorcliError) as caught:
        parser.check(text)
    message = str(caught.value)
    assert "Set Drive Good Failed." in message
    assert "/c0/e252/s7" in message
    assert "ErrCd 255" in message
    assert "Operation not allowed." in message


def test_set_offline_success(corpus):
    [status] = parser.check(read(corpus, GOLDEN_FILES[11]))
    assert status["ok"] and status["controller"] == 0
    assert status["description"] == "Set Drive Offline Succeeded."


def test_single_drive_show(corpus):
    [drive] = parser.parse_physical_drives(read(corpus, GOLDEN_FILES[12]))
    assert (drive["position"], drive["state"], drive["status"]) == ("35:12", "Offln", "offline")
    assert (drive["drive_group"], drive["model"]) == (2, "HUS726040AL5210")


def test_enclosures(corpus):
    enclosures = parser.parse_enclosures(read(corpus, GOLDEN_FILES[13]))
    assert [e["id"] for e in enclosures] == [35, 44, 252]
    assert enclosures[0]["port"] == "Multipath"
    assert enclosures[2]["product"] == "SGPIO"


def test_foreign_raid60(corpus):
    assert parser.parse_foreign(read(corpus, GOLDEN_FILES[14])) == [
        {
            "drive_group": 0,
            "raid_type": "RAID60",
            "state": "Frgn",
            "size": "0 KB",
            "virtual_drives": 1,
        }
    ]


def test_single_vd_show(corpus):
    [vd] = parser.parse_virtual_drives(read(corpus, GOLDEN_FILES[15]))
    assert (vd["drive_group"], vd["vd"], vd["raid_type"]) == (2, 1, "RAID0")
    assert (vd["size"], vd["name"]) == ("7.275 TB", "create_vd_raid1")
    assert vd["strip_size"] is None and vd["physical_drives"] == []


def test_vall_show_all_with_properties(corpus):
    [vd] = parser.parse_virtual_drives(read(corpus, GOLDEN_FILES[16]))
    assert (vd["vd"], vd["raid_level"], vd["name"]) == (239, "1", "NVMe-RAID-1")
    assert (vd["strip_size"], vd["span_depth"], vd["drives_per_span"]) == ("64 KB", 1, 2)
    assert vd["os_drive"] == "/dev/sda"
    assert [d["position"] for d in vd["physical_drives"]] == ["251:1", "251:2"]


GOLDEN_FILES = [
    "c0-show-J__intel-rs3dc080__3vd-36pd.json",
    "c0-show-J__status-failure-errcd59-incomplete-foreign-config-with-response-data.json",
    "c0-show-J__lsi3008-it-hba-12-sata-hdd__supermicro-x11dph-t.json",
    "c0-show-J__failure-controller-0-not-found.json",
    "perccli-call-show-all-J__failure-no-controller-found.json",
    "show-J__no-controllers__storcli-007.1704.json",
    "show-J__two-intel-rs3dc080-controllers.json",
    "show-all-J__one-hpe-mr216i-a-controller.json",
    "call-show-all-J__hpe-mr216i-a-gen10plus.json",
    "perccli-call-show-all-J__perc-h345-front.json",
    "c0-e252-s7-set-good-J__failure-errcd255-operation-not-allowed.json",
    "c0-e35-s12-set-offline-J__success.json",
    "c0-e35-s12-show-J__single-drive.json",
    "c0-eall-show-J__enclosures-sc846p-sas3x28-backplane.json",
    "c0-fall-show-J__foreign-raid60-config.json",
    "c0-v1-show-J__raid1-vd.json",
    "c0-vall-show-all-J__hpe-mr216i-a-nvme-raid1.json",
]

CONTROLLER_FILES = GOLDEN_FILES[:10]


@pytest.mark.parametrize("name", CONTROLLER_FILES)
def test_every_truncation_is_a_clear_error(corpus, name):
    raw = (corpus / STORCLI / name).read_bytes()
    whole = parser.parse_controllers(raw)
    for end in range(len(raw.rstrip())):
        with pytest.raises(parser.StorcliError):
            parser.parse_controllers(raw[:end])
    assert parser.parse_controllers(raw + b"\n\n") == whole


@pytest.mark.parametrize("name", CONTROLLER_FILES)
def test_trailing_junk_is_refused(corpus, name):
    with pytest.raises(parser.StorcliError, match="not JSON"):
        parser.parse_controllers(read(corpus, name) + "storcli64: segfault\n")


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "\x00\xff",
        b"\xff\xfe{",
        "Usage: storcli64 /c0 show",
        "[]",
        "null",
        '{"Controllers": {}}',
        '{"Controllers": [1]}',
        '{"Controllers": [{"Command Status": []}]}',
        '{"Controllers": [{"Command Status": {"Status": "Success"}, "Response Data": []}]}',
        '{"Controllers": [{"Command Status": {"Status": "Success"},'
        ' "Response Data": {"Product Name": "x", "PD LIST": [1]}}]}',
        '{"Controllers": [{"Command Status": {"Status": "Success"},'
        ' "Response Data": {"Basics": [], "PD LIST": "x"}}]}',
        '{"Controllers": [{"Command Status": {"Status": "Failure",'
        ' "Description": "Un-supported command"}}]}',
    ],
)
def test_garbage_is_a_clear_error(garbage):
    with pytest.raises(parser.StorcliError):
        parser.parse_controllers(garbage)


def test_error_excerpt_quotes_what_arrived():
    with pytest.raises(parser.StorcliError, match="Usage: storcli64"):
        parser.parse_controllers("Usage: storcli64 /c0 show")


def test_shapes_of_other_outputs_are_refused():
    bad = json.dumps({"Controllers": [{"Command Status": {}, "Response Data": {"x": 1}}]})
    with pytest.raises(parser.StorcliError, match="not a controller listing"):
        parser.parse_controllers(bad)
    rows = {"Virtual Drives": [1]}
    bad = json.dumps({"Controllers": [{"Command Status": {}, "Response Data": rows}]})
    with pytest.raises(parser.StorcliError, match="unexpected shape"):
        parser.parse_virtual_drives(bad)


KEYS = st.sampled_from(SHAPE_KEYS)
SCALARS = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=12,
)
ROWS = st.lists(st.dictionaries(KEYS, JSON_VALUES, max_size=6), max_size=3)
OBJECTS = st.dictionaries(
    KEYS, JSON_VALUES | ROWS | st.dictionaries(KEYS, JSON_VALUES), max_size=8
)


@settings(max_examples=500, deadline=None)
@given(status=OBJECTS | JSON_VALUES, data=OBJECTS | JSON_VALUES)
def test_any_shape_is_parsed_or_refused_clearly(status, data):
    element = {"Command Status": status, "Response Data": data}
    text = json.dumps({"Controllers": [element]})
    for parse in (
        parser.parse_controllers,
        parser.parse_virtual_drives,
        parser.parse_physical_drives,
        parser.parse_enclosures,
        parser.parse_foreign,
        parser.check,
    ):
        try:
            parsed = parse(text)
        except parser.StorcliError:
            continue
        json.dumps(parsed)  # plain data only, ready for the result event
        if parse is parser.parse_controllers:
            for controller in parsed["controllers"]:
                assert controller["index"] is None or type(controller["index"]) is int
                assert all(
                    type(v["vd"]) in (int, type(None)) for v in controller["virtual_drives"]
                )
