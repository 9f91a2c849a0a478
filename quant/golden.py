"""Integer-only forward pass of a shiftnpu model file: the reference every other part must match.

Dense and conv2d layers both go through one integer GEMM, :func:`gemm`, with the SPEC §3 output
requantizer; conv2d is lowered onto it by :func:`im2col` (NHWC, patch order ``(kh, kw, C_in)``,
the same order as the model file's HWIO codes). The array engine of the hardware computes exactly
:func:`gemm_acc`; its requantizer computes :func:`quant.fixed.requant`.

numpy only: the host driver uses this module without torch.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .codes import decode
from .fixed import requant
from .model import (
    ArgmaxLayer,
    Conv2dLayer,
    DenseLayer,
    FlattenLayer,
    GRULayer,
    LSTMLayer,
    MaxPool2dLayer,
    NPUModel,
    ReluLayer,
)
from .rnn import rnn_layer

__all__ = [
    "gemm_acc",
    "gemm",
    "im2col",
    "dense",
    "conv2d",
    "relu",
    "maxpool2d",
    "flatten",
    "argmax",
    "lstm",
    "LAYER_FORWARD",
    "forward",
    "predict",
    "accuracy",
]


def _check_int8(name: str, a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must be an integer array, got dtype {a.dtype}")
    if a.size and (a.min() < -128 or a.max() > 127):
        raise ValueError(f"{name} must hold int8 values, got range [{a.min()}, {a.max()}]")
    return a.astype(np.int64)


def gemm_acc(A, W_codes, bits: int) -> np.ndarray:
    """Raw accumulators ``A @ decode(W_codes)`` (int64 ``[M, N]``) for int8 ``A[M, K]`` and codes ``W[K, N]``."""
    A = _check_int8("gemm: A", A)
    W = decode(W_codes, bits)
    if A.ndim != 2 or W.ndim != 2 or A.shape[1] != W.shape[0]:
        raise ValueError(f"gemm: shapes A{A.shape} and W{W.shape} do not chain as [M, K] x [K, N]")
    return A @ W


def gemm(A, W_codes, bits: int, bias, M, n, relu: bool) -> np.ndarray:
    """Integer GEMM with per-output-channel requantization (SPEC §3), int8 ``[M, N]``.

    ``y[m, c] = sat(rshift_round((sum_k A[m, k] * w[k, c] + bias[c]) * M[c], n[c]), 8)``, then
    ``max(y, 0)`` when ``relu``; ``w = decode(W_codes, bits)`` (DenseShift codes or int8 bytes).
    """
    acc = gemm_acc(A, W_codes, bits)
    N = acc.shape[1]
    for name, v in (("bias", bias), ("M", M), ("n", n)):
        if np.shape(v) != (N,):
            raise ValueError(f"gemm: {name} must have shape ({N},), got {np.shape(v)}")
    y = requant(acc, np.asarray(bias, np.int64), np.asarray(M, np.int64), np.asarray(n, np.int64), relu=relu)
    return y.astype(np.int8)


def im2col(x, kh: int, kw: int, padding: int) -> np.ndarray:
    """Patches of an NHWC int tensor for a stride-1 convolution: ``[B * Ho * Wo, kh * kw * C]``.

    Zero padding (activations are symmetric, so 0 is the real zero). Row ``(b, i, j)`` holds the
    window at output pixel ``(i, j)`` in ``(kh, kw, C)`` order, matching HWIO codes reshaped to ``[K, N]``.
    """
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"im2col: expected an NHWC tensor, got shape {x.shape}")
    B, H, W, C = x.shape
    xp = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    Ho, Wo = H + 2 * padding - kh + 1, W + 2 * padding - kw + 1
    if Ho < 1 or Wo < 1:
        raise ValueError(f"im2col: a {kh}x{kw} kernel does not fit a {H}x{W} input with padding {padding}")
    cols = np.empty((B, Ho, Wo, kh, kw, C), dtype=x.dtype)
    for di in range(kh):
        for dj in range(kw):
            cols[:, :, :, di, dj, :] = xp[:, di : di + Ho, dj : dj + Wo, :]
    return cols.reshape(B * Ho * Wo, kh * kw * C)


def dense(x, layer: DenseLayer, bits: int) -> np.ndarray:
    """A dense layer on ``[B, K]`` int8."""
    return gemm(x, layer.codes, bits, layer.bias, layer.M, layer.n, layer.relu)


def conv2d(x, layer: Conv2dLayer, bits: int) -> np.ndarray:
    """A stride-1 convolution on NHWC int8, lowered to :func:`gemm` by :func:`im2col`."""
    kh, kw, _, cout = layer.codes.shape
    B, H, W, _ = np.shape(x)
    cols = im2col(x, kh, kw, layer.padding)
    y = gemm(cols, layer.gemm_codes(), bits, layer.bias, layer.M, layer.n, layer.relu)
    return y.reshape(B, H + 2 * layer.padding - kh + 1, W + 2 * layer.padding - kw + 1, cout)


def relu(x) -> np.ndarray:
    return np.maximum(np.asarray(x), 0).astype(np.int8)


def maxpool2d(x, size: int) -> np.ndarray:
    """Max over non-overlapping ``size x size`` windows of an NHWC tensor."""
    x = np.asarray(x)
    B, H, W, C = x.shape
    if H % size or W % size:
        raise ValueError(f"maxpool2d: {H}x{W} is not divisible by {size}")
    return x.reshape(B, H // size, size, W // size, size, C).max(axis=(2, 4))


def flatten(x) -> np.ndarray:
    """``[B, ...] -> [B, prod(...)]`` in memory (NHWC) order."""
    x = np.asarray(x)
    return x.reshape(x.shape[0], -1)


def argmax(x) -> np.ndarray:
    """Index of the largest value of each row; the first one on ties."""
    return np.argmax(np.asarray(x), axis=1)


def lstm(x, layer: LSTMLayer, config) -> np.ndarray:
    """An LSTM layer on int8 sequences ``[B, T, I]``: the last hidden state ``[B, H]`` (int8 Q0.7), by :func:`quant.rnn.rnn_layer`."""
    x = _check_int8("lstm: x", x)
    if x.ndim != 3:
        raise ValueError(f"lstm: expected [B, T, I] sequences, got shape {x.shape}")
    _, _, h_T, _ = rnn_layer(layer.params(config), x.transpose(1, 0, 2), config)
    return h_T.astype(np.int8)


#: kind -> f(x, layer, model) -> next tensor. Other layer kinds (``lstm``, ``gru``) register here.
LAYER_FORWARD: dict[str, Callable] = {
    DenseLayer.kind: lambda x, la, m: dense(x, la, m.config.weight_bits),
    Conv2dLayer.kind: lambda x, la, m: conv2d(x, la, m.config.weight_bits),
    ReluLayer.kind: lambda x, la, m: relu(x),
    MaxPool2dLayer.kind: lambda x, la, m: maxpool2d(x, la.size),
    FlattenLayer.kind: lambda x, la, m: flatten(x),
    ArgmaxLayer.kind: lambda x, la, m: argmax(x),
    LSTMLayer.kind: lambda x, la, m: lstm(x, la, m.config),
    GRULayer.kind: lambda x, la, m: lstm(x, la, m.config),  # the same call: la.params() carries the cell kind
}


def forward(model: NPUModel, x, *, intermediates: bool = False):
    """Run ``model`` on int8 input ``x`` (``[B, *model.input.shape]``).

    Returns the last layer's output (class indices after an argmax layer), or with
    ``intermediates=True`` the list ``[(layer name, output), ...]`` of every layer.
    """
    x = _check_int8("input", x)
    if tuple(x.shape[1:]) != tuple(model.input.shape):
        raise ValueError(f"input shape {x.shape[1:]} does not match the model's {tuple(model.input.shape)}")
    x = x.astype(np.int8)
    trace = []
    for layer in model.layers:
        try:
            fn = LAYER_FORWARD[layer.kind]
        except KeyError:
            raise ValueError(f"golden: no forward for layer kind {layer.kind!r}") from None
        x = fn(x, layer, model)
        trace.append((layer.name, x))
    return trace if intermediates else x


def predict(model: NPUModel, raw) -> np.ndarray:
    """Class predictions for raw inputs (digits pixels 0..16), via the model's input map."""
    out = forward(model, model.input.quantize(raw))
    if out.ndim != 1:
        raise ValueError("predict: the model does not end in an argmax layer")
    return out


def accuracy(model: NPUModel, raw, labels) -> float:
    """Fraction of ``raw`` inputs the integer model classifies as ``labels``."""
    labels = np.asarray(labels)
    return float(np.mean(predict(model, raw) == labels))
