"""Integer attention (quant/attention.py, docs/arithmetic.md "Integer attention").

Hand-worked values from the documented formulas, exhaustive checks of the exp approximation and its
bounds, softmax properties, extreme inputs and accuracy against float64.
"""

from __future__ import annotations

import numpy as np
import pytest

from quant.attention import (
    EXP2_COEFFS,
    T_MAX,
    attention,
    attention_context,
    attention_float,
    attention_scores,
    exp2_frac,
    int_exp,
    int_softmax,
    score_multiplier,
)
from quant.fixed import rshift_round

ONE = 1 << 15  # 1.0 in the Q1.15 probability format


def float_softmax(s: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Float64 softmax of Q3.12 scores (real value s / 4096), in Q1.15 units."""
    x = np.asarray(s, np.float64) / 4096
    if valid is not None:
        x = np.where(valid, x, -np.inf)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True) * ONE


# -- hand-worked examples ------------------------------------------------------------------------


def test_exp2_frac_hand_values():
    # c = (2**20, -725442, 243198, -42111); Horner with rshift_round(., 12) (half up).
    # f = 0: every product is 0 -> P = 2**20.
    # f = 2048 (x = 1/2):
    #   t = -42111
    #   t = 243198 + rshift_round(-42111 * 2048, 12) = 243198 + round_half_up(-21055.5) = 243198 - 21055 = 222143
    #   t = -725442 + rshift_round(222143 * 2048, 12) = -725442 + round_half_up(111071.5) = -614370
    #   P = 2**20 + rshift_round(-614370 * 2048, 12) = 1048576 - 307185 = 741391   (2**20 / sqrt(2) = 741455.2)
    # f = 1813:
    #   t = 243198 + rshift_round(-42111 * 1813, 12) = 243198 + round(-18639.46) = 224559
    #   t = -725442 + rshift_round(224559 * 1813, 12) = -725442 + round(99395.86) = -626046
    #   P = 2**20 + rshift_round(-626046 * 1813, 12) = 1048576 + round(-277104.83) = 771471
    assert exp2_frac(np.array([0, 2048, 1813])).tolist() == [1 << 20, 741391, 771471]


def test_int_exp_hand_values():
    # a = 0: w = 0, q = 0, f = 0 -> e = 2**20 (the maximum always gets exactly 1.0 in Q0.20).
    # a = 4096 (one unit below the max, exp(-1)):
    #   w = rshift_round(4096 * 47274, 15) = round_half_up(5909.25) = 5909 -> q = 1, f = 5909 - 4096 = 1813
    #   e = rshift_round(771471, 1) = 385736     (2**20 * exp(-1) = 385749.7, relative error 3.5e-5)
    # a = 65535 (the largest distance, exp(-16)): w = rshift_round(65535 * 47274, 15) = 94548 -> q = 23
    #   e = rshift_round(P(94548 - 23 * 4096 = 340), 23) = 0  (2**20 * exp(-16) = 0.12)
    assert int_exp(np.array([0, 4096, 65535])).tolist() == [1 << 20, 385736, 0]


def test_softmax_hand_two_positions():
    # Scores 1.0 and 0.0 (Q3.12: 4096, 0): a = (0, 4096), e = (2**20, 385736), S = 1434312.
    # R = div_round(2**51, 1434312) = round(1569951177.77) = 1569951178
    # p0 = rshift_round(2**20 * R, 36) = round(23955.554) = 23956
    # p1 = rshift_round(385736 * R, 36) = round(8812.446) = 8812
    # Float: 1 / (1 + e**-1) * 2**15 = 23955.3, 8812.7.
    assert int_softmax(np.array([4096, 0])).tolist() == [23956, 8812]
    # Equal scores: e = 2**20 each, S = 2**21, R = 2**30, p = 2**50 / 2**36 = 2**14 each, exactly 1/2.
    assert int_softmax(np.array([-77, -77])).tolist() == [1 << 14, 1 << 14]
    # Three equal scores: R = div_round(2**51, 3 * 2**20) = round(715827882.67) = 715827883,
    # p = rshift_round(2**20 * 715827883, 36) = round(10922.67) = 10923 each: the sum is 32769 (1 over, <= T // 2).
    assert int_softmax(np.array([5, 5, 5])).tolist() == [10923] * 3


def test_softmax_hand_masked():
    # Position 1 masked: the max is over valid positions only (4096, not 30000), the masked one gets 0,
    # the rest is the two-position example above.
    p = int_softmax(np.array([4096, 30000, 0]), mask=np.array([True, False, True]))
    assert p.tolist() == [23956, 0, 8812]
    assert int_softmax(np.array([4096, 0, 30000]), lengths=2).tolist() == [23956, 8812, 0]


def test_context_hand():
    # p = (1/2, 1/2): c0 = rshift_round(16384 * 127 + 16384 * 64, 15) = round_half_up(95.5) = 96,
    # c1 = rshift_round(16384 * (-128) + 16384 * 0, 15) = -64.
    h = np.array([[127, -128], [64, 0]])
    assert attention_context(h, np.array([16384, 16384])).tolist() == [96, -64]


def test_scores_hand():
    # q = (127, 0), h0 = (64, 0), h1 = (0, 64), h2 = (-128, 5): acc = (8128, 0, -16256) in Q.14.
    # With (M, n) = (1, 2) (scale 1): s = rshift_round(acc, 2) = (2032, 0, -4064) in Q3.12
    # (real 0.496 = 0.99 * 0.5, 0, -0.992). With M = 65535, n = 0 the first saturates at 32767 and
    # the last at -32768.
    h = np.array([[64, 0], [0, 64], [-128, 5]])
    q = np.array([127, 0])
    assert attention_scores(h, q, 1, 2).tolist() == [2032, 0, -4064]
    assert attention_scores(h, q, 65535, 0).tolist() == [32767, 0, -32768]
    assert score_multiplier(1.0) == (32768, 17)  # 2**-2 = 32768 * 2**-17


# -- the exp approximation, exhaustively -----------------------------------------------------------


def test_exp2_frac_exhaustive_bounds():
    f = np.arange(4096)
    P = exp2_frac(f)
    assert P[0] == 1 << 20 and P.max() == 1 << 20
    assert np.all(np.diff(P) <= 0)  # non-increasing
    assert P[-1] >= 1 << 19  # so e stays monotone across the integer part q (docs)
    # Accuracy: |P - 2**20 * 2**-x| <= 67 (6.4e-5 of full scale).
    assert np.abs(P - 2.0**20 * 2.0 ** (-f / 4096)).max() < 67
    # Widths of the Horner intermediates (docs): every product |t * f| < 2**32.
    c0, c1, c2, c3 = EXP2_COEFFS
    t1 = c2 + rshift_round(c3 * f, 12)
    t2 = c1 + rshift_round(t1 * f, 12)
    assert np.abs(c3 * f).max() < 1 << 28 and np.abs(t1 * f).max() < 1 << 30 and np.abs(t2 * f).max() < 1 << 32
    assert np.abs(t1).max() < 1 << 18 and np.abs(t2).max() < 1 << 20


def test_int_exp_exhaustive():
    a = np.arange(1 << 16)
    e = int_exp(a)
    assert e[0] == 1 << 20 and e.min() == 0
    assert np.all(np.diff(e) <= 0)  # larger distance below the max -> never a larger exponential
    ref = 2.0**20 * np.exp(-a / 4096)
    # |e - ref| <= 2.5e-4 * ref + 0.5 (measured 2.14e-4): the polynomial 6.4e-5 of full scale (1.3e-4
    # relative where P is near 2**19), w rounded to Q.12 (2**-13 * ln 2 = 8.5e-5), the LOG2E constant
    # (< 2.7e-5 at a = 65535), and e's own rounding (0.5).
    assert np.all(np.abs(e - ref) <= 2.5e-4 * ref + 0.5)
    with pytest.raises(ValueError, match="a out of range"):
        int_exp(np.array([-1]))


# -- softmax properties ----------------------------------------------------------------------------


@pytest.mark.parametrize("T", [1, 2, 3, 7, 64, 512])
def test_softmax_properties(T):
    rng = np.random.default_rng(T)
    for s in (
        rng.integers(-(1 << 15), 1 << 15, (50, T)),  # full int16 range
        rng.integers(-3000, 3000, (50, T)),  # typical: within +-0.75 real
        np.round(rng.normal(0, 2 * 4096, (50, T))).clip(-32768, 32767).astype(np.int64),
    ):
        p = int_softmax(s)
        assert p.min() >= 0 and p.max() <= ONE
        assert np.all(np.abs(p.sum(axis=-1) - ONE) <= T // 2)
        # The largest score gets the largest probability (ties allowed).
        assert np.all(p[np.arange(50), s.argmax(axis=-1)] == p.max(axis=-1))
        # Order preserved: s[i] >= s[j] -> p[i] >= p[j].
        order = np.argsort(s, axis=-1)
        assert np.all(np.diff(np.take_along_axis(p, order, axis=-1), axis=-1) >= 0)
        # Accuracy against float softmax of the same scores: within 2.5 LSB of Q1.15 (worst measured
        # over a 20000-row sweep of T in 2..2048: 2.01).
        assert np.abs(p - float_softmax(s)).max() <= 2.5


def test_softmax_shift_invariance():
    rng = np.random.default_rng(1)
    s = rng.integers(-12000, 12000, (40, 33))
    p = int_softmax(s)
    for c in (-20000, -1, 1, 4096, 20767):
        assert np.array_equal(int_softmax(s + c), p)


def test_softmax_t1_and_extremes():
    # T = 1: p = 1.0 exactly for any score.
    assert int_softmax(np.array([[-32768], [0], [32767]])).tolist() == [[ONE]] * 3
    # Largest spread: one at +8, the rest at -8 (distance 65535 -> e = 0): all mass on the max.
    s = np.full(512, -32768)
    s[17] = 32767
    p = int_softmax(s)
    assert p[17] == ONE and p.sum() == ONE
    # All equal, the longest sequence: uniform 2**15 / 2048 = 16 exactly.
    assert np.all(int_softmax(np.full(T_MAX, 123)) == 16)


def test_softmax_uniform_every_length():
    # Equal scores: p = rshift_round(div_round(2**31, T), 16) = round_half_up(2**15 / T) for every T (docs).
    for T in range(1, T_MAX + 1):
        p = int_softmax(np.zeros(T, np.int64))
        assert np.all(p == (2**16 + T) // (2 * T)), T
        assert abs(int(p.sum()) - ONE) <= T // 2


def test_softmax_mask_equals_truncation():
    rng = np.random.default_rng(2)
    s = rng.integers(-20000, 20000, (30, 40))
    lengths = rng.integers(1, 41, 30)
    p = int_softmax(s, lengths=lengths)
    for b in range(30):
        L = lengths[b]
        assert np.array_equal(p[b, :L], int_softmax(s[b, :L]))
        assert np.all(p[b, L:] == 0)
    # A general (non-prefix) mask: masked entries are simply left out.
    mask = rng.random((30, 40)) < 0.5
    mask[:, 3] = True
    p = int_softmax(s, mask=mask)
    for b in range(30):
        assert np.array_equal(p[b, mask[b]], int_softmax(s[b, mask[b]]))
        assert np.all(p[b, ~mask[b]] == 0)


# -- whole attention -------------------------------------------------------------------------------


def test_attention_t1_is_identity():
    rng = np.random.default_rng(3)
    h = rng.integers(-128, 128, (20, 1, 16))
    for M, n in ((0, 0), (65535, 0), *[score_multiplier(x) for x in (0.01, 1.0, 40.0)]):
        r = attention(h, M=M, n=n)
        assert np.all(r.probs == ONE)
        assert np.array_equal(r.context, h[:, 0])


@pytest.mark.parametrize("value", [-128, 127])
@pytest.mark.parametrize("T", [3, 300, 512])
def test_attention_constant_states(value, T):
    # All states equal: every score is equal, p uniform and Σ p may exceed 2**15 by up to T // 2;
    # the context must still be exactly the state (saturation catches 127.5 -> 128 and -128.5).
    h = np.full((2, T, 8), value)
    for M, n in ((65535, 0), score_multiplier(0.25)):
        r = attention(h, M=M, n=n)
        assert np.all(r.context == value)


def test_attention_huge_scores():
    # M = 65535, n = 0 saturates nearly every score; the result is still a valid attention.
    rng = np.random.default_rng(4)
    h = rng.integers(-128, 128, (10, 512, 64))
    r = attention(h, M=65535, n=0)
    assert np.abs(r.scores).max() >= 32767
    assert r.probs.min() >= 0 and np.all(np.abs(r.probs.sum(-1) - ONE) <= 256)
    assert r.context.min() >= -128 and r.context.max() <= 127
    # It agrees with the float reference that clips the scores the same way (within 1 LSB).
    c, _ = attention_float(h, scale=65535 * 4.0, clip_scores=True)
    assert np.abs(r.context - c * 128).max() <= 1.0


@pytest.mark.parametrize("T", [1, 5, 50, 512])
def test_attention_accuracy_vs_float(T):
    # Scale 1/sqrt(D): no score saturates, so the float reference is the exact real-valued attention.
    # The context is within 0.6 int8 LSB (worst measured 0.54: 0.5 from the final rounding), the
    # probabilities within 3.5 Q1.15 LSB (worst measured 2.9, score rounding to Q3.12 included).
    rng = np.random.default_rng(T)
    D = 32
    scale = 1 / np.sqrt(D)
    M, n = score_multiplier(scale)
    h = rng.integers(-128, 128, (40, T, D))
    q = rng.integers(-128, 128, (40, D))
    for query in (None, q):
        r = attention(h, query, M=M, n=n)
        c, p = attention_float(h, query, scale=scale)
        assert np.abs(r.context - c * 128).max() <= 0.6
        assert np.abs(r.probs - p * ONE).max() <= 3.5


def test_attention_query_and_lengths():
    rng = np.random.default_rng(5)
    h = rng.integers(-128, 128, (12, 30, 8))
    lengths = rng.integers(1, 31, 12)
    M, n = score_multiplier(2.0)
    r = attention(h, M=M, n=n, lengths=lengths)
    for b in range(12):
        L = lengths[b]
        # Default query: the last valid state; masked positions change nothing.
        one = attention(h[b, :L], h[b, L - 1], M=M, n=n)
        assert np.array_equal(r.context[b], one.context)
        assert np.array_equal(r.probs[b, :L], one.probs) and np.all(r.probs[b, L:] == 0)
    # A shared learned query broadcasts over the batch.
    q = rng.integers(-128, 128, 8)
    shared = attention(h, q, M=M, n=n)
    assert np.array_equal(shared.context[3], attention(h[3], q, M=M, n=n).context)


def test_bad_inputs():
    h = np.zeros((2, 4, 3), np.int64)
    with pytest.raises(ValueError, match="integer array"):
        attention(h.astype(float), M=1, n=0)
    with pytest.raises(ValueError, match="h out of range"):
        attention(h + 128, M=1, n=0)
    with pytest.raises(ValueError, match="sequence length"):
        attention(np.zeros((2, 0, 3), np.int64), M=1, n=0)
    with pytest.raises(ValueError, match="T in"):
        int_softmax(np.zeros(T_MAX + 1, np.int64))
    with pytest.raises(ValueError, match="M must be"):
        attention(h, M=1 << 16, n=0)
    with pytest.raises(ValueError, match="n must be"):
        attention(h, M=1, n=64)
    with pytest.raises(ValueError, match="at least one valid"):
        attention(h, M=1, n=0, mask=np.array([[True] * 4, [False] * 4]))
    with pytest.raises(ValueError, match="mask or lengths"):
        int_softmax(np.zeros(4, np.int64), mask=np.ones(4, bool), lengths=2)
    with pytest.raises(ValueError, match="lengths out of range"):
        int_softmax(np.zeros(4, np.int64), lengths=5)
    with pytest.raises(ValueError, match="q must have shape"):
        attention(h, np.zeros(4, np.int64), M=1, n=0)
    with pytest.raises(ValueError, match="s out of range"):
        int_softmax(np.array([1 << 15]))
