"""Integer-exact attention for quantization-aware training: the torch twin of :mod:`quant.attention`.

:func:`attention_t` takes the hidden states the way :class:`quant.train.rnn.QuantRNN` returns them in
its exact phase (real ``h_r = h_i / 128`` carrying the gradient, and the int64 ``h_i``) and computes
the integer attention of :func:`quant.attention.attention` bit for bit on int64 tensors: scores
requantized to Q3.12 with ``(M, n) = score_multiplier(scale)``, the integer softmax (exp by a shift
and the cubic :data:`quant.attention.EXP2_COEFFS`, one exact reciprocal per sequence), probabilities
in Q1.15 and the int8 Q0.7 context.

Gradients are straight-through (:func:`quant.train.rnn.splice`): the probabilities and the context
have the exact integer values and the gradients of float attention on the real values
(``softmax(scale * q_r · h_r)``, ``Σ p h_r``). ``scale`` is a Python float (a hyper-parameter; it
fixes ``M, n``).
"""

from __future__ import annotations

import torch

from ..attention import EXP2_COEFFS, LOG2E_Q15, PROB_FRAC, RECIP_SHIFT, SCORE_FRAC, T_MAX, score_multiplier
from .fixed_t import rshift_round_t, sat_t
from .rnn import X_SCALE, div_round_t, splice

__all__ = ["int_exp_t", "int_softmax_t", "attention_t"]

_FRAC_MASK = (1 << SCORE_FRAC) - 1


def int_exp_t(a: torch.Tensor) -> torch.Tensor:
    """:func:`quant.attention.int_exp` on an int64 tensor ``a`` in [0, 65535]."""
    w = rshift_round_t(a * LOG2E_Q15, 15)
    f = torch.bitwise_and(w, _FRAC_MASK)
    c0, c1, c2, c3 = EXP2_COEFFS
    t = c2 + rshift_round_t(c3 * f, SCORE_FRAC)
    t = c1 + rshift_round_t(t * f, SCORE_FRAC)
    P = c0 + rshift_round_t(t * f, SCORE_FRAC)
    return rshift_round_t(P, torch.bitwise_right_shift(w, SCORE_FRAC))


def int_softmax_t(s: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`quant.attention.int_softmax` on int64 Q3.12 scores (..., T); ``valid`` bool (..., T) or None."""
    if valid is None:
        valid = torch.ones_like(s, dtype=torch.bool)
    if not bool(valid.any(-1).all()):
        raise ValueError("every sequence needs at least one valid position (mask row all False)")
    m = torch.where(valid, s, -(1 << 15)).amax(-1, keepdim=True)
    e = torch.where(valid, int_exp_t(torch.where(valid, m - s, 0)), 0)
    S = e.sum(-1, keepdim=True)
    R = div_round_t(torch.full_like(S, 1 << RECIP_SHIFT), S)
    return rshift_round_t(e * R, RECIP_SHIFT - PROB_FRAC)


def attention_t(
    h_r: torch.Tensor,
    h_i: torch.Tensor,
    *,
    scale: float,
    q_r: torch.Tensor | None = None,
    q_i: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Integer attention of int8 states ``h_i`` (B, T, D) with straight-through gradients into ``h_r``.

    Parameters
    ----------
    h_r, h_i:
        Real states (``h_i / 128`` in value, carrying the gradient) and their int64 Q0.7 values.
    scale:
        Real score scale (``1 / sqrt(D)`` usually); the integer path uses ``score_multiplier(scale)``.
    q_r, q_i:
        Query (B, D) or (D,), real and int64 Q0.7 (e.g. a learned vector quantized to Q0.7). Both or
        neither; neither: each sequence's last valid state.
    mask:
        Optional bool (B, T), True = attend; every row needs a True.

    Returns
    -------
    (context_r, context_i, probs_r, probs_i)
        Context (B, D) real and int64 Q0.7, probabilities (B, T) real and int64 Q1.15; the real ones
        equal ``context_i / 128`` and ``probs_i / 2**15`` exactly.
    """
    if h_i.dtype != torch.int64 or h_i.dim() != 3:
        raise ValueError(f"h_i must be an int64 tensor (B, T, D), got {h_i.dtype} {tuple(h_i.shape)}")
    B, T, D = h_i.shape
    if not 1 <= T <= T_MAX:
        raise ValueError(f"sequence length T must be in [1, {T_MAX}], got {T}")
    if (q_r is None) != (q_i is None):
        raise ValueError("give both q_r and q_i, or neither")
    valid = torch.ones(B, T, dtype=torch.bool) if mask is None else mask.to(torch.bool).expand(B, T)
    if q_i is None:
        last = T - 1 - torch.flip(valid, (-1,)).to(torch.int64).argmax(-1)
        idx = last.view(B, 1, 1).expand(B, 1, D)
        q_i = torch.gather(h_i, 1, idx)[:, 0]
        q_r = torch.gather(h_r, 1, idx)[:, 0]
    q_i = q_i.expand(B, D)
    q_r = q_r.expand(B, D)
    M, n = score_multiplier(scale)
    acc = (h_i * q_i[:, None, :]).sum(-1)
    s_i = sat_t(rshift_round_t(acc * M, n), 16)
    p_i = int_softmax_t(s_i, valid)
    c_i = sat_t(rshift_round_t((p_i[:, :, None] * h_i).sum(1), PROB_FRAC), 8)
    # Float surrogate for the gradients: float attention on the real values.
    s_f = torch.where(valid, scale * (h_r * q_r[:, None, :]).sum(-1), float("-inf"))
    p_f = torch.softmax(s_f, -1)
    c_f = (p_f[:, :, None] * h_r).sum(1)
    p_r = splice(p_i.to(h_r.dtype) / (1 << PROB_FRAC), p_f)
    c_r = splice(c_i.to(h_r.dtype) * X_SCALE, c_f)
    return c_r, c_i, p_r, p_i
