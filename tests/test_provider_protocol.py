"""The provider protocol parser: good output, byte by byte, and every way to break it."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from providers import protocol

GOOD = (
    b'{"type": "progress", "percent": 10, "message": "scanning"}\n'
    b'{"type": "log", "level": "warning", "message": "no cache vault"}\n'
    b"\n"
    b'{"type": "progress", "percent": null}\n'
    b'{"type": "result", "status": "succeeded", "message": "ok", "data": {"drives": 4}}\n'
)


def parse_all(data, chunk=None):
    parser = protocol.OutputParser()
    events = []
    step = chunk or len(data) or 1
    for start in range(0, len(data), step):
        events += parser.feed(data[start : start + step])
    return events, parser.finish()


def test_whole_output_gives_the_events_and_the_result():
    events, result = parse_all(GOOD)
    assert [e["type"] for e in events] == ["progress", "log", "progress", "result"]
    assert events[1] == {"type": "log", "level": "warning", "message": "no cache vault"}
    assert result == {"type": "result", "status": "succeeded", "message": "ok",
                      "data": {"drives": 4}}  # fmt: skip


def test_byte_by_byte_gives_the_same():
    assert parse_all(GOOD, chunk=1) == parse_all(GOOD)


def test_a_result_without_the_final_newline_still_counts():
    _, result = parse_all(GOOD.rstrip(b"\n"))
    assert result["status"] == "succeeded"


def test_a_failed_result_is_a_result():
    _, result = parse_all(b'{"type": "result", "status": "failed", "message": "no disks"}\n')
    assert (result["status"], result["message"], result["data"]) == ("failed", "no disks", {})


@pytest.mark.parametrize(
    "output, words",
    [
        (b"", "ended without a result"),
        (b'{"type": "progress", "percent": 5}\n', "ended without a result"),
        (b"Segmentation fault\n", "not a JSON line: b'Segmentation fault'"),
        (b"\xff\xfe\n", "not a JSON line"),
        (b"[1, 2]\n", "expected a JSON object, got b'[1, 2]'"),
        (b'{"type": "hello"}\n', "unknown event type 'hello'"),
        (b'{"percent": 5}\n', "unknown event type None"),
        (b'{"type": "progress", "percent": 101}\n', "percent must be 0-100 or null, got 101"),
        (b'{"type": "progress", "percent": true}\n', "got True"),
        (b'{"type": "log", "level": "fatal", "message": "x"}\n', "log level must be one of"),
        (b'{"type": "log"}\n', "message must be a string, got None"),
        (b'{"type": "result", "status": "ok"}\n', "result status must be one of"),
        (b'{"type": "result", "status": "failed", "data": []}\n', "data must be an object"),
        (
            b'{"type": "result", "status": "failed"}\n{"type": "result", "status": "succeeded"}\n',
            "output after the result",
        ),
        (b'{"type": "result", "status": "failed"}\nbye\n', "output after the result: b'bye'"),
    ],
)
def test_protocol_violations_say_what_arrived(output, words):
    with pytest.raises(protocol.ProtocolError) as caught:
        parse_all(output)
    assert words in str(caught.value)


def test_deeply_nested_json_is_a_protocol_error_not_a_crash():
    with pytest.raises(protocol.ProtocolError, match="not a JSON line"):
        protocol.OutputParser().feed(b"[" * 50000 + b"\n")


def test_two_results_never_become_a_success():
    output = (
        b'{"type": "result", "status": "failed", "message": "really failed"}\n'
        b'{"type": "result", "status": "succeeded"}\n'
    )
    parser = protocol.OutputParser()
    with pytest.raises(protocol.ProtocolError):
        parser.feed(output)
    assert parser.result["status"] == "failed"


def test_an_oversized_line_is_refused_before_it_ends():
    parser = protocol.OutputParser(max_line_bytes=1000)
    parser.feed(b'{"type": "log", "message": "')
    with pytest.raises(protocol.ProtocolError, match="a line longer than 1000 bytes"):
        parser.feed(b"x" * 2000)


def test_an_oversized_complete_line_is_refused():
    parser = protocol.OutputParser(max_line_bytes=100)
    line = json.dumps({"type": "log", "message": "x" * 200}).encode() + b"\n"
    with pytest.raises(protocol.ProtocolError, match="longer than 100"):
        parser.feed(line)


def test_too_many_events_are_refused():
    parser = protocol.OutputParser(max_events=3)
    with pytest.raises(protocol.ProtocolError, match="more than 3 events"):
        parser.feed(b'{"type": "progress", "percent": 1}\n' * 4)


def test_long_messages_are_cut_to_the_limit():
    line = json.dumps({"type": "log", "message": "y" * 10000}).encode() + b"\n"
    (event,) = protocol.OutputParser().feed(line)
    assert len(event["message"]) == protocol.MAX_MESSAGE_CHARS


def test_unknown_fields_are_dropped_not_passed_on():
    (event,) = protocol.OutputParser().feed(b'{"type": "progress", "percent": 3, "x": 1}\n')
    assert event == {"type": "progress", "percent": 3, "message": ""}


def test_encode_event_and_make_request_speak_version_1():
    assert protocol.make_request("inventory")["protocol"] == 1
    assert protocol.OutputParser().feed(protocol.encode_event({"type": "progress"}))


@given(st.binary(max_size=300))
def test_any_bytes_give_events_or_a_protocol_error(data):
    parser = protocol.OutputParser()
    try:
        parser.feed(data)
        parser.finish()
    except protocol.ProtocolError:
        pass
