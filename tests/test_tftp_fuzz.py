"""Property tests: random and mutated datagrams raise only TftpError; transfers stay coherent."""

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.proto import tftp

SEEDS = [
    tftp.encode_request(tftp.RRQ, "pxelinux.0", {"blksize": 1468, "tsize": 0}),
    tftp.encode_request(tftp.RRQ, "/EFI/BOOT/bootx64.efi", {"windowsize": 8, "timeout": 2}),
    tftp.encode_request(tftp.WRQ, "upload", {}),
    tftp.encode_ack(0),
    tftp.encode_ack(3),
    tftp.encode_error(8, "abort"),
    tftp.encode_data(1, b"payload"),
    tftp.encode_oack({"blksize": "1468"}),
]


@st.composite
def mutated(draw):
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 4))):
        action = draw(st.sampled_from(["flip", "cut", "insert", "append"]))
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        if action == "flip" and data:
            data[position] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[position:]
        elif action == "insert":
            data[position:position] = draw(st.binary(max_size=8))
        else:
            data += draw(st.binary(max_size=16))
    return bytes(data)


datagrams = st.one_of(st.binary(max_size=80), mutated())


@settings(max_examples=400, deadline=None)
@given(datagrams)
def test_request_parser_raises_only_tftp_error(data):
    try:
        request = tftp.parse_request(data)
    except tftp.TftpError as e:
        assert e.code in (tftp.ILLEGAL_OPERATION, tftp.ACCESS_VIOLATION)
        return
    assert request.opcode in (tftp.RRQ, tftp.WRQ)
    assert all(name == name.lower() for name in request.options)


@settings(max_examples=300, deadline=None)
@given(datagrams)
def test_path_rules_raise_only_tftp_error(data):
    name = data.decode("latin-1")
    try:
        relative = tftp.normalise_filename(name)
    except tftp.TftpError:
        return
    assert ".." not in relative.parts
    assert not relative.is_absolute()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    options=st.dictionaries(
        st.sampled_from(["blksize", "tsize", "timeout", "windowsize", "x"]),
        st.text(alphabet="0123456789-+ a", max_size=6),
    ),
    events=st.lists(st.one_of(datagrams, st.none()), max_size=30),
)
def test_transfer_survives_any_event_sequence(options, events):
    content = bytes(range(256)) * 20
    negotiated = tftp.negotiate(
        options,
        file_size=len(content),
        block_size_cap=1468,
        max_window_size=16,
        default_timeout=1.0,
    )
    transfer = tftp.Transfer(
        lambda offset, length: content[offset : offset + length],
        len(content),
        negotiated,
        retries=3,
    )

    now = 0.0
    step = transfer.start(now)
    for event in events:
        now += 0.25
        step = (
            transfer.timer_expired(now) if event is None else transfer.packet_received(event, now)
        )

        # Whatever arrives, what goes out is well-formed and the state is coherent.
        for packet in step.packets:
            parsed = tftp.parse_packet(packet)
            assert parsed.opcode in (tftp.DATA, tftp.OACK, tftp.ERROR)
            if parsed.opcode == tftp.DATA:
                assert len(parsed.data) <= negotiated.block_size
        assert (step.deadline is None) == (transfer.outcome is not None)
        assert transfer.bytes_sent >= 0
        if step.deadline is None:
            break


def test_every_ack_number_is_handled():
    content = b"z" * 3000
    for number in range(0, 65536, 97):
        transfer = tftp.Transfer(
            lambda offset, length: content[offset : offset + length],
            len(content),
            tftp.negotiate(
                {}, file_size=3000, block_size_cap=512, max_window_size=1, default_timeout=1.0
            ),
            retries=1,
        )
        transfer.start(0.0)
        step = transfer.packet_received(struct.pack("!HH", 4, number), 0.1)
        assert step.deadline is not None or transfer.outcome is not None
