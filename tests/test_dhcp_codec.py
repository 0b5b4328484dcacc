"""The DHCP codec: whole input, every prefix, trailing junk, random and mutated bytes."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.boot.pxe_policy import PxePolicy
from appliance.proto import dhcp
from tests.dhcp_requests import AMI_GUID, APPLIANCE, request
from tests.dhcp_requests import settings as appliance_settings

DISCOVER = dhcp.encode(
    request(option_97=AMI_GUID, option_55=bytes([1, 3, 43, 60, 66, 67]), option_57=b"\x05\xc0")
)


def test_round_trip_keeps_every_field():
    packet = request(
        hops=2,
        secs=7,
        ciaddr="192.0.2.50",
        giaddr="10.20.0.1",
        sname=b"boot-server",
        file=b"pxelinux.0",
        option_82=b"\x01\x02ab",
    )

    assert dhcp.decode(dhcp.encode(packet)) == packet


def test_encoded_packet_is_padded_to_bootp_minimum():
    assert len(dhcp.encode(request())) == dhcp.MINIMUM_PACKET_LENGTH


def test_every_prefix_is_a_result_or_a_clean_error():
    whole = dhcp.decode(DISCOVER)

    for end in range(len(DISCOVER)):
        try:
            partial = dhcp.decode(DISCOVER[:end])
        except dhcp.DhcpDecodeError as e:
            assert "expected" in str(e)
        else:
            # A cut that falls between options keeps what came before it.
            assert set(partial.options) <= set(whole.options)


def test_trailing_junk_after_end_is_ignored():
    assert dhcp.decode(DISCOVER + b"\x35\x01\x07junk\xff" * 20) == dhcp.decode(DISCOVER)


def test_byte_by_byte_errors_say_what_was_expected_and_what_arrived():
    with pytest.raises(dhcp.DhcpDecodeError, match=r"expected at least 240 bytes.*got 10"):
        dhcp.decode(DISCOVER[:10])

    bad_cookie = DISCOVER[:236] + b"\x00\x00\x00\x00" + DISCOVER[240:]
    with pytest.raises(dhcp.DhcpDecodeError, match="magic cookie"):
        dhcp.decode(bad_cookie)

    with pytest.raises(dhcp.DhcpDecodeError, match=r"op 1 .* got 0"):
        dhcp.decode(b"\x00" + DISCOVER[1:])

    truncated_option = DISCOVER[:240] + b"\x3c\x20PXEClient"
    with pytest.raises(dhcp.DhcpDecodeError, match=r"expected 32 bytes of option 60 .* got 9"):
        dhcp.decode(truncated_option)

    with pytest.raises(dhcp.DhcpDecodeError, match="option 53"):
        dhcp.decode(DISCOVER[:240] + b"\x35\x02\x01\x01\xff")


def test_decode_error_is_a_value_error():
    assert issubclass(dhcp.DhcpDecodeError, ValueError)


def test_option_overload_reads_options_from_file_and_sname():
    header = bytearray(dhcp.encode(request(arch=None))[:236])
    header[108:119] = b"\x3c\x09PXEClient"
    header[119] = 0xFF
    header[44:48] = b"\x5d\x02\x00\x07"
    header[48] = 0xFF
    options = b"\x35\x01\x01\x34\x01\x03\xff"

    packet = dhcp.decode(bytes(header) + dhcp.MAGIC_COOKIE + options)

    assert packet.options[dhcp.OPTION_VENDOR_CLASS] == b"PXEClient"
    assert packet.options[dhcp.OPTION_CLIENT_ARCH] == b"\x00\x07"
    assert packet.file == b"" and packet.sname == b""


def test_bad_overload_value_is_an_error():
    with pytest.raises(dhcp.DhcpDecodeError, match="option 52"):
        dhcp.decode(DISCOVER[:240] + b"\x34\x01\x04\xff")


def test_split_option_is_joined_and_long_option_is_split():
    """RFC 3396: an option longer than 255 bytes travels as several instances."""
    long_value = bytes(range(256)) * 2

    wire = dhcp.encode(request(option_77=long_value))

    assert wire.count(b"\x4d\xff") == 2
    assert dhcp.decode(wire).options[dhcp.OPTION_USER_CLASS] == long_value


def test_user_classes_reads_raw_and_rfc3004_forms():
    assert dhcp.user_classes(b"iPXE") == [b"iPXE"]
    assert dhcp.user_classes(b"\x04iPXE") == [b"iPXE"]
    assert dhcp.user_classes(b"\x07subopt1\x02ab") == [b"subopt1", b"ab"]
    assert dhcp.user_classes(b"\x09short") == [b"\x09short"]
    assert dhcp.user_classes(b"") == [b""]


def test_architecture_from_option_93_and_vendor_class():
    assert dhcp.client_architectures(request(arch=b"\x00\x07\x00\x10")) == [7, 16]
    assert dhcp.client_architectures(request(arch=b"\x07")) is None
    assert dhcp.vendor_class_architecture(request()) == 7
    assert dhcp.vendor_class_architecture(request(vendor_class=b"PXEClient")) is None
    assert dhcp.vendor_class_architecture(request(vendor_class=b"PXEClient:Arch:x")) is None


# Property tests: bounded, fast. bench/fuzz_dhcp.py runs the long version.

_policy = PxePolicy(appliance_settings().dhcp, APPLIANCE, 80)


def _decide_everything(data):
    """What the server does with one datagram: decode, decide, encode the reply."""
    try:
        packet = dhcp.decode(data)
    except dhcp.DhcpDecodeError:
        return
    for on_pxe_port in (False, True):
        decision = _policy.decide(
            packet, on_pxe_port=on_pxe_port, source=("192.0.2.50", 68), now=0.0
        )
        if hasattr(decision, "packet"):
            dhcp.decode(dhcp.encode(decision.packet))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_random_bytes_never_raise_anything_but_decode_error(data):
    _decide_everything(data)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, len(DISCOVER) - 1), st.integers(0, 255)), min_size=1, max_size=8
    ),
    st.integers(0, len(DISCOVER) + 40),
    st.binary(max_size=40),
)
def test_mutated_discover_never_raises_anything_but_decode_error(edits, cut, junk):
    data = bytearray(DISCOVER)
    for offset, value in edits:
        data[offset] = value

    _decide_everything(bytes(data[:cut]) + junk)


_options = st.dictionaries(
    st.integers(1, 254).filter(lambda c: c not in (52, 53, 54)),
    st.binary(max_size=300),
    max_size=6,
)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.binary(min_size=6, max_size=6),
    st.sampled_from([dhcp.DISCOVER, dhcp.REQUEST, dhcp.INFORM]),
    _options,
)
def test_generated_packets_round_trip(xid, mac, message_type, options):
    packet = request(message_type=message_type, vendor_class=None, arch=None, xid=xid, mac=mac)
    packet.options.update(options)

    assert dhcp.decode(dhcp.encode(packet)) == packet
