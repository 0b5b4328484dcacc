"""The sans-I/O RELP codec and client session (appliance/core/relp.py), without sockets."""

import contextlib
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.core import relp

# What rsyslog 8.2302's imrelp (librelp 1.11) answered to our open, captured on loopback.
OPEN_ANSWER = (
    b"1 rsp 93 200 OK\nrelp_version=0\nrelp_software=librelp,1.11.0,"
    b"http://librelp.adiscon.com\ncommands=syslog\n"
)


def _opened_session():
    session = relp.ClientSession("test")
    assert session.open().startswith(b"1 open ")
    outcomes = session.receive(OPEN_ANSWER)
    assert outcomes == [
        relp.Opened(
            {
                "relp_version": "0",
                "relp_software": "librelp,1.11.0,http://librelp.adiscon.com",
                "commands": "syslog",
            }
        )
    ]
    return session


def test_frames_are_encoded_as_librelp_expects():
    assert relp.encode_frame(1, "close") == b"1 close 0\n"
    assert relp.encode_frame(7, "syslog", b"<14>1 hi") == b"7 syslog 8 <14>1 hi\n"
    session = relp.ClientSession("cb,1")
    assert session.open() == (b"1 open 49 relp_version=0\nrelp_software=cb,1\ncommands=syslog\n")
    with pytest.raises(ValueError):
        relp.encode_frame(relp.MAX_TXNR + 1, "syslog", b"x")


def test_reader_takes_whole_input_byte_by_byte_and_in_one_piece():
    stream = b"2 rsp 6 200 OK\n3 rsp 0\n0 serverclose 0\n"
    expected = [
        relp.Frame(2, "rsp", b"200 OK"),
        relp.Frame(3, "rsp"),
        relp.Frame(0, "serverclose"),
    ]
    assert relp.FrameReader().feed(stream) == expected

    reader = relp.FrameReader()
    frames = []
    for index in range(len(stream)):
        frames += reader.feed(stream[index : index + 1])
    assert frames == expected


def test_data_may_hold_line_feeds_and_spaces():
    data = b"200 OK\nline two\n"
    frame = relp.encode_frame(5, "rsp", data)
    assert relp.FrameReader().feed(frame) == [relp.Frame(5, "rsp", data)]


@pytest.mark.parametrize(
    "junk",
    [
        b"x rsp 6 200 OK\n",
        b"1 rsp six 200 OK\n",
        b"1 r-p 6 200 OK\n",
        b"1 rsp 6 200 OKX",
        b"1 rsp 0 trailing\n",
        b"1234567890 rsp 0\n",
        b"A" * 200,
        b"1 rsp 99999999 ",
    ],
)
def test_malformed_frames_are_protocol_errors(junk):
    reader = relp.FrameReader(max_data=1 << 16)
    with pytest.raises(relp.RelpProtocolError):
        reader.feed(junk)


@given(st.binary(max_size=300))
def test_reader_never_fails_other_than_with_a_protocol_error(data):
    with contextlib.suppress(relp.RelpProtocolError):
        relp.FrameReader().feed(data)


def test_acknowledgements_move_only_past_a_complete_prefix():
    session = _opened_session()
    for seq in (10, 11, 12):
        session.syslog(b"m", seq)
    assert session.outstanding == 3

    # rsp for txnr 3 (seq 11) first: seq 10 is still outstanding, nothing is delivered.
    assert session.receive(b"3 rsp 6 200 OK\n") == []
    assert session.receive(b"2 rsp 6 200 OK\n") == [relp.Delivered(11, 2)]
    assert session.receive(b"4 rsp 6 200 OK\n") == [relp.Delivered(12, 1)]
    assert session.outstanding == 0


def test_a_refusal_names_the_event_and_keeps_it_outstanding():
    session = _opened_session()
    session.syslog(b"m", 42)
    outcomes = session.receive(relp.encode_frame(2, "rsp", b"500 message too long"))
    assert outcomes == [relp.Refused(42, 500, "message too long")]
    assert session.outstanding == 1


def test_server_close_and_unexpected_answers():
    session = _opened_session()
    assert session.receive(b"0 serverclose 0\n") == [relp.ServerClosing()]
    with pytest.raises(relp.RelpProtocolError, match="not outstanding"):
        session.receive(b"9 rsp 6 200 OK\n")
    with pytest.raises(relp.RelpProtocolError, match="expects rsp"):
        relp.ClientSession().receive(b"1 syslog 1 x\n")


def test_open_refused_or_without_syslog_is_an_error():
    session = relp.ClientSession()
    session.open()
    with pytest.raises(relp.RelpProtocolError, match="open refused"):
        session.receive(b"1 rsp 14 500 go away ok\n")

    session = relp.ClientSession()
    session.open()
    with pytest.raises(relp.RelpProtocolError, match="syslog command"):
        session.receive(relp.encode_frame(1, "rsp", b"200 OK\ncommands=other"))

    with pytest.raises(relp.RelpProtocolError, match="must be open"):
        relp.ClientSession().syslog(b"m", 1)


def test_close_is_answered_without_data():
    session = _opened_session()
    assert session.close() == b"2 close 0\n"
    assert session.receive(b"2 rsp 0\n0 serverclose 0\n") == [relp.ServerClosing()]


def test_txnr_wraps_to_one():
    session = _opened_session()
    session._next_txnr = relp.MAX_TXNR
    assert session.syslog(b"m", 1).startswith(b"999999999 syslog ")
    assert session.syslog(b"m", 2).startswith(b"1 syslog ")


def test_the_codec_imports_no_sockets_and_no_trio():
    code = (
        "import sys, appliance.core.relp; "
        "print(sorted(m for m in ('trio', 'socket', 'ssl', 'apsw') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]", out.stdout
