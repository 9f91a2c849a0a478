"""The torch twin of the integer attention (quant/train/attention.py) against the golden model, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from quant.attention import attention, int_exp, int_softmax, score_multiplier
from quant.train.attention import attention_t, int_exp_t, int_softmax_t


def test_int_exp_t_exhaustive():
    a = np.arange(1 << 16)
    assert np.array_equal(int_exp_t(torch.from_numpy(a)).numpy(), int_exp(a))


def test_int_softmax_t_matches_golden():
    rng = np.random.default_rng(0)
    for T in (1, 2, 9, 300, 2048):
        s = rng.integers(-(1 << 15), 1 << 15, (8, T))
        mask = rng.random((8, T)) < 0.6
        mask[:, 0] = True
        assert np.array_equal(int_softmax_t(torch.from_numpy(s)).numpy(), int_softmax(s))
        got = int_softmax_t(torch.from_numpy(s), torch.from_numpy(mask)).numpy()
        assert np.array_equal(got, int_softmax(s, mask=mask))


@pytest.mark.parametrize("scale", [0.05, 1 / np.sqrt(16), 1.0, 30.0])
@pytest.mark.parametrize("with_query", [False, True])
def test_attention_t_bit_exact(scale, with_query):
    rng = np.random.default_rng(int(scale * 100) + with_query)
    B, T, D = 6, 25, 16
    h = rng.integers(-128, 128, (B, T, D))
    lengths = rng.integers(1, T + 1, B)
    mask = np.arange(T) < lengths[:, None]
    q = rng.integers(-128, 128, D) if with_query else None
    M, n = score_multiplier(scale)
    gold = attention(h, q, M=M, n=n, lengths=lengths)
    h_i = torch.from_numpy(h)
    h_r = (h_i.double() / 128).requires_grad_(True)
    kw = {}
    if with_query:
        q_i = torch.from_numpy(q)
        kw = {"q_i": q_i, "q_r": (q_i.double() / 128).requires_grad_(True)}
    c_r, c_i, p_r, p_i = attention_t(h_r, h_i, scale=scale, mask=torch.from_numpy(mask), **kw)
    assert np.array_equal(c_i.numpy(), gold.context)
    assert np.array_equal(p_i.numpy(), gold.probs)
    # The real outputs carry exactly the integer values ...
    assert torch.equal(c_r.detach(), c_i.double() / 128)
    assert torch.equal(p_r.detach(), p_i.double() / (1 << 15))
    # ... and the gradients of float attention (finite, non-zero, none into masked positions).
    (c_r.sum() + (p_r * torch.arange(T)).sum()).backward()
    g = h_r.grad
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    assert torch.all(g[torch.from_numpy(~mask)] == 0)
    if with_query:
        assert torch.isfinite(kw["q_r"].grad).all() and kw["q_r"].grad.abs().sum() > 0


def test_attention_t_bad_inputs():
    h_i = torch.zeros(2, 3, 4, dtype=torch.int64)
    with pytest.raises(ValueError, match="int64"):
        attention_t(h_i.double(), h_i.double(), scale=1.0)
    with pytest.raises(ValueError, match="both q_r and q_i"):
        attention_t(h_i.double(), h_i, scale=1.0, q_i=h_i[0, 0])
    with pytest.raises(ValueError, match="at least one valid"):
        attention_t(h_i.double(), h_i, scale=1.0, mask=torch.tensor([[True] * 3, [False] * 3]))
