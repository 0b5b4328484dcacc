"""Shamir secret sharing over GF(2^8), written here so it can be read in full.

split() turns a secret into n shares of which any m rebuild it; fewer than m
shares give no information about it (every candidate secret is equally
likely). Each byte of the secret is shared on its own: it is the constant term
of a random polynomial of degree m-1, and share x holds that polynomial's value
at x (x = 1..n, never 0, since the value at 0 is the secret).

The field is GF(2^8) with the AES reduction polynomial x^8+x^4+x^3+x+1 (0x11b),
in which addition is XOR. Multiplication uses log/antilog tables built from
the generator 3.

This module must never log, print or persist a secret or a share; callers keep
shares in bytearrays and zero them after use.
"""

import secrets

REDUCTION = 0x11B
GENERATOR = 3


def _tables() -> tuple[list[int], list[int]]:
    exp = [0] * 510
    log = [0] * 256
    value = 1
    for power in range(255):
        exp[power] = value
        log[value] = power
        value = _slow_multiply(value, GENERATOR)
    # A doubled antilog table lets mul() skip the "mod 255" on the sum of logs.
    for power in range(255, 510):
        exp[power] = exp[power - 255]
    return exp, log


def _slow_multiply(a: int, b: int) -> int:
    """Carry-less multiply with reduction, used only to build the tables."""
    product = 0
    while b:
        if b & 1:
            product ^= a
        a <<= 1
        if a & 0x100:
            a ^= REDUCTION
        b >>= 1
    return product


EXP, LOG = _tables()


def mul(a: int, b: int) -> int:
    if a == 0 or b == 0:
        return 0
    return EXP[LOG[a] + LOG[b]]


def div(a: int, b: int) -> int:
    if b == 0:
        raise ZeroDivisionError("division by zero in GF(256)")
    if a == 0:
        return 0
    return EXP[LOG[a] + 255 - LOG[b]]


def _evaluate(coefficients: bytearray, x: int) -> int:
    """Horner's rule, highest coefficient first."""
    value = 0
    for coefficient in reversed(coefficients):
        value = mul(value, x) ^ coefficient
    return value


def split(secret: bytes, threshold: int, count: int) -> list[tuple[int, bytearray]]:
    """Split secret into `count` shares, any `threshold` of which rebuild it."""
    if not 1 <= threshold <= count <= 255:
        raise ValueError(
            f"need 1 <= threshold <= count <= 255, got threshold={threshold} count={count}"
        )
    if not secret:
        raise ValueError("cannot split an empty secret")

    shares = [(x, bytearray(len(secret))) for x in range(1, count + 1)]
    coefficients = bytearray(threshold)
    for index, byte in enumerate(secret):
        coefficients[0] = byte
        coefficients[1:] = secrets.token_bytes(threshold - 1)
        for x, share in shares:
            share[index] = _evaluate(coefficients, x)

    for index in range(threshold):
        coefficients[index] = 0
    return shares


def combine(shares: list[tuple[int, bytes]]) -> bytearray:
    """Rebuild the secret from shares by Lagrange interpolation at x = 0.

    Given fewer shares than the threshold this returns a wrong value, not an
    error: Shamir shares carry no check. Callers verify the result (keys.master
    compares a MAC made with the real key).
    """
    _check_shares(shares)
    xs = [x for x, _ in shares]
    secret = bytearray(len(shares[0][1]))
    for index in range(len(secret)):
        value = 0
        for x, share in shares:
            value ^= mul(share[index], _basis_at_zero(x, xs))
        secret[index] = value
    return secret


def _basis_at_zero(x: int, xs: list[int]) -> int:
    """The Lagrange basis polynomial for x, evaluated at 0: prod(xj / (xj - x)).

    In GF(2^8) subtraction is XOR, so xj - x is xj ^ x.
    """
    numerator, denominator = 1, 1
    for other in xs:
        if other != x:
            numerator = mul(numerator, other)
            denominator = mul(denominator, other ^ x)
    return div(numerator, denominator)


def _check_shares(shares) -> None:
    if not shares:
        raise ValueError("no shares given")
    xs = [x for x, _ in shares]
    if len(set(xs)) != len(xs):
        raise ValueError(f"the same share was given twice (x values {sorted(xs)})")
    if any(not 1 <= x <= 255 for x in xs):
        raise ValueError(f"share x values must be 1..255, got {sorted(xs)}")
    lengths = {len(share) for _, share in shares}
    if len(lengths) != 1:
        raise ValueError(f"shares differ in length: {sorted(lengths)}")
