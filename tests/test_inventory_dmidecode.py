"""Golden tests: real `dmidecode` dumps from servers (shared/corpus/dmi) read into
the inventory document. Expected values were read from each file by hand."""

import pytest

from bootos.agent.inventory import build_document
from bootos.agent.inventory._dmidecode import parse_dmidecode, records_from_dmi_id
from tests.inventory_builders import entry_point_3, system_table

# file: (manufacturer, product, smbios version, memory slots, populated DIMMs,
#        populated CPU sockets, CPU model, cores per CPU, threads per CPU)
GOLDEN = {
    "huawei-taishan200-2280-kunpeng920": (
        "Huawei",
        "TaiShan 200 (Model 2280)",
        "3.2.0",
        32,
        8,
        2,
        "Kunpeng 920-4826",
        48,
        48,
    ),
    "huawei-taishan2180-hi1612": ("Huawei", "Taishan 2180", "3.0", 8, 1, 1, "Hi1612", 32, 32),
    "huawei-rh1288v3": (
        "Huawei",
        "RH1288 V3",
        "2.8",
        16,
        4,
        2,
        "Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz",
        14,
        28,
    ),
    "inspur-nf5280m6": (
        "Inspur",
        "NF5280M6",
        "3.3.0",
        32,
        16,
        2,
        "Intel(R) Xeon(R) Gold 6342 CPU @ 2.80GHz",
        24,
        48,
    ),
    "langchao-inspur-nf5110": (
        "Langchao",
        "NF5110",
        "2.7",
        4,
        2,
        1,
        "Intel(R) Xeon(R) CPU E3-1220 V2 @ 3.10GHz",
        4,
        4,
    ),
    "sugon-i620-g20": (
        "Sugon",
        "I620-G20",
        "2.8",
        24,
        6,
        2,
        "Intel(R) Xeon(R) CPU E5-2620 v3 @ 2.40GHz",
        6,
        12,
    ),
    "lenovo-thinksystem-sr650v2": (
        "Lenovo",
        "ThinkSystem SR650 V2",
        "3.3.0",
        32,
        12,
        2,
        "Intel(R) Xeon(R) Silver 4310 CPU @ 2.10GHz",
        12,
        24,
    ),
    "dell-poweredge-r740": (
        "Dell Inc.",
        "PowerEdge R740",
        "3.2.0",
        24,
        16,
        2,
        "Intel(R) Xeon(R) Gold 6154 CPU @ 3.00GHz",
        18,
        36,
    ),
    "hpe-proliant-dl380-gen10": (
        "HPE",
        "ProLiant DL380 Gen10",
        "3.2.1",
        24,
        1,
        1,
        "Intel(R) Xeon(R) Silver 4210R CPU @ 2.40GHz",
        10,
        20,
    ),
    "supermicro-super-server": (
        "Supermicro",
        "Super Server",
        "3.1.1",
        8,
        4,
        2,
        "Intel(R) Xeon(R) Gold 6152 CPU @ 2.10GHz",
        22,
        44,
    ),
    "phytium-ft2000-4": ("Phytium", "FT-2000/4", "3.2.0", 3, 3, 1, "FT-2000/4", 4, None),
}


def _document(corpus, name):
    data = (corpus / "dmi" / f"{name}.dmidecode.txt").read_bytes()
    return build_document({"cloudboot-capture/tools/dmidecode.txt": data})


def test_every_corpus_dump_has_a_golden_entry(corpus):
    files = {p.name.removesuffix(".dmidecode.txt") for p in (corpus / "dmi").glob("*.txt")}
    assert files == set(GOLDEN)


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_corpus_dump_reads_into_the_document(corpus, name):
    manufacturer, product, version, slots, dimms, sockets, model, cores, threads = GOLDEN[name]
    document = _document(corpus, name)

    assert document["smbios_version"] == version
    assert document["system"]["manufacturer"] == manufacturer
    assert document["system"]["product"] == product
    # linuxhw anonymised every serial and UUID as "--": those must read as absent.
    assert document["system"]["serial"] is None
    assert document["system"]["uuid"] is None
    assert document["baseboard"]["serial"] is None
    assert document["chassis"]["serial"] is None

    assert len(document["memory"]) == slots
    present = [slot for slot in document["memory"] if slot["present"]]
    assert len(present) == dimms
    assert all(slot["size_mb"] for slot in present)
    empty = [slot for slot in document["memory"] if slot["present"] is False]
    assert len(empty) == slots - dimms
    assert all(slot["manufacturer"] is None and slot["part_number"] is None for slot in empty)

    assert len(document["cpus"]) == sockets
    assert {cpu["model"] for cpu in document["cpus"]} == {model}
    assert {cpu["cores"] for cpu in document["cpus"]} == {cores}
    assert {cpu["threads"] for cpu in document["cpus"]} == {threads}
    assert document["warnings"] == []


