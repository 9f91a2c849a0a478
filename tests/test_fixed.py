import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from quant.fixed import quantize_multiplier, requant, rshift_round, sat, signed_width


def ref_rshift_round(x: int, n: int) -> int:
    # round half up of x / 2**n, with exact rationals
    if n == 0:
        return x
    return math.floor(x / 2**n + 0.5) if abs(x) < 2**50 else (2 * x + 2**n) // 2 ** (n + 1)


@pytest.mark.parametrize(
    "x,n,y",
    [
        (5, 1, 3),
        (-5, 1, -2),
        (4, 1, 2),
        (-4, 1, -2),
        (3, 2, 1),
        (-3, 2, -1),
        (2, 2, 1),
        (-2, 2, 0),
        (-6, 2, -1),
        (-7, 2, -2),
        (7, 0, 7),
        (-7, 0, -7),
        (0, 5, 0),
        (-1, 1, 0),
        (1, 1, 1),
    ],
)
def test_rshift_round_cases(x, n, y):
    assert rshift_round(x, n) == y


@given(st.integers(-(2**47), 2**47), st.integers(0, 40))
def test_rshift_round_property(x, n):
    expect = x if n == 0 else (2 * x + 2**n) // 2 ** (n + 1)  # floor(x/2^n + 1/2)
    assert rshift_round(x, n) == expect
    # vectorized path agrees with the scalar path
    assert int(rshift_round(np.array([x], dtype=np.int64), np.array([n]))[0]) == expect


def test_rshift_round_rejects_negative_shift():
    with pytest.raises(ValueError):
        rshift_round(3, -1)


@given(st.integers(-(2**40), 2**40), st.integers(1, 33))
def test_sat_property(x, bits):
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    assert sat(x, bits) == min(max(x, lo), hi)


def test_sat_extremes():
    assert sat(-129, 8) == -128 and sat(128, 8) == 127 and sat(-128, 8) == -128 and sat(127, 8) == 127
    assert list(sat(np.array([-(2**40), 2**40, 0]), 16)) == [-32768, 32767, 0]


@given(
    st.integers(-(2**31), 2**31 - 1),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(0, 2**16 - 1),
    st.integers(0, 63),
    st.booleans(),
)
def test_requant_property(acc, bias, M, n, relu):
    v = (acc + bias) * M
    r = v if n == 0 else (2 * v + 2**n) // 2 ** (n + 1)
    y = min(max(r, -128), 127)
    if relu:
        y = max(y, 0)
    assert requant(acc, bias, M, n, relu=relu) == y
    got = requant(np.array([[acc]]), np.array([bias]), np.array([M]), np.array([n]), relu=relu)
    assert int(got[0, 0]) == y


def test_requant_rejects_bad_multiplier():
    with pytest.raises(ValueError):
        requant(1, 0, 1 << 16, 3)
    with pytest.raises(ValueError):
        requant(1, 0, 5, 64)


@given(st.floats(min_value=2.0**-48, max_value=65535.0, allow_nan=False))
def test_quantize_multiplier_precision(scale):
    M, n = quantize_multiplier(scale)
    assert 0 < M < 2**16 and 0 <= n <= 63
    assert abs(M / 2**n - scale) <= 0.5 / 2**n  # correctly rounded at this n
    if scale < 32767.5:
        assert M >= 2**15  # top bit set: best precision
    # one more bit of shift would not fit
    assert n == 63 or round(scale * 2 ** (n + 1)) >= 2**16 or n == 63


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), 70000.0, 1e-30])
def test_quantize_multiplier_rejects(bad):
    with pytest.raises(ValueError):
        quantize_multiplier(bad)


def test_quantize_multiplier_known():
    assert quantize_multiplier(1.0) == (32768, 15)
    assert quantize_multiplier(0.5) == (32768, 16)
    assert quantize_multiplier(65535.0) == (65535, 0)
    M, n = quantize_multiplier(0.999999999)  # rounds up into bit 16 at n=16 -> falls back to n=15
    assert M < 2**16 and abs(M / 2**n - 1) < 2**-15


def test_signed_width():
    assert signed_width(-128, 127) == 8
    assert signed_width(-1024, 1024) == 12
    assert signed_width(0, 0) == 1


def _exact(x: int, n: int) -> int:
    return x if n == 0 else (x + (1 << (n - 1))) >> n  # Python ints: no wrap at any size


def test_rshift_round_array_paths_exact_over_int64():
    """Every array path (scalar shift, per-element shifts with and without n = 0 or 1) against Python
    integers, on the int64 extremes and random values, for every shift 0..70."""
    rng = np.random.default_rng(1)
    edges = [2**63 - 1, 2**63 - 2, -(2**63), -(2**63) + 1, 2**62, -(2**62), -(2**62) - 1, 0, 1, -1, 2, -2, 3, -3]
    xs = np.array(edges + rng.integers(-(2**63), 2**63 - 1, 200, dtype=np.int64).tolist(), np.int64)
    for n in range(71):
        want = [_exact(int(v), n) for v in xs]
        assert rshift_round(xs, n).tolist() == want, n
        assert rshift_round(xs, np.full(len(xs), n)).tolist() == want, n
    for pool in ((0, 1, 2, 63, 64), (2, 3, 40), (0, 5), (1, 7)):  # the n = 0 / n = 1 branches
        ns = rng.choice(pool, len(xs))
        assert rshift_round(xs, ns).tolist() == [_exact(int(v), int(k)) for v, k in zip(xs, ns, strict=True)], pool
    # per-channel shifts broadcast over rows, and a scalar x against an array of shifts
    acc = rng.integers(-(2**40), 2**40, (5, 4), dtype=np.int64)
    n4 = np.array([0, 1, 17, 64])
    assert rshift_round(acc, n4).tolist() == [
        [_exact(int(v), int(k)) for v, k in zip(row, n4, strict=True)] for row in acc
    ]
    assert rshift_round(7, n4).tolist() == [7, 4, 0, 0]


def test_requant_arrays_broadcast_and_leave_inputs_alone():
    acc = np.array([[100, -100], [5, -5]], np.int64)
    keep = acc.copy()
    M, n = np.array([3, 65535]), np.array([0, 16])
    want = [
        [min(max(_exact((int(a) + 2) * int(m), int(k)), -128), 127) for a, m, k in zip(r, M, n, strict=True)]
        for r in acc
    ]
    assert requant(acc, 2, M, n).tolist() == want
    assert requant(acc, 2, M, n, relu=True).tolist() == [[max(v, 0) for v in r] for r in want]
    assert requant(acc, np.array([2, 2]), 3, 0, bits=16).tolist() == [[306, -294], [21, -9]]
    assert np.array_equal(acc, keep)  # the in-place steps work on copies only
    assert requant(5, 0, np.array([[1], [2]]), np.array([0, 1])).tolist() == [[5, 3], [10, 5]]
    assert requant(np.array([3], np.uint8), 0, 1, 1).dtype == np.int64


def test_uint64_beyond_int64_is_refused_not_wrapped():
    assert rshift_round(np.array([2**63 - 1], np.uint64), 62).tolist() == [2]
    with pytest.raises(ValueError, match="does not fit int64"):
        rshift_round(np.array([2**63], np.uint64), 1)
    with pytest.raises(ValueError, match="does not fit int64"):
        sat(np.array([2**64 - 1], np.uint64), 8)
