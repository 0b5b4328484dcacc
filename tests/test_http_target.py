"""Request-target parsing: properties over arbitrary input, and the cases that matter."""

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.http._target import TargetError, parse_target

# What h11 lets through as a request target: visible ASCII (RFC 9112 section 3.2).
visible_ascii = st.binary(min_size=0, max_size=200).map(
    lambda raw: bytes(b for b in raw if 0x21 <= b <= 0x7E)
)


@given(visible_ascii)
def test_any_target_parses_or_raises_target_error(raw):
    try:
        path, raw_path, query = parse_target(b"/" + raw)
    except TargetError:
        return
    assert path.startswith("/")
    assert "\x00" not in path
    assert raw_path.startswith("/")
    assert all(isinstance(v, list) for v in query.values())


@given(st.text(min_size=0, max_size=50).filter(lambda t: "\x00" not in t))
def test_percent_encoded_path_round_trips(text):
    path, _, query = parse_target(("/" + quote(text, safe="")).encode())
    assert path == "/" + text
    assert query == {}


@given(st.dictionaries(st.text(min_size=1, max_size=10), st.text(max_size=10), max_size=5))
def test_query_round_trips(pairs):
    pairs = {k: v for k, v in pairs.items() if "\x00" not in k + v}
    encoded = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs.items())
    _, _, query = parse_target(f"/p?{encoded}".encode())
    assert query == {k: [v] for k, v in pairs.items()}


@pytest.mark.parametrize(
    "target",
    [
        b"/a%00b",
        b"/%ff",
        b"/%c3%28",
        b"/x%2",
        b"/x%zz",
        b"/q?a=%ff",
        b"/q?a=%00",
        b"relative",
        b"*",
    ],
)
def test_bad_targets_raise(target):
    with pytest.raises(TargetError):
        parse_target(target)


def test_absolute_form_and_fragment():
    assert parse_target(b"http://appliance:80/boot/a?x=1#frag") == (
        "/boot/a",
        "/boot/a",
        {"x": ["1"]},
    )
    assert parse_target(b"http://appliance")[0] == "/"


def test_raw_path_keeps_escapes_for_traversal_checks():
    path, raw_path, _ = parse_target(b"/boot/%2e%2e/secret")
    assert path == "/boot/../secret"
    assert raw_path == "/boot/%2e%2e/secret"
