"""The integer LSTM/GRU golden model (quant.rnn) against a scalar, SPEC-literal reference, plus layer norm."""

import math

import numpy as np
import pytest

from quant import codes
from quant.config import NPUConfig
from quant.fixed import rshift_round, sat
from quant.rnn import (
    LN_EPS,
    RNNParams,
    div_round,
    isqrt,
    layer_norm,
    lstm_shifts,
    random_params,
    rnn_layer,
)

CFG = NPUConfig()


def ref_step(p: RNNParams, x, h, c, F):
    """One step for one sequence, with Python ints and loops, written from SPEC §4 and docs."""
    W, U = codes.decode(p.W, p.weight_bits), codes.decode(p.U, p.weight_bits)
    H = p.hidden
    sig, th = p.tables["sigmoid"], p.tables["tanh"]

    def dot(row, M, v):
        return sum(int(M[row, k]) * int(v[k]) for k in range(len(v)))

    def rq(acc, g, j):
        return sat(rshift_round(acc * int(p.M[g, j]), int(p.n[g, j])), 16)

    h2, c2 = [], []
    for j in range(H):
        if p.kind == "lstm":
            z = [rq(dot(g * H + j, W, x) + dot(g * H + j, U, h) + int(p.b[g, j]), g, j) for g in range(4)]
            i, f, gg, o = sig(z[0]), sig(z[1]), th(z[2]), sig(z[3])
            fc = sat(rshift_round(f * int(c[j]), 15), 16)
            ig = sat(rshift_round(i * gg, 30 - F), 16)
            cn = sat(fc + ig, 16)
            c2.append(cn)
            h2.append(sat(rshift_round(o * p.tables["tanh_cell"](cn), 23), 8))
        else:
            az = dot(j, W, x) + dot(j, U, h) + int(p.b[0, j])
            ar = dot(H + j, W, x) + dot(H + j, U, h) + int(p.b[1, j])
            anx = dot(2 * H + j, W, x) + int(p.b[2, j])
            anh = dot(2 * H + j, U, h) + int(p.b[3, j])
            zg, r = sig(rq(az, 0, j)), sig(rq(ar, 1, j))
            n = th(sat(rq(anx, 2, j) + rshift_round(r * rq(anh, 3, j), 15), 16))
            h2.append(sat(rshift_round(n * 2**15 + zg * (int(h[j]) * 256 - n), 23), 8))
    return h2, c2


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("bits,F", [(3, 11), (2, 12), (4, 10), (8, 11)])
def test_layer_matches_scalar_reference(kind, bits, F):
    cfg = NPUConfig(weight_bits=bits, cell_frac_bits=F)
    rng = np.random.default_rng(bits * 31 + F)
    p = random_params(kind, 5, 6, cfg, rng, gain=3.0)
    T = 8
    xs = rng.integers(-128, 128, size=(T, 2, 5))
    h0 = rng.integers(-128, 128, size=(2, 6))
    c0 = rng.integers(-32768, 32768, size=(2, 6))
    hs, cs, hT, cT = rnn_layer(p, xs, cfg, h0=h0, c0=c0)
    for b in range(2):
        h, c = list(h0[b]), list(c0[b])
        for t in range(T):
            h, c2 = ref_step(p, xs[t, b], h, c, F)
            assert list(hs[t, b]) == h
            if kind == "lstm":
                c = c2
                assert list(cs[t, b]) == c
    assert np.array_equal(hT, hs[-1])
    # a batch is just independent sequences; a 2-D input is one sequence
    hs1, _, _, _ = rnn_layer(p, xs[:, 1], cfg, h0=h0[1], c0=c0[1])
    assert np.array_equal(hs1, hs[:, 1])


def test_lstm_shifts_reduce_to_spec():
    assert lstm_shifts(11) == (15, 19, 23)
    assert lstm_shifts(12) == (15, 18, 23)


