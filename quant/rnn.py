"""Integer-only LSTM and GRU (SPEC §4): the golden model of the RNN datapath, numpy only.

Both cells are written as two steps, the same split the hardware has:

1. The **gate accumulators** (done by the array): four per hidden unit ``j``,
   ``acc[g, j] = Σ_k W[row, k] x[k] + Σ_k U[row, k] h[k] + b[g, j]`` with ``W``, ``U`` decoded
   DenseShift codes (or int8) -- :func:`lstm_accumulators`, :func:`gru_accumulators`.
2. The **gate unit** (pointwise, per hidden unit): requantization of each accumulator to Q3.12,
   the PWL activations and the state update -- :func:`lstm_pointwise`, :func:`gru_pointwise`.

Formats (``F = config.cell_frac_bits``, 11 by default):

* x, h: int8 Q0.7; gate pre-activations: int16 Q3.12; σ, tanh outputs: int16 Q0.15; cell c: int16 Q(15-F).F.
* requant of row ``r``: ``z = sat(rshift_round(acc * M[r], n[r]), 16)`` (the bias is inside ``acc``).

LSTM (gate order i, f, g, o; accumulator ``g`` of unit ``j`` uses weight row ``g*H + j``)::

    i = σ(z_i)   f = σ(z_f)   g = tanh(z_g)   o = σ(z_o)              (Q0.15)
    fc = sat(rshift_round(f * c, 15), 16)                          Q0.15 * QF   -> QF
    ig = sat(rshift_round(i * g, 30 - F), 16)                      Q0.30        -> QF
    c' = sat(fc + ig, 16)
    h' = sat(rshift_round(o * tanh_c(c'), 23), 8)                  Q0.30        -> Q0.7

``tanh_c`` is a separate table whose input is the cell format. With F = 11 the shifts are 15, 19, 23
as in SPEC §4.

GRU (accumulators z, r, nx, nh; weight rows z = j, r = H + j, n = 2H + j of ``W`` (3H x I) and ``U``
(3H x H))::

    acc_z  = W_z x + U_z h + b_z         acc_r  = W_r x + U_r h + b_r
    acc_nx = W_n x + b_nx                acc_nh = U_n h + b_nh
    z = σ(requant(acc_z))   r = σ(requant(acc_r))                  (Q0.15)
    a  = requant(acc_nx)    b = requant(acc_nh)                    (Q3.12)
    n  = tanh(sat(a + rshift_round(r * b, 15), 16))                Q0.15 * Q3.12 -> Q3.12
    h' = sat(rshift_round((n << 15) + z * ((h << 8) - n), 23), 8)  Q0.30 -> Q0.7

so ``h' = n + z (h - n)`` is formed exactly in Q0.30 and rounded once.

Optional integer **layer normalization** (:func:`layer_norm`) acts on each gate's pre-activation
vector (Q3.12, across the H units) between requant and activation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import codes
from .config import NPUConfig
from .fixed import quantize_multiplier, rshift_round, sat
from .pwl import PWLTable, fit_sigmoid, fit_tanh

__all__ = [
    "CELL_KINDS",
    "GATES",
    "RNNParams",
    "isqrt",
    "div_round",
    "layer_norm",
    "LN_EPS",
    "requant_gates",
    "accumulator_ranges",
    "lstm_accumulators",
    "gru_accumulators",
    "lstm_pointwise",
    "gru_pointwise",
    "lstm_shifts",
    "rnn_step",
    "rnn_layer",
    "default_tables",
    "random_params",
]

CELL_KINDS = ("lstm", "gru")
#: Accumulator slots per hidden unit, in order.
GATES = {"lstm": ("i", "f", "g", "o"), "gru": ("z", "r", "nx", "nh")}


def lstm_shifts(cell_frac_bits: int) -> tuple[int, int, int]:
    """Right shifts of f*c, i*g and o*tanh(c') for a cell in Q(15-F).F: ``(15, 30 - F, 23)``."""
    if not 0 <= cell_frac_bits <= 15:
        raise ValueError(f"cell_frac_bits must be in [0, 15], got {cell_frac_bits}")
    return 15, 30 - cell_frac_bits, 23


def default_tables(config: NPUConfig) -> dict[str, PWLTable]:
    """Non-adaptive tables: σ and tanh on Q3.12, tanh on the cell format, ``config.pwl_pieces`` each."""
    n, s = config.pwl_pieces, config.pwl_shift
    return {
        "sigmoid": fit_sigmoid(n, in_frac_bits=12, shift=s),
        "tanh": fit_tanh(n, in_frac_bits=12, shift=s),
        "tanh_cell": fit_tanh(n, in_frac_bits=config.cell_frac_bits, shift=s),
    }


@dataclass
class RNNParams:
    """Integer parameters of one LSTM or GRU layer.

    Attributes
    ----------
    kind : "lstm" or "gru"
    W : (G*H, I) weight codes (``weight_bits`` wide); G = 4 for LSTM, 3 for GRU.
    U : (G*H, H) recurrent weight codes.
    b : (4, H) int32 biases in accumulator units, one per accumulator slot (see :data:`GATES`).
    M, n : (4, H) requant multiplier (unsigned 16-bit) and shift per accumulator slot.
    weight_bits : DenseShift code width, or 8 for int8.
    tables : PWL tables "sigmoid", "tanh" (Q3.12 in) and, for LSTM, "tanh_cell" (cell format in).
    ln_gamma, ln_beta : optional (4, H) int16 Q3.12 layer-norm scale and shift per slot; ``None`` = no LN.
    """

    kind: str
    W: np.ndarray
    U: np.ndarray
    b: np.ndarray
    M: np.ndarray
    n: np.ndarray
    weight_bits: int
    tables: dict[str, PWLTable]
    ln_gamma: np.ndarray | None = None
    ln_beta: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in CELL_KINDS:
            raise ValueError(f"RNN kind must be one of {CELL_KINDS}, got {self.kind!r}")
        G = 4 if self.kind == "lstm" else 3
        self.W, self.U = np.asarray(self.W, np.int64), np.asarray(self.U, np.int64)
        if self.W.ndim != 2 or self.U.ndim != 2:
            raise ValueError("W and U must be 2-D code arrays")
        H = self.U.shape[1]
        if self.U.shape[0] != G * H or self.W.shape[0] != G * H:
            raise ValueError(
                f"{self.kind}: W and U need {G}*H = {G * H} rows, got {self.W.shape[0]} and {self.U.shape[0]}"
            )
        for name in ("b", "M", "n"):
            a = np.asarray(getattr(self, name), np.int64)
            if a.shape != (4, H):
                raise ValueError(f"{name} must have shape (4, {H}), got {a.shape}")
            setattr(self, name, a)
        if np.any(self.M < 0) or np.any(self.M >= 1 << 16) or np.any(self.n < 0) or np.any(self.n > 63):
            raise ValueError("M must be unsigned 16-bit and n in [0, 63]")
        if np.any(self.b < -(1 << 31)) or np.any(self.b >= 1 << 31):
            raise ValueError("biases must be int32")
        codes.decode(self.W, self.weight_bits)  # range check
        codes.decode(self.U, self.weight_bits)
        need = ("sigmoid", "tanh", "tanh_cell") if self.kind == "lstm" else ("sigmoid", "tanh")
        missing = [k for k in need if k not in self.tables]
        if missing:
            raise ValueError(f"{self.kind} needs PWL tables {', '.join(missing)}")
        if (self.ln_gamma is None) != (self.ln_beta is None):
            raise ValueError("layer norm needs both ln_gamma and ln_beta")

    @property
    def hidden(self) -> int:
        return self.U.shape[1]

    @property
    def inputs(self) -> int:
        return self.W.shape[1]


# -- integer helpers for layer norm ------------------------------------------------------------


def div_round(a, b):
    """``floor(a / b + 1/2)`` for integers, ``b > 0`` (round half up, like :func:`rshift_round`)."""
    b_arr = np.asarray(b)
    if np.any(b_arr <= 0):
        raise ValueError("div_round: divisor must be positive")
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (2 * np.asarray(a, np.int64) + b_arr) // (2 * b_arr)
    return (2 * a + b) // (2 * b)


def isqrt(v):
    """``floor(sqrt(v))`` for integers ``v >= 0`` by Newton's iteration (scalar or array).

    ``x <- (x + v // x) // 2`` from ``x0 = 2**ceil(bits(v)/2) >= sqrt(v)`` decreases monotonically to
    ``floor(sqrt(v))``: stop at the first step that does not decrease. The result is the exact floor
    square root, so any hardware method that computes it (Newton, digit-by-digit) matches.
    """
    if isinstance(v, np.ndarray):
        return np.array([isqrt(int(x)) for x in v.ravel()], dtype=np.int64).reshape(v.shape)
    v = int(v)
    if v < 0:
        raise ValueError("isqrt of a negative number")
    if v < 2:
        return v
    x = 1 << ((v.bit_length() + 1) // 2)
    while True:
        y = (x + v // x) // 2
        if y >= x:
            return x
        x = y


#: Variance floor in Q6.24 (so a constant vector normalizes to beta, not to a division by zero).
LN_EPS = 1 << 8


def layer_norm(z: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Integer layer normalization over the last axis of Q3.12 values ``z`` (int16).

    With ``H`` the length of the last axis::

        mu   = div_round(Σ z, H)                       Q3.12
        d    = z - mu                                  Q3.12 (17 bits)
        var  = div_round(Σ d², H)                      Q6.24
        s    = isqrt(var + LN_EPS)                     Q3.12, >= 16
        inv  = div_round(2**30, s)                     Q.18 (1/s)
        zn   = rshift_round(d * inv, 18)               Q3.12  (d / s)
        out  = sat(rshift_round(gamma * zn, 12) + beta, 16)

    ``gamma``, ``beta`` are int16 Q3.12 and broadcast against ``z``. One square root and one
    reciprocal per vector, one multiply per element; the divisions are by ``H`` and ``s`` only.
    """
    z = np.asarray(z, np.int64)
    H = z.shape[-1]
    mu = div_round(z.sum(axis=-1, keepdims=True), H)
    d = z - mu
    var = div_round((d * d).sum(axis=-1, keepdims=True), H)
    s = isqrt(var + LN_EPS)
    inv = div_round(np.full_like(s, 1 << 30), s)
    zn = rshift_round(d * inv, 18)
    return sat(rshift_round(np.asarray(gamma, np.int64) * zn, 12) + np.asarray(beta, np.int64), 16)


# -- the two steps -----------------------------------------------------------------------------


def requant_gates(acc: np.ndarray, M: np.ndarray, n: np.ndarray) -> np.ndarray:
    """``sat(rshift_round(acc * M, n), 16)`` per accumulator slot; acc (..., 4, H), M and n (4, H)."""
    return sat(rshift_round(np.asarray(acc, np.int64) * M, np.broadcast_to(n, np.shape(acc))), 16)


def _decoded(p: RNNParams) -> tuple[np.ndarray, np.ndarray]:
    return codes.decode(p.W, p.weight_bits), codes.decode(p.U, p.weight_bits)


def lstm_accumulators(p: RNNParams, x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """(B, 4, H) accumulators ``W x + U h + b`` of an LSTM for x (B, I) and h (B, H) int8."""
    W, U = _decoded(p)
    H = p.hidden
    a = np.asarray(x, np.int64) @ W.T + np.asarray(h, np.int64) @ U.T  # (B, 4H)
    return a.reshape(-1, 4, H) + p.b


def gru_accumulators(p: RNNParams, x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """(B, 4, H) accumulators z, r, nx, nh of a GRU (see the module docstring)."""
    W, U = _decoded(p)
    H = p.hidden
    wx = (np.asarray(x, np.int64) @ W.T).reshape(-1, 3, H)
    uh = (np.asarray(h, np.int64) @ U.T).reshape(-1, 3, H)
    acc = np.stack([wx[:, 0] + uh[:, 0], wx[:, 1] + uh[:, 1], wx[:, 2], uh[:, 2]], axis=1)
    return acc + p.b


def accumulator_ranges(p: RNNParams) -> tuple[np.ndarray, np.ndarray]:
    """(4, H) exact lowest and highest ``acc`` of each accumulator slot over any int8 x and h (SPEC §3:
    no silent wrap).

    x and h lie in [-128, 127], so a slot's largest sum takes 127 on its positive weights and -128 on
    its negative ones: ``b + 127 P + 128 Q`` with ``P``, ``Q`` the sums of the positive and negative
    ``|w|`` over the rows the slot sums (see the module docstring; GRU's nx uses only W, nh only U);
    its smallest is ``b - 128 P - 127 Q``. A slot that starts from its bias and adds one term at a
    time stays within both ends at every step (each term's range holds 0).
    """
    H = p.hidden
    W, U = _decoded(p)

    def pos_neg(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # (G, H) sums of positive / negative |w|
        return np.where(a > 0, a, 0).sum(axis=1).reshape(-1, H), np.where(a < 0, -a, 0).sum(axis=1).reshape(-1, H)

    (wp, wn), (up, un) = pos_neg(W), pos_neg(U)
    if p.kind == "lstm":
        P, Q = wp + up, wn + un
    else:
        P = np.stack([wp[0] + up[0], wp[1] + up[1], wp[2], up[2]])
        Q = np.stack([wn[0] + un[0], wn[1] + un[1], wn[2], un[2]])
    b = np.asarray(p.b, np.int64)
    return b - 128 * P - 127 * Q, b + 127 * P + 128 * Q


def _preact(p: RNNParams, acc: np.ndarray) -> np.ndarray:
    z = requant_gates(acc, p.M, p.n)
    if p.ln_gamma is not None:
        z = layer_norm(z, p.ln_gamma, p.ln_beta)
    return z


def lstm_pointwise(
    z: np.ndarray, c: np.ndarray, tables: dict[str, PWLTable], cell_frac_bits: int = 11
) -> tuple[np.ndarray, np.ndarray]:
    """LSTM gate unit on pre-activations z (..., 4, H) Q3.12 and cell c (..., H): returns (h', c')."""
    s_fc, s_ig, s_h = lstm_shifts(cell_frac_bits)
    sig, th = tables["sigmoid"], tables["tanh"]
    i, f, g, o = sig(z[..., 0, :]), sig(z[..., 1, :]), th(z[..., 2, :]), sig(z[..., 3, :])
    c = np.asarray(c, np.int64)
    fc = sat(rshift_round(f * c, s_fc), 16)
    ig = sat(rshift_round(i * g, s_ig), 16)
    c2 = sat(fc + ig, 16)
    h2 = sat(rshift_round(o * tables["tanh_cell"](c2), s_h), 8)
    return h2, c2


def gru_pointwise(z: np.ndarray, h: np.ndarray, tables: dict[str, PWLTable]) -> np.ndarray:
    """GRU gate unit on pre-activations z (..., 4, H) = (z, r, a, b) Q3.12 and h (..., H) int8: h'."""
    sig, th = tables["sigmoid"], tables["tanh"]
    zg, r = sig(z[..., 0, :]), sig(z[..., 1, :])
    a, b = z[..., 2, :], z[..., 3, :]
    n = th(sat(a + rshift_round(r * b, 15), 16))
    h = np.asarray(h, np.int64)
    return sat(rshift_round((n << 15) + zg * ((h << 8) - n), 23), 8)


def rnn_step(
    p: RNNParams, x: np.ndarray, h: np.ndarray, c: np.ndarray | None, config: NPUConfig
) -> tuple[np.ndarray, np.ndarray | None]:
    """One time step for a batch: x (B, I), h (B, H) int8, c (B, H) int16 (LSTM) -> (h', c')."""
    if p.kind == "lstm":
        z = _preact(p, lstm_accumulators(p, x, h))
        return lstm_pointwise(z, c, p.tables, config.cell_frac_bits)
    z = _preact(p, gru_accumulators(p, x, h))
    return gru_pointwise(z, h, p.tables), None


def rnn_layer(
    p: RNNParams,
    xs: np.ndarray,
    config: NPUConfig,
    h0: np.ndarray | None = None,
    c0: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray | None]:
    """Run a sequence: xs (T, B, I) int8 (or (T, I)); returns (hs (T, B, H), cs or None, h_T, c_T).

    ``hs[t]`` and ``cs[t]`` are the states after step ``t``. Missing initial states are zero.
    """
    xs = np.asarray(xs, np.int64)
    squeeze = xs.ndim == 2
    if squeeze:
        xs = xs[:, None, :]
    if xs.ndim != 3 or xs.shape[2] != p.inputs:
        raise ValueError(f"xs must be (T, B, {p.inputs}) or (T, {p.inputs}), got {np.shape(xs)}")
    if np.any(xs < -128) or np.any(xs > 127):
        raise ValueError("inputs must be int8")
    T, B, _ = xs.shape
    H = p.hidden
    h = np.zeros((B, H), np.int64) if h0 is None else np.broadcast_to(np.asarray(h0, np.int64), (B, H)).copy()
    c = None
    if p.kind == "lstm":
        c = np.zeros((B, H), np.int64) if c0 is None else np.broadcast_to(np.asarray(c0, np.int64), (B, H)).copy()
    hs = np.zeros((T, B, H), np.int64)
    cs = np.zeros((T, B, H), np.int64) if c is not None else None
    for t in range(T):
        h, c = rnn_step(p, xs[t], h, c, config)
        hs[t] = h
        if cs is not None:
            cs[t] = c
    if squeeze:
        hs = hs[:, 0]
        cs = cs[:, 0] if cs is not None else None
        return hs, cs, h[0], (c[0] if c is not None else None)
    return hs, cs, h, c


def random_params(
    kind: str,
    inputs: int,
    hidden: int,
    config: NPUConfig,
    rng: np.random.Generator,
    *,
    tables: dict[str, PWLTable] | None = None,
    gain: float = 1.0,
) -> RNNParams:
    """Random weights with requant scales that put typical pre-activations around ±2 (for tests).

    ``gain`` scales the requant multipliers (large values drive gates and cell into saturation).
    """
    if kind not in CELL_KINDS:
        raise ValueError(f"RNN kind must be one of {CELL_KINDS}, got {kind!r}")
    G = 4 if kind == "lstm" else 3
    wb = config.weight_bits
    W = rng.integers(0, 1 << wb, size=(G * hidden, inputs))
    U = rng.integers(0, 1 << wb, size=(G * hidden, hidden))
    wmax = codes.max_abs_weight(wb)
    b = rng.integers(-16 * wmax * 8, 16 * wmax * 8 + 1, size=(4, hidden))
    # typical |acc| ~ 64 * wmax/2 * sqrt(K); map it to ~2.0 in Q3.12 (8192)
    typ = 64 * max(wmax / 2, 1) * np.sqrt(inputs + hidden)
    scale = gain * 8192.0 / typ
    pairs = [quantize_multiplier(scale * u) for u in rng.uniform(0.5, 1.5, size=4 * hidden)]
    M = np.array([m for m, _ in pairs], np.int64).reshape(4, hidden)
    n = np.array([k for _, k in pairs], np.int64).reshape(4, hidden)
    return RNNParams(kind, W, U, b, M, n, wb, tables if tables is not None else default_tables(config))
