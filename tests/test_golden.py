from pathlib import Path

import numpy as np
import pytest
from model_factory import random_cnn, random_mlp

from quant import golden
from quant.codes import decode
from quant.config import NPUConfig
from quant.fixed import requant
from quant.model import NPUModel

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def naive_gemm(A, codes, bits, bias, M, n, relu):
    W = decode(codes, bits)
    out = np.zeros((A.shape[0], W.shape[1]), np.int64)
    for i in range(A.shape[0]):
        for c in range(W.shape[1]):
            acc = sum(int(A[i, k]) * int(W[k, c]) for k in range(W.shape[0]))
            out[i, c] = requant(acc, int(bias[c]), int(M[c]), int(n[c]), relu=relu)
    return out


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("relu", [False, True])
def test_gemm_matches_loops(bits, relu):
    rng = np.random.default_rng(bits)
    A = rng.integers(-128, 128, (7, 13))
    A[0] = -128  # corners: the most negative activation, all-max rows
    A[1] = 127
    codes = rng.integers(0, 1 << bits, (13, 5))
    bias = rng.integers(-5000, 5000, 5)
    M = rng.integers(1, 1 << 16, 5)
    n = rng.integers(0, 24, 5)
    n[0] = 0
    got = golden.gemm(A, codes, bits, bias, M, n, relu)
    assert got.dtype == np.int8
    assert np.array_equal(got, naive_gemm(A, codes, bits, bias, M, n, relu))


def test_gemm_rejects_bad_inputs():
    with pytest.raises(ValueError, match="int8 values"):
        golden.gemm(np.full((1, 2), 128), np.zeros((2, 1), int), 3, [0], [1], [0], False)
    with pytest.raises(ValueError, match="do not chain"):
        golden.gemm(np.zeros((1, 3), int), np.zeros((2, 1), int), 3, [0], [1], [0], False)
    with pytest.raises(ValueError, match="bias must have shape"):
        golden.gemm(np.zeros((1, 2), int), np.zeros((2, 2), int), 3, [0], [1, 1], [0, 0], False)


@pytest.mark.parametrize("padding", [0, 1, 2])
def test_conv2d_by_im2col_matches_direct_convolution(padding):
    m = random_cnn(3)
    conv = m.layers[0]
    conv.padding = padding
    rng = np.random.default_rng(padding)
    x = rng.integers(-128, 128, (3, 8, 8, 1)).astype(np.int8)
    got = golden.conv2d(x, conv, 3)
    W = decode(conv.codes, 3)  # [kh, kw, cin, cout]
    xp = np.pad(x.astype(np.int64), ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    Ho = 8 + 2 * padding - 2
    assert got.shape == (3, Ho, Ho, conv.out_channels)
    for b in range(3):
        for i in range(Ho):
            for j in range(Ho):
                acc = np.einsum("hwc,hwco->o", xp[b, i : i + 3, j : j + 3, :], W)
                exp = requant(
                    acc, conv.bias.astype(np.int64), conv.M.astype(np.int64), conv.n.astype(np.int64), relu=True
                )
                assert np.array_equal(got[b, i, j], exp)


def test_maxpool_flatten_argmax():
    x = np.random.default_rng(0).integers(-128, 128, (2, 4, 6, 3)).astype(np.int8)
    p = golden.maxpool2d(x, 2)
    assert p.shape == (2, 2, 3, 3)
    assert p[1, 1, 2, 0] == x[1, 2:4, 4:6, 0].max()
    f = golden.flatten(p)
    assert f.shape == (2, 18) and f[0, 1] == p[0, 0, 0, 1]  # NHWC: channel fastest
    assert golden.argmax(np.array([[3, 7, 7, 1], [-5, -5, -6, -9]])).tolist() == [1, 0]  # first on ties
    assert golden.relu(np.array([-3, 0, 5], np.int8)).tolist() == [0, 0, 5]


def test_forward_intermediates_chain():
    m = random_cnn(5)
    x = m.input.quantize(np.random.default_rng(2).integers(0, 17, (6, 64)))
    trace = golden.forward(m, x, intermediates=True)
    assert [name for name, _ in trace] == ["conv1", "pool", "flatten", "fc", "argmax"]
    assert [t.shape[1:] for _, t in trace] == m.shapes()
    assert all(t.dtype == np.int8 for _, t in trace[:-1])
    assert np.array_equal(trace[-1][1], golden.forward(m, x))
    assert np.array_equal(trace[-1][1], np.argmax(trace[-2][1], axis=1))


def test_forward_checks_input_shape():
    with pytest.raises(ValueError, match="does not match the model"):
        golden.forward(random_mlp(), np.zeros((2, 63), np.int8))


def test_int8_baseline_decodes_twos_complement():
    cfg = NPUConfig(weight_bits=8)
    m = random_mlp(1, cfg, sizes=(64, 10))
    x = m.input.quantize(np.random.default_rng(3).integers(0, 17, (4, 64)))
    la = m.layers[0]
    W = la.codes.astype(np.int64)
    W = np.where(W >= 128, W - 256, W)
    acc = x.astype(np.int64) @ W
    exp = requant(acc, la.bias.astype(np.int64), la.M.astype(np.int64), la.n.astype(np.int64))
    assert np.array_equal(golden.forward(m, x, intermediates=True)[0][1], exp)


@pytest.mark.parametrize("name", ["digits_mlp_3bit.npu", "digits_cnn_3bit.npu"])
def test_shipped_examples_reproduce_their_training_accuracy(name):
    from quant.digits import load_split

    path = EXAMPLES / name
    assert path.stat().st_size < 100_000
    m = NPUModel.load(path)
    d = load_split()
    assert golden.accuracy(m, d.x_test, d.y_test) == m.metadata["test_accuracy"]
    assert m.metadata["test_accuracy"] > 0.95
