"""Values that firmware reports where a real identifier belongs.

Board vendors ship SMBIOS tables from templates and leave the template text in
place: "To be filled by O.E.M.", "Default string", "0123456789" and so on. Such
a value is shared by thousands of machines, so it must never identify one.
The agent (which reports inventory) and the core (which scores identity) both
read this one list, so they can never disagree about what is a placeholder.
"""

import re

# Compared after trimming surrounding white space and folding case: firmware
# pads fields with spaces and vendors spell the same template differently
# ("To Be Filled By O.E.M." on ASRock Rack, "To be filled by O.E.M." on AMI).
PLACEHOLDER_STRINGS = frozenset(
    s.casefold()
    for s in (
        "",
        "To be filled by O.E.M.",
        "To Be Filled By O.E.M.",
        "Default string",
        "0123456789",
        "1234567890",
        "12345",
        "System Serial Number",
        "System Product Name",
        "System manufacturer",
        "System Version",
        "Base Board Serial Number",
        "Chassis Serial Number",
        "Not Specified",
        "Not Available",
        "Not Applicable",
        "N/A",
        "NA",
        "None",
        "NO DIMM",
        "Unknown",
        "--",
        "Type1Sku0",
        "Type1Family",
        "Type2 - Board Serial Number",
        "SerNum0",
        "serial",
        "0",
        "00000000",
        "Empty",
        # AMI memory-slot template (langchao-inspur-nf5110 dump, empty DIMM slots).
        "[Empty]",
        "OEM",
        "O.E.M.",
    )
)

# UUIDs that many boards report at once. The AMI template UUID is the one seen
# in the field (frame 1 of the pixiecore capture: an ASRock board sends it).
SHARED_UUIDS = frozenset(
    {
        "03000200-0400-0500-0006-000700080009",
        # The same template read in the pre-SMBIOS-2.6 byte order.
        "00020003-0004-0005-0006-000700080009",
    }
)

_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

# Some boards (ASRock Rack, Supermicro) fill the UUID with zeros followed by
# the first NIC's MAC: unique, but it names a NIC, not the system.
_ZERO_PREFIX_MAC_UUID = re.compile(r"^00000000-0000-0000-0000-[0-9a-f]{12}$")


def clean(value):
    """Return the value trimmed, or None when it is absent or a placeholder.

    Values made only of white space, of one repeated character (all zeros,
    all F, all X, all dashes) or found in PLACEHOLDER_STRINGS count as absent.
    """
    if value is None:
        return None

    text = str(value).strip()
    if text.casefold() in PLACEHOLDER_STRINGS:
        return None

    compact = text.replace("-", "").replace(" ", "").replace(":", "")
    if len(compact) >= 3 and len(set(compact.casefold())) == 1:
        return None

    return text


def is_placeholder(value):
    """True when the value carries no identity (see clean)."""
    return clean(value) is None


def normalize_uuid(value):
    """Lower-case canonical UUID text, or None when it is not a UUID at all."""
    if value is None:
        return None

    text = str(value).strip().lower()
    if _UUID_RE.match(text):
        return text

    raw = text.replace("-", "")
    if len(raw) == 32 and all(c in "0123456789abcdef" for c in raw):
        return f"{raw[0:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:32]}"

    return None


def uuid_trusted(value):
    """True when an SMBIOS UUID may be used as an identity signal.

    Not trusted: absent, malformed, all-zero, all-F, a UUID that many boards
    share, or zeros followed by a MAC address (that names a NIC, which the MAC
    signal already covers).
    """
    text = normalize_uuid(value)
    if text is None:
        return False

    digits = text.replace("-", "")
    if len(set(digits)) == 1:
        return False

    if text in SHARED_UUIDS:
        return False

    return not _ZERO_PREFIX_MAC_UUID.match(text)
