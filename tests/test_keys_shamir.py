"""Shamir secret sharing over GF(256): field arithmetic, any M of N, M-1 learn nothing."""

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keys import shamir


def test_field_multiplication_matches_the_aes_specification_example():
    # FIPS-197 section 4.2 works {57} x {83} = {c1} in this very field.
    assert shamir.mul(0x57, 0x83) == 0xC1
    assert shamir.mul(0x57, 0x13) == 0xFE


def test_every_nonzero_element_has_an_inverse():
    for a in range(256):
        for b in range(1, 256):
            assert shamir.div(shamir.mul(a, b), b) == a
    with pytest.raises(ZeroDivisionError):
        shamir.div(1, 0)


@settings(max_examples=60, deadline=None)
@given(
    secret=st.binary(min_size=1, max_size=48),
    threshold=st.integers(min_value=1, max_value=5),
    extra=st.integers(min_value=0, max_value=3),
    data=st.data(),
)
def test_any_threshold_shares_rebuild_the_secret(secret, threshold, extra, data):
    count = threshold + extra
    shares = shamir.split(secret, threshold, count)
    chosen = data.draw(st.permutations(shares))[:threshold]
    assert bytes(shamir.combine(chosen)) == secret
    assert bytes(shamir.combine(shares)) == secret


def test_every_two_of_three_subset_rebuilds_and_no_single_share_does():
    secret = bytes(range(32))
    shares = shamir.split(secret, 2, 3)
    for pair in itertools.combinations(shares, 2):
        assert bytes(shamir.combine(list(pair))) == secret
    for share in shares:
        assert bytes(shamir.combine([share])) != secret


@settings(max_examples=40, deadline=None)
@given(
    secret=st.binary(min_size=32, max_size=32),
    threshold=st.integers(min_value=2, max_value=5),
    data=st.data(),
)
def test_one_share_too_few_does_not_rebuild_a_key(secret, threshold, data):
    # A 32-byte key matches by chance with probability 2**-256.
    shares = shamir.split(secret, threshold, threshold + 1)
    chosen = data.draw(st.permutations(shares))[: threshold - 1]
    assert bytes(shamir.combine(chosen)) != secret


def test_a_single_share_is_uniform_whatever_the_secret(monkeypatch):
    # With threshold 2 a share is secret + a1*x. Walking the random coefficient
    # a1 through all 256 values must give every share value exactly once, for
    # any secret byte: a lone share says nothing about the secret.
    for secret_byte in (0x00, 0x5A, 0xFF):
        seen = []
        for coefficient in range(256):
            monkeypatch.setattr(shamir.secrets, "token_bytes", lambda n, c=coefficient: bytes([c]))
            seen.append(shamir.split(bytes([secret_byte]), 2, 3)[1][1][0])
        assert sorted(seen) == list(range(256))


@pytest.mark.parametrize(
    ("threshold", "count"), [(0, 3), (4, 3), (2, 256)], ids=["zero", "above", "too-many"]
)
def test_bad_parameters_are_refused(threshold, count):
    with pytest.raises(ValueError, match="threshold"):
        shamir.split(b"k", threshold, count)


def test_bad_share_sets_are_refused():
    shares = shamir.split(b"secret", 2, 3)
    with pytest.raises(ValueError, match="twice"):
        shamir.combine([shares[0], shares[0]])
    with pytest.raises(ValueError, match="length"):
        shamir.combine([shares[0], (2, b"xx")])
    with pytest.raises(ValueError, match="no shares"):
        shamir.combine([])