def test_template_strings_read_as_null(corpus):
    supermicro = _document(corpus, "supermicro-super-server")
    assert supermicro["system"]["version"] is None  # "0123456789"
    assert supermicro["system"]["sku"] is None  # "To be filled by O.E.M."
    assert supermicro["baseboard"]["product"] == "X11DPL-i"
    assert supermicro["bios"]["vendor"] == "American Megatrends Inc."

    sugon = _document(corpus, "sugon-i620-g20")
    assert sugon["system"]["sku"] is None  # only spaces
    assert sugon["system"]["family"] == "Rack"
    assert sugon["chassis"]["type"] == "Rack Mount Chassis"

    inspur = _document(corpus, "inspur-nf5280m6")
    assert inspur["system"]["version"] is None  # "0"
    assert inspur["system"]["sku"] is None  # "Default string"

    langchao = _document(corpus, "langchao-inspur-nf5110")
    assert langchao["baseboard"]["manufacturer"] is None  # a single space
    assert langchao["chassis"]["manufacturer"] is None  # "To Be Filled By O.E.M."

    dell = _document(corpus, "dell-poweredge-r740")
    assert dell["system"]["sku"] == "SKU=0715;ModelName=PowerEdge R740"
    assert dell["bios"] == {"vendor": "Dell Inc.", "version": "2.22.1", "date": "08/09/2024"}


def test_memory_slot_details(corpus):
    kunpeng = _document(corpus, "huawei-taishan200-2280-kunpeng920")
    first, second = kunpeng["memory"][:2]
    assert first == {
        "locator": "DIMM000 J27",
        "bank": "SOCKET 0 CHANNEL 0 DIMM 0",
        "present": True,
        "size_mb": 65536,
        "type": "DDR4",
        "speed_mts": 2933,
        "manufacturer": "Samsung",
        "serial": None,
        "part_number": "M393A8G40MB2-CVF",  # padded with spaces in the table
    }
    assert second["present"] is False and second["manufacturer"] is None  # "NO DIMM"

    sugon = _document(corpus, "sugon-i620-g20")
    dimm = sugon["memory"][0]
    assert (dimm["size_mb"], dimm["speed_mts"], dimm["type"]) == (16384, 2133, None)


def test_unpopulated_socket_is_left_out(corpus):
    hpe = _document(corpus, "hpe-proliant-dl380-gen10")
    assert [cpu["socket"] for cpu in hpe["cpus"]] == ["Proc 1"]
    assert hpe["cpus"][0]["max_speed_mhz"] == 4000


def test_raw_tables_win_over_dmidecode_text(corpus):
    data = (corpus / "dmi" / "dell-poweredge-r740.dmidecode.txt").read_bytes()
    raw = {
        "cloudboot-capture/tools/dmidecode.txt": data,
        "sys/firmware/dmi/tables/smbios_entry_point": entry_point_3(3, 4, 0),
        "sys/firmware/dmi/tables/DMI": system_table(manufacturer=b"Raw Vendor"),
    }
    document = build_document(raw)
    assert document["system"]["manufacturer"] == "Raw Vendor"
    assert document["smbios_version"] == "3.4.0"


def test_empty_and_garbage_text_give_warnings_not_errors():
    warnings = []
    assert parse_dmidecode("", warnings) == (None, [])
    assert warnings

    document = build_document({"cloudboot-capture/tools/dmidecode.txt": b"\xff\xfe junk\n"})
    assert document["system"]["manufacturer"] is None
    assert document["warnings"]


def test_truncated_dump_keeps_what_was_read(corpus):
    text = (corpus / "dmi" / "dell-poweredge-r740.dmidecode.txt").read_text()
    for cut in range(0, len(text), 997):
        version, records = parse_dmidecode(text[:cut], [])
        assert all("type" in record for record in records)


def test_dmi_id_files_fill_the_firmware_sections():
    records = records_from_dmi_id(
        {
            "sys_vendor": "QEMU",
            "product_name": "Standard PC (Q35 + ICH9, 2009)",
            "product_uuid": "8F0E7C39-3B57-4D09-9E4F-6C2E4B3A1D00",
            "chassis_type": "23",
            "bios_vendor": "SeaBIOS",
        }
    )
    raw = {f"sys/class/dmi/id/{k}": v.encode() for k, v in (("sys_vendor", "QEMU"),)}
    assert build_document(raw)["system"]["manufacturer"] == "QEMU"

    by_type = {record["type"]: record for record in records}
    assert by_type[1]["uuid"] == "8f0e7c39-3b57-4d09-9e4f-6c2e4b3a1d00"
    assert by_type[3]["chassis_type"] == "Rack Mount Chassis"
    assert by_type[0]["vendor"] == "SeaBIOS"
