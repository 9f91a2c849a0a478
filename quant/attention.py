"""Integer-only dot-product attention over RNN hidden states (SPEC §4): golden model, numpy only.

SPEC §4 asks for attention "as in iRNN", integer-only, defined in the golden model before it reaches
the RTL. This module is that definition; ``docs/arithmetic.md`` ("Integer attention") says the same
in words with every bound. It is **not** on the NPU: neither the RTL nor the compiler nor the model
file know it.

Given hidden states ``h[t]`` (int8 Q0.7, ``t < T``), a query ``q`` (int8 Q0.7; by default the last
valid ``h``) and a per-model score multiplier ``(M, n)``::

    acc[t] = Σ_d q[d] h[t, d]                                 int32, Q.14
    s[t]   = sat(rshift_round(acc[t] * M, n), 16)              int16, Q3.12   (scaled score)
    a[t]   = max_valid(s) - s[t]                               [0, 65535], Q.12 (>= 0)
    w[t]   = rshift_round(a[t] * LOG2E_Q15, 15)                [0, 94548], Q.12: a * log2(e)
    e[t]   = rshift_round(exp2_frac(w[t] & 4095), w[t] >> 12)  [0, 2**20], Q0.20: 2**20 * exp(-a / 4096)
    S      = Σ_valid e[t]                                      [2**20, T * 2**20]
    R      = div_round(2**51, S)                               [2**20, 2**31]: 2**51 / S
    p[t]   = rshift_round(e[t] * R, 36)  (0 where masked)      [0, 2**15], Q1.15 (probability)
    c[d]   = sat(rshift_round(Σ_t p[t] h[t, d], 15), 8)        int8, Q0.7 (context)

``exp2_frac`` is a cubic in Horner form with integer coefficients :data:`EXP2_COEFFS` (Q.20), the
minimax fit of ``2**-x`` on ``x = f / 4096 in [0, 1)`` with ``P(0) = 2**20`` exactly. One exact
integer division per row (the reciprocal ``R``), one multiply per element, no float anywhere in the integer path.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .fixed import M_BITS, N_MAX, quantize_multiplier, requant, rshift_round, sat
from .rnn import div_round

__all__ = [
    "SCORE_FRAC",
    "EXP_FRAC",
    "PROB_FRAC",
    "LOG2E_Q15",
    "EXP2_COEFFS",
    "RECIP_SHIFT",
    "T_MAX",
    "D_MAX",
    "Attention",
    "score_multiplier",
    "attention_scores",
    "exp2_frac",
    "int_exp",
    "int_softmax",
    "attention_context",
    "attention",
    "attention_float",
]

#: Fraction bits of the requantized scores (int16 Q3.12, the gate pre-activation format).
SCORE_FRAC = 12
#: Fraction bits of the exponentials ``e`` (Q0.20; the largest is exactly ``2**20``).
EXP_FRAC = 20
#: Fraction bits of the probabilities (Q1.15, in ``[0, 2**15]``).
PROB_FRAC = 15
#: ``round(log2(e) * 2**15)``: 1.4426950409 * 32768 = 47274.08 (unsigned 16-bit).
LOG2E_Q15 = 47274
#: ``c0, c1, c2, c3`` (Q.20) of ``exp2_frac(f) = c0 + x (c1 + x (c2 + x c3))``, ``x = f / 2**12``.
#: Minimax (linear program, ``c0 = 1`` fixed) for ``2**-x`` on [0, 1), rounded to Q.20, then the best
#: of the 7**3 integer neighbours by the exhaustive error over the 4096 inputs, among those for which
#: ``exp2_frac`` is non-increasing with ``exp2_frac(4095) >= 2**19``. Max error 66.7 / 2**20 = 6.4e-5.
EXP2_COEFFS = (1 << 20, -725442, 243198, -42111)
#: ``R = div_round(2**RECIP_SHIFT, S)``, ``p = rshift_round(e * R, RECIP_SHIFT - PROB_FRAC)`` (a shift of 36).
RECIP_SHIFT = 51
#: Largest sequence length: keeps ``S <= 2**31`` and so ``R >= 2**20`` (reciprocal precision).
T_MAX = 2048
#: Largest state width: keeps ``|acc| <= D * 2**14 <= 2**30`` (int32).
D_MAX = 1 << 16

_FRAC_MASK = (1 << SCORE_FRAC) - 1
# e * R ~= e * 2**51 / S and p = (e / S) * 2**15, so p = e * R / 2**36 (e's own scale 2**20 cancels in e / S).
_P_SHIFT = RECIP_SHIFT - PROB_FRAC


class Attention(NamedTuple):
    """Result of :func:`attention`: every intermediate an implementer may want to compare."""

    #: int8 Q0.7 context vector, shape (..., D).
    context: np.ndarray
    #: Q1.15 probabilities in [0, 2**15], shape (..., T); 0 where masked.
    probs: np.ndarray
    #: int16 Q3.12 requantized scores, shape (..., T) (masked positions included, unused).
    scores: np.ndarray


def score_multiplier(scale: float) -> tuple[int, int]:
    """``(M, n)`` that maps the Q.14 dot product ``q · h`` to a Q3.12 score worth ``scale * q_real · h_real``.

    One unit of ``acc`` is ``2**-14`` real; one unit of ``s`` is ``2**-12``: the factor is
    ``scale * 2**-2``. The usual choice is ``scale = 1 / sqrt(D)``. Setup only (float in, integers out),
    like :func:`quant.fixed.quantize_multiplier`, which it calls.
    """
    return quantize_multiplier(float(scale) * 2.0 ** (SCORE_FRAC - 14))


def _int_array(x, name: str, lo: int, hi: int) -> np.ndarray:
    a = np.asarray(x)
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must be an integer array, got dtype {a.dtype}")
    a = a.astype(np.int64)
    if a.size and (a.min() < lo or a.max() > hi):
        raise ValueError(f"{name} out of range [{lo}, {hi}]: [{a.min()}, {a.max()}]")
    return a


def _check_states(h) -> np.ndarray:
    h = _int_array(h, "h", -128, 127)
    if h.ndim < 2:
        raise ValueError(f"h must have shape (..., T, D), got {h.shape}")
    T, D = h.shape[-2:]
    if not 1 <= T <= T_MAX:
        raise ValueError(f"sequence length T must be in [1, {T_MAX}], got {T}")
    if not 1 <= D <= D_MAX:
        raise ValueError(f"state width D must be in [1, {D_MAX}], got {D}")
    return h


def _check_mn(M: int, n: int) -> tuple[int, int]:
    M, n = int(M), int(n)
    if not 0 <= M < 1 << M_BITS:
        raise ValueError(f"score multiplier M must be unsigned {M_BITS}-bit, got {M}")
    if not 0 <= n <= N_MAX:
        raise ValueError(f"score shift n must be in [0, {N_MAX}], got {n}")
    return M, n


def attention_scores(h, q, M: int, n: int) -> np.ndarray:
    """Q3.12 scores ``s[t] = sat(rshift_round((Σ_d q[d] h[t, d]) * M, n), 16)``.

    ``h`` int8 (..., T, D), ``q`` int8 (..., D) (broadcast against ``h``'s leading axes). The dot
    product is at most ``D * 2**14 <= 2**30`` in magnitude (int32) and ``acc * M`` below ``2**46``.
    """
    h = _check_states(h)
    q = _int_array(q, "q", -128, 127)
    if q.ndim < 1 or q.shape[-1] != h.shape[-1]:
        raise ValueError(f"q must have shape (..., {h.shape[-1]}), got {q.shape}")
    M, n = _check_mn(M, n)
    acc = np.einsum("...td,...d->...t", h, q)  # int64, exact
    return requant(acc, 0, M, n, bits=16)  # SPEC §3's rescale, into int16


def exp2_frac(f) -> np.ndarray:
    """``≈ 2**20 * 2**(-f / 4096)`` for integer ``f`` in [0, 4095], as the cubic of :data:`EXP2_COEFFS`::

        t = c3;  t = c2 + rshift_round(t * f, 12);  t = c1 + rshift_round(t * f, 12)
        P = c0 + rshift_round(t * f, 12)

    Non-increasing, ``P(0) = 2**20``, ``P(4095) >= 2**19``; the largest intermediate product
    ``|t * f|`` is below ``2**32`` (checked exhaustively in the tests).
    """
    f = _int_array(f, "f", 0, _FRAC_MASK)
    c0, c1, c2, c3 = EXP2_COEFFS
    t = np.full_like(f, c3)
    t = c2 + rshift_round(t * f, SCORE_FRAC)
    t = c1 + rshift_round(t * f, SCORE_FRAC)
    return c0 + rshift_round(t * f, SCORE_FRAC)


def int_exp(a) -> np.ndarray:
    """``e ≈ 2**20 * exp(-a / 4096)`` for integer ``a`` in [0, 65535] (a Q.12 distance below the max).

    ``w = rshift_round(a * LOG2E_Q15, 15)`` is ``a * log2(e)`` in Q.12 (``<= 94548``); its integer part
    ``w >> 12`` (``<= 23``) is a right shift, its fraction ``w & 4095`` goes through :func:`exp2_frac`::

        e = rshift_round(exp2_frac(w & 4095), w >> 12)        in [0, 2**20]

    Non-increasing in ``a``; ``e(0) = 2**20``.
    """
    a = _int_array(a, "a", 0, (1 << 16) - 1)
    w = rshift_round(a * LOG2E_Q15, 15)
    return rshift_round(exp2_frac(w & _FRAC_MASK), w >> SCORE_FRAC)


def _mask(shape: tuple[int, ...], mask, lengths) -> np.ndarray:
    """Boolean (..., T) validity from ``mask`` or ``lengths`` (at most one); all valid if neither."""
    T = shape[-1]
    if mask is not None and lengths is not None:
        raise ValueError("give mask or lengths, not both")
    if lengths is not None:
        lengths = _int_array(lengths, "lengths", 1, T)
        valid = np.arange(T) < lengths[..., None]
    elif mask is not None:
        valid = np.asarray(mask)
        if valid.dtype != np.bool_:
            raise ValueError(f"mask must be a boolean array, got dtype {valid.dtype}")
    else:
        return np.ones(shape, dtype=bool)
    valid = np.broadcast_to(valid, shape)
    if not valid.any(axis=-1).all():
        raise ValueError("every sequence needs at least one valid position (mask row all False)")
    return valid


def int_softmax(s, mask=None, lengths=None) -> np.ndarray:
    """Integer softmax over the last axis of Q3.12 scores ``s`` (int16): probabilities in Q1.15.

    ::

        a = max_valid(s) - s          e = int_exp(a)  (0 where masked)        S = Σ e
        R = div_round(2**51, S)       p = rshift_round(e * R, 36)

    ``mask`` (bool, ..., T; True = attend) or ``lengths`` (valid prefix lengths, in [1, T]) exclude
    positions; masked positions get ``p = 0``. Each ``p`` is within ``1/2 + 2**-17`` LSB of
    ``e * 2**15 / S``, so ``|Σ p - 2**15| <= floor(T / 2)``. Adding a constant to every valid score
    (without saturating) does not change ``p``.
    """
    s = _int_array(s, "s", -(1 << 15), (1 << 15) - 1)
    if s.ndim < 1 or not 1 <= s.shape[-1] <= T_MAX:
        raise ValueError(f"scores must have shape (..., T) with T in [1, {T_MAX}], got {s.shape}")
    valid = _mask(s.shape, mask, lengths)
    m = np.where(valid, s, -(1 << 15)).max(axis=-1, keepdims=True)
    a = np.where(valid, m - s, 0)  # masked positions: any value in range, zeroed below
    e = np.where(valid, int_exp(a), 0)
    S = e.sum(axis=-1, keepdims=True)  # in [2**20, T * 2**20] <= 2**31
    R = div_round(np.full_like(S, 1 << RECIP_SHIFT), S)  # in [2**20, 2**31]
    return rshift_round(e * R, _P_SHIFT)  # e * R <= 2**51 + 2**19


def attention_context(h, p) -> np.ndarray:
    """``c[d] = sat(rshift_round(Σ_t p[t] h[t, d], 15), 8)``: Q1.15 x Q0.7 summed in Q.22, back to Q0.7.

    ``|Σ_t p[t] h[t, d]| <= 128 * (2**15 + T / 2) < 2**23``. The saturation matters only when rounding
    pushes ``Σ p`` above ``2**15`` with every ``h`` at 127 (128 would wrap).
    """
    h = _check_states(h)
    p = _int_array(p, "p", 0, 1 << PROB_FRAC)
    if p.shape[-1] != h.shape[-2]:
        raise ValueError(f"p has {p.shape[-1]} positions, h has {h.shape[-2]}")
    return sat(rshift_round(np.einsum("...t,...td->...d", p, h), PROB_FRAC), 8)


def attention(h, q=None, *, M: int, n: int, mask=None, lengths=None) -> Attention:
    """Integer dot-product attention pooling of hidden states ``h`` (int8 Q0.7, shape (..., T, D)).

    Parameters
    ----------
    h:
        int8 hidden states, (..., T, D), 1 <= T <= :data:`T_MAX`.
    q:
        int8 Q0.7 query (..., D) (a learned vector or another state). ``None``: each sequence's last
        valid state (self-attention of the final state over the sequence, "h_T · h_t").
    M, n:
        Score requantization (``M`` unsigned 16-bit, ``n`` in [0, 63]); see :func:`score_multiplier`.
    mask, lengths:
        Optional validity (see :func:`int_softmax`).

    Returns
    -------
    Attention
        ``context`` int8 (..., D), ``probs`` Q1.15 (..., T), ``scores`` Q3.12 (..., T).
    """
    h = _check_states(h)
    valid = _mask(h.shape[:-1], mask, lengths)
    if q is None:
        last = h.shape[-2] - 1 - np.argmax(valid[..., ::-1], axis=-1)  # last True position per row
        q = np.take_along_axis(h, last[..., None, None], axis=-2)[..., 0, :]
    s = attention_scores(h, q, M, n)
    p = int_softmax(s, mask=valid)
    return Attention(attention_context(h, p), p, s)


def attention_float(
    h, q=None, *, scale: float, mask=None, lengths=None, clip_scores: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Float64 reference of :func:`attention` on the real values (``h / 128``, ``q / 128``).

    Returns ``(context, probs)`` in real units (context in [-1, 1), probabilities summing to 1). The
    score is ``scale * q · h`` unquantized; with ``clip_scores`` it is clipped to the Q3.12 range
    ``[-8, 8 - 2**-12]`` as the integer path saturates it. Compare ``attention(...).context / 128``.
    """
    h = _check_states(h)
    valid = _mask(h.shape[:-1], mask, lengths)
    if q is None:
        last = h.shape[-2] - 1 - np.argmax(valid[..., ::-1], axis=-1)
        q = np.take_along_axis(h, last[..., None, None], axis=-2)[..., 0, :]
    hr, qr = h / 128.0, np.asarray(q, np.float64) / 128.0
    s = scale * np.einsum("...td,...d->...t", hr, qr)
    if clip_scores:
        s = np.clip(s, -8.0, 8.0 - 2.0**-SCORE_FRAC)
    s = np.where(valid, s, -np.inf)
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    p = e / e.sum(axis=-1, keepdims=True)
    return np.einsum("...t,...td->...d", p, hr), p