def test_lstm_tracks_float_lstm():
    """With 32-piece tables the integer LSTM stays close to a float LSTM on the same integer weights."""
    cfg = NPUConfig(pwl_pieces=32)
    rng = np.random.default_rng(7)
    p = random_params("lstm", 8, 16, cfg, rng)
    xs = rng.integers(-128, 128, size=(20, 8))
    hs, cs, _, _ = rnn_layer(p, xs, cfg)
    W, U = codes.decode(p.W, 3).astype(float), codes.decode(p.U, 3).astype(float)
    sc = p.M / 2.0**p.n / 4096.0  # acc -> real pre-activation
    h = np.zeros(16)
    c = np.zeros(16)
    errs = []
    for t in range(20):
        acc = (W @ xs[t] + U @ (h * 128)).reshape(4, 16) + p.b
        z = acc * sc
        i, f, g, o = 1 / (1 + np.exp(-z[0])), 1 / (1 + np.exp(-z[1])), np.tanh(z[2]), 1 / (1 + np.exp(-z[3]))
        c = f * c + i * g
        c = np.clip(c, -16, 16 - 2**-11)
        h = np.clip(o * np.tanh(c), -1, 127 / 128)
        errs.append(np.abs(h - hs[t] / 128).max())
        h = hs[t] / 128  # compare one step at a time (no drift from earlier rounding)
        c = cs[t] / 2048
    assert max(errs) < 4 / 128


def test_isqrt_and_div_round():
    for v in [0, 1, 2, 3, 4, 8, 9, 15, 16, 17, 2**31 - 1, 2**40 + 12345, 10**15]:
        assert isqrt(v) == math.isqrt(v)
    rng = np.random.default_rng(0)
    vs = rng.integers(0, 2**45, 200)
    assert np.array_equal(isqrt(vs), [math.isqrt(int(v)) for v in vs])
    assert div_round(7, 2) == 4 and div_round(-7, 2) == -3 and div_round(5, 3) == 2
    with pytest.raises(ValueError):
        isqrt(-1)
    with pytest.raises(ValueError):
        div_round(1, 0)


def test_layer_norm_normalizes():
    rng = np.random.default_rng(1)
    z = rng.normal(3000, 2500, size=(5, 64)).round().astype(np.int64)
    y = layer_norm(z, 4096, 0)  # gamma 1.0, beta 0
    yf = y / 4096
    assert np.all(np.abs(yf.mean(axis=-1)) < 0.01)
    assert np.all(np.abs(yf.std(axis=-1) - 1) < 0.01)
    # against float layer norm
    ref = (z - z.mean(-1, keepdims=True)) / np.sqrt(z.var(-1, keepdims=True) + LN_EPS)
    assert np.abs(yf - ref).max() < 4e-3
    # constant vector: no division by zero, output = beta
    assert np.array_equal(layer_norm(np.full((1, 8), 1234), 4096, 77), np.full((1, 8), 77))
    # gamma/beta and saturation
    big = layer_norm(z, 32767, 30000)
    assert big.max() == 32767


def test_params_validation():
    cfg = NPUConfig()
    rng = np.random.default_rng(0)
    p = random_params("lstm", 3, 4, cfg, rng)
    with pytest.raises(ValueError, match="rows"):
        RNNParams("lstm", p.W[:-1], p.U, p.b, p.M, p.n, 3, p.tables)
    with pytest.raises(ValueError, match="tanh_cell"):
        RNNParams("lstm", p.W, p.U, p.b, p.M, p.n, 3, {"sigmoid": p.tables["sigmoid"], "tanh": p.tables["tanh"]})
    with pytest.raises(ValueError, match="kind"):
        RNNParams("rnn", p.W, p.U, p.b, p.M, p.n, 3, p.tables)
    with pytest.raises(ValueError, match="int8"):
        rnn_layer(p, np.full((2, 3), 200), cfg)
