"""Range header choice (RFC 9110 section 14) and file validators."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.http._ranges import RangeNotSatisfiable, choose_range, etag_matches, if_range_allows


@pytest.mark.parametrize(
    "header, size, expected",
    [
        (None, 100, None),
        ("bytes=0-9", 100, (0, 9)),
        ("bytes=90-", 100, (90, 99)),
        ("bytes=90-1000", 100, (90, 99)),
        ("bytes=-10", 100, (90, 99)),
        ("bytes=-1000", 100, (0, 99)),
        ("bytes=0-0,5-6", 100, None),  # multi-range: whole file with 200
        ("items=0-5", 100, None),
        ("bytes=5-2", 100, None),
        ("bytes=abc", 100, None),
    ],
)
def test_choose_range(header, size, expected):
    assert choose_range(header, size) == expected


@pytest.mark.parametrize("header, size", [("bytes=100-", 100), ("bytes=-0", 100), ("bytes=0-", 0)])
def test_unsatisfiable(header, size):
    with pytest.raises(RangeNotSatisfiable):
        choose_range(header, size)


@given(st.text(max_size=40), st.integers(min_value=0, max_value=10**12))
def test_any_header_gives_a_range_inside_the_file_or_a_clear_answer(header, size):
    try:
        chosen = choose_range(header, size)
    except RangeNotSatisfiable:
        return
    if chosen is not None:
        start, end = chosen
        assert 0 <= start <= end < size


def test_validators():
    assert etag_matches('"a", W/"b"', '"b"')
    assert not etag_matches('"a"', '"b"')
    assert if_range_allows(None, '"e"', "date")
    assert not if_range_allows('"old"', '"e"', "date")
