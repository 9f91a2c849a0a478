"""Memory layouts of the GEMM engine (see hw/gemm.py) and the integer GEMM they compute.

Pure numpy: the host driver and the compiler use these to turn matrices into memory words and
back, and the regressions use :func:`gemm_reference` as the golden result.
"""

from __future__ import annotations

import numpy as np

from . import codes as wcodes
from .config import NPUConfig
from .fixed import M_BITS, N_MAX, requant

__all__ = [
    "tiles",
    "feature_words",
    "unpack_features",
    "weight_words",
    "channel_words",
    "gemm_reference",
    "CHANNEL_WORD_BITS",
]

#: A channel-memory word: bias (32 bits, two's complement) | M << 32 | n << 48.
CHANNEL_WORD_BITS = 54


def tiles(extent: int, size: int) -> int:
    """Number of ``size``-wide tiles that cover ``extent``."""
    if extent < 1:
        raise ValueError(f"a GEMM dimension must be >= 1, got {extent}")
    return -(-extent // size)


def feature_words(A: np.ndarray, lanes: int) -> list[int]:
    """``A`` (M x K int8) as feature-memory words: ``A[m, kt*lanes + r]`` in word ``kt*M + m``, lane ``r``.

    Lanes past K are 0, so padded reduction rows contribute nothing whatever their weights.
    """
    A = np.asarray(A)
    if A.ndim != 2:
        raise ValueError(f"A must be a 2-D matrix, got shape {A.shape}")
    if A.size and (A.min() < -128 or A.max() > 127):
        raise ValueError("A must hold int8 values")
    M, K = A.shape
    KT = tiles(K, lanes)
    padded = np.zeros((M, KT * lanes), dtype=np.int64)
    padded[:, :K] = A
    words = []
    for kt in range(KT):
        for m in range(M):
            w = 0
            for r, v in enumerate(padded[m, kt * lanes : (kt + 1) * lanes]):
                w |= (int(v) & 0xFF) << (8 * r)
            words.append(w)
    return words


def unpack_features(words, M: int, N: int, lanes: int) -> np.ndarray:
    """Inverse of :func:`feature_words` for an M x N result (its N-tiles play the K-tiles' part)."""
    NT = tiles(N, lanes)
    words = list(words)
    if len(words) < NT * M:
        raise ValueError(f"need {NT * M} words for a {M}x{N} result, got {len(words)}")
    out = np.zeros((M, NT * lanes), dtype=np.int64)
    for nt in range(NT):
        for m in range(M):
            w = int(words[nt * M + m])
            for c in range(lanes):
                b = (w >> (8 * c)) & 0xFF
                out[m, nt * lanes + c] = b - 256 if b >= 128 else b
    return out[:, :N]


def weight_words(W_codes: np.ndarray, config: NPUConfig) -> list[int]:
    """Weight codes (K x N) as weight-memory words, one array row of ``cols`` codes per word.

    Tile ``(kt, nt)`` row ``r`` is word ``(nt*KT + kt) * rows + r``. Padding codes (past K or N)
    are 0 (+1): they meet zero activations or masked outputs, so they never show.
    """
    W = np.asarray(W_codes, dtype=np.int64)
    if W.ndim != 2:
        raise ValueError(f"W must be a 2-D matrix of codes, got shape {W.shape}")
    R, C, b = config.rows, config.cols, config.weight_bits
    if W.size and (W.min() < 0 or W.max() >= 1 << b):
        raise ValueError(f"weight codes must be in [0, {(1 << b) - 1}] for {b}-bit weights")
    K, N = W.shape
    KT, NT = tiles(K, R), tiles(N, C)
    padded = np.zeros((KT * R, NT * C), dtype=np.int64)
    padded[:K, :N] = W
    words = []
    for nt in range(NT):
        for kt in range(KT):
            for r in range(R):
                row = padded[kt * R + r, nt * C : (nt + 1) * C]
                words.append(int(wcodes.pack(row, b, C * b)[0]))
    return words


def channel_words(bias, mult, shift) -> list[int]:
    """Per-channel (bias int32, M uint16, n in [0, 63]) as channel-memory words."""
    bias, mult, shift = (np.asarray(x, dtype=np.int64).ravel() for x in (bias, mult, shift))
    if not (len(bias) == len(mult) == len(shift)):
        raise ValueError("bias, M and n must have one entry per output channel")
    if np.any(bias < -(2**31)) or np.any(bias >= 2**31):
        raise ValueError("bias must be int32")
    if np.any(mult < 0) or np.any(mult >= 1 << M_BITS) or np.any(shift < 0) or np.any(shift > N_MAX):
        raise ValueError(f"M must be unsigned {M_BITS}-bit and n in [0, {N_MAX}]")
    return [(int(b) & 0xFFFFFFFF) | (int(m) << 32) | (int(s) << 48) for b, m, s in zip(bias, mult, shift, strict=True)]


def gemm_reference(A, W_codes, bits: int, bias, mult, shift, *, relu: bool = False) -> np.ndarray:
    """The golden integer GEMM: ``requant(A @ decode(W) + bias)`` per output channel (SPEC §3)."""
    acc = np.asarray(A, dtype=np.int64) @ wcodes.decode(W_codes, bits)
    return requant(acc, np.asarray(bias), np.asarray(mult), np.asarray(shift), relu=relu)
