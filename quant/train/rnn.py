"""Integer-exact LSTM and GRU for quantization-aware training (SPEC §4, §5): torch twins of :mod:`quant.rnn`.

:class:`QuantRNN` (``cell="lstm"`` or ``"gru"``; :class:`QuantLSTM`, :class:`QuantGRU`) holds one
weight parametrization (:mod:`quant.train.weights`) over the stacked matrix ``[W | U]`` of shape
``(G*H, I + H)`` (G = 4 gate rows i, f, g, o for the LSTM, 3 rows z, r, n for the GRU, as in
:mod:`quant.rnn`), a positive gain and a real bias per **accumulator slot** (four per unit in both
cells: i, f, g, o or z, r, nx, nh). Real pre-activation of slot ``s`` of unit ``j``::

    z[s, j] = gain[s, j] * (part of [x, h] @ w[row(s, j)]) + bias[s, j]      (x, h real, in [-1, 1))

where the GRU's nx slot reads only the x part of row n and nh only the h part.

In the ``exact`` phase the forward pass *is* the integer cell of :mod:`quant.rnn`: x and h are Q0.7
int8 (``q / 128``), ``w = alpha * v`` with integer ``v`` (DenseShift ``±2**S``, ``alpha = 1``; or int8
with a per-row ``alpha``), so one accumulator unit of slot ``s`` is worth ``a = gain * alpha / 128`` and::

    acc = (the slot's integer dot product) + round(bias / a)      int64 (bias in accumulator units, int32)
    (M, n) = quantize_multiplier(a * 2**12)                        per slot: acc -> Q3.12
    z = sat(rshift_round(acc * M, n), 16)

then the optional integer layer norm (:func:`quant.rnn.layer_norm`, gamma and beta rounded to
Q3.12), the PWL tables and the int16 state update of :func:`quant.rnn.lstm_pointwise` /
:func:`quant.rnn.gru_pointwise`, all in int64 torch arithmetic. :meth:`QuantRNN.rnn_params` gives the
very same integers as a :class:`quant.rnn.RNNParams`, so the golden model reproduces the torch forward
bit for bit.

Gradients are straight-through: every integer quantity ``e`` (pre-activation, gate, cell, h) enters
the graph as ``e + (s - s.detach())`` where ``s`` is the float expression it approximates (float
``sigmoid``/``tanh`` in place of the tables, no rounding, no saturation). The value is exactly ``e``,
the gradient that of ``s``.

**Adaptive PWL** (SPEC §5): while :attr:`QuantRNN.collect` is set, the exact forward adds every
table input it evaluates to a running histogram per table (sigmoid: the σ slots, tanh: the g slot or
the GRU's n input, tanh_cell: c'). :meth:`QuantRNN.refit_tables` refits each table by greedy knot
insertion weighted by its histogram (:func:`quant.pwl.fit`) and halves the counts (so the histogram
follows the network as it trains). The tables in use when training stops are the ones exported.

The ``float`` phase is the same cell with float activations: the FP32 baseline, or a warm-up with
quantized weights.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..codes import decode, encode
from ..config import NPUConfig
from ..pwl import INT16_MIN, PWLTable, fit
from ..rnn import LN_EPS, RNNParams, default_tables, lstm_shifts
from .fixed_t import rshift_round_t, sat_t
from .network import quantize_multipliers
from .weights import make_weight

__all__ = [
    "QuantRNN",
    "QuantLSTM",
    "QuantGRU",
    "TorchPWL",
    "rshift_round_t",
    "sat_t",
    "div_round_t",
    "isqrt_t",
    "layer_norm_t",
    "splice",
    "X_SCALE",
    "Z_FRAC_BITS",
]

#: Real value of one LSB of x and h (Q0.7).
X_SCALE = 1.0 / 128
#: Fraction bits of the gate pre-activations (Q3.12) and of the PWL outputs (Q0.15).
Z_FRAC_BITS, G_FRAC_BITS = 12, 15
_INT32 = (1 << 31) - 1
_HIST_BINS = 1 << 16


def div_round_t(a: torch.Tensor, b) -> torch.Tensor:
    """:func:`quant.rnn.div_round` on int64 tensors: ``(2a + b) // (2b)``, ``b > 0``."""
    return torch.div(2 * a + b, 2 * b, rounding_mode="floor")


def isqrt_t(v: torch.Tensor) -> torch.Tensor:
    """Exact ``floor(sqrt(v))`` of an int64 tensor ``v >= 0`` (the value :func:`quant.rnn.isqrt` defines).

    A float64 square root is within one of the answer for ``v < 2**52``; the two corrections make it exact.
    """
    s = torch.floor(torch.sqrt(v.double())).to(torch.int64)
    s = s - (s * s > v).to(torch.int64)
    return s + ((s + 1) * (s + 1) <= v).to(torch.int64)


def layer_norm_t(z: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """:func:`quant.rnn.layer_norm` on int64 tensors: Q3.12 ``z`` (..., H), int16 Q3.12 ``gamma``, ``beta``."""
    H = z.shape[-1]
    mu = div_round_t(z.sum(-1, keepdim=True), H)
    d = z - mu
    var = div_round_t((d * d).sum(-1, keepdim=True), H)
    s = isqrt_t(var + LN_EPS)
    inv = div_round_t(torch.full_like(s, 1 << 30), s)
    zn = rshift_round_t(d * inv, 18)
    return sat_t(rshift_round_t(gamma * zn, 12) + beta, 16)


def splice(exact: torch.Tensor, surrogate: torch.Tensor) -> torch.Tensor:
    """Value ``exact`` (exactly: ``s - s.detach()`` is 0), gradient of ``surrogate``."""
    return exact + (surrogate - surrogate.detach())


class TorchPWL:
    """A :class:`quant.pwl.PWLTable` evaluated on int64 tensors, exactly as :meth:`PWLTable.__call__`."""

    def __init__(self, table: PWLTable):
        self.table = table
        self.knots = torch.tensor(table.knots, dtype=torch.int64)
        self.inner = self.knots[1:-1].contiguous()
        self.y = torch.tensor(table.y, dtype=torch.int64)
        self.m = torch.tensor(table.m, dtype=torch.int64)
        self.shift = int(table.shift)

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        zc = torch.clamp(z, int(self.knots[0]), int(self.knots[-1])).contiguous()
        i = torch.searchsorted(self.inner, zc, right=True)
        return sat_t(self.y[i] + rshift_round_t(self.m[i] * (zc - self.knots[i]), self.shift), 16)


class QuantRNN(nn.Module):
    """One LSTM or GRU layer; :meth:`forward` gives every h (the caller picks the last or all).

    Parameters
    ----------
    cell:
        ``"lstm"`` or ``"gru"``.
    inputs, hidden:
        I and H.
    kind, bits:
        Weight parametrization (``denseshift`` with ``bits`` in {2, 3, 4}, ``int8`` or ``fp32``).
    config:
        Gives the initial PWL tables (:func:`quant.rnn.default_tables`, ``config.pwl_pieces`` pieces)
        and the cell format.
    layer_norm:
        Integer layer norm on each slot's pre-activations (between requant and the tables).
    """

    def __init__(
        self,
        cell: str,
        inputs: int,
        hidden: int,
        *,
        kind: str = "denseshift",
        bits: int = 4,
        config: NPUConfig | None = None,
        layer_norm: bool = False,
    ):
        super().__init__()
        if cell not in ("lstm", "gru"):
            raise ValueError(f"cell must be 'lstm' or 'gru', got {cell!r}")
        if inputs < 1 or hidden < 1:
            raise ValueError(f"inputs and hidden must be positive, got {inputs}, {hidden}")
        self.cell, self.inputs, self.hidden, self.kind = cell, inputs, hidden, kind
        self.rows = 4 if cell == "lstm" else 3
        self.bits = 8 if kind == "int8" else bits
        self.config = config or NPUConfig(weight_bits=self.bits if kind in ("denseshift", "int8") else 4)
        K = inputs + hidden
        self.weight = make_weight(kind, (self.rows * hidden, K), bits)
        # Start every kind at the Kaiming scale (real weight rms sqrt(2 / K)). int8 and FP32 weights are
        # Kaiming-scaled already; DenseShift's ±2**S are not: with the low-variance latent init S is the
        # number of trailing 1 bits, so P(S = k) ~ 2**-(k+1) and the rms of v is ~3.4 at 3 bits but ~14
        # at 4 bits (one weight in 128 is ±128). A fixed gain put the 4-bit gates 4x deeper into
        # saturation than the 3-bit ones (the cause of the 4-bit < 3-bit seq-digits result).
        g0 = 1.0
        if kind == "denseshift":
            v0, _ = self.weight.integer()
            g0 = math.sqrt(2.0 / K) / float(v0.pow(2).mean().sqrt())
        self.log_gain = nn.Parameter(torch.full((4 * hidden,), math.log(g0)))
        b = torch.zeros(4 * hidden)
        if cell == "lstm":
            b[hidden : 2 * hidden] = 1.0  # forget-gate bias 1: remember by default
        self.bias = nn.Parameter(b)
        self.layer_norm = layer_norm
        if layer_norm:
            self.ln_gamma = nn.Parameter(torch.ones(4 * hidden))
            beta = torch.zeros(4 * hidden)
            if cell == "lstm":
                beta[hidden : 2 * hidden] = 1.0
            self.ln_beta = nn.Parameter(beta)
        self.set_tables(default_tables(self.config))
        self.phase = "float" if kind == "fp32" else "exact"
        self.collect = False
        self.hist = {k: torch.zeros(_HIST_BINS, dtype=torch.float64) for k in self.table_names}
        self._seen: dict[str, list[torch.Tensor]] = {}

    @property
    def table_names(self) -> tuple[str, ...]:
        return ("sigmoid", "tanh", "tanh_cell") if self.cell == "lstm" else ("sigmoid", "tanh")

    def set_tables(self, tables: dict[str, PWLTable]) -> None:
        """Use these PWL tables from now on (they are what :meth:`rnn_params` exports)."""
        self.tables = {k: tables[k] for k in self.table_names}
        self._pwl = {k: TorchPWL(t) for k, t in self.tables.items()}

    # -- adaptive PWL ------------------------------------------------------------------------------

    def _observe(self, name: str, z: torch.Tensor) -> None:
        if self.collect:
            self._seen.setdefault(name, []).append(z.reshape(-1))

    def _flush(self) -> None:
        # one bincount per table and sequence (a 65536-bin update per time step would dominate a step)
        for name, zs in self._seen.items():
            self.hist[name] += torch.bincount(torch.cat(zs) - INT16_MIN, minlength=_HIST_BINS).double()
        self._seen = {}

    def refit_tables(self, pieces: int | None = None, decay: float = 0.5) -> None:
        """Refit every table whose histogram has data, weighted by it; then scale the counts by ``decay``."""
        pieces = pieces or self.config.pwl_pieces
        new = dict(self.tables)
        for name, t in self.tables.items():
            h = self.hist[name]
            if float(h.sum()) > 0:
                func = "sigmoid" if name == "sigmoid" else "tanh"
                new[name] = fit(func, pieces, in_frac_bits=t.in_frac_bits, shift=t.shift, hist=h.numpy())
            h.mul_(decay)
        self.set_tables(new)

    # -- integer parameters ------------------------------------------------------------------------

    def _slot_alpha(self, alpha: torch.Tensor) -> torch.Tensor:
        H = self.hidden
        if self.cell == "lstm":
            return alpha
        a = alpha.view(3, H)
        return torch.cat([a[0], a[1], a[2], a[2]])

    @torch.no_grad()
    def integer(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(v, M, n, b)``: integer weights (float64 ``[G*H, I+H]``), per-slot requant and int32 bias (int64 ``[4H]``)."""
        if self.kind == "fp32":
            raise ValueError("an FP32 RNN has no integer form")
        v, alpha = self.weight.integer()
        a = torch.exp(self.log_gain.detach().double()) * self._slot_alpha(alpha.double()) * X_SCALE
        M, n = quantize_multipliers(a * (1 << Z_FRAC_BITS))
        b = torch.clamp(torch.round(self.bias.detach().double() / a), -_INT32 - 1, _INT32).to(torch.int64)
        return v.double(), M, n, b

    @torch.no_grad()
    def ln_integer(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer-norm gamma and beta as int16 Q3.12 (int64 ``[4, H]``)."""
        if not self.layer_norm:
            raise ValueError("this layer has no layer norm")
        q = [
            sat_t(torch.round(p.detach().double() * (1 << 12)).to(torch.int64), 16)
            for p in (self.ln_gamma, self.ln_beta)
        ]
        return q[0].view(4, self.hidden), q[1].view(4, self.hidden)

    def rnn_params(self) -> RNNParams:
        """The layer as :class:`quant.rnn.RNNParams` (codes, (4, H) bias/M/n, tables, LN): what is exported."""
        v, M, n, b = self.integer()
        v = v.round().to(torch.int64).numpy()
        W = encode(v[:, : self.inputs], self.bits)
        U = encode(v[:, self.inputs :], self.bits)
        if not (
            np.array_equal(decode(W, self.bits), v[:, : self.inputs])
            and np.array_equal(decode(U, self.bits), v[:, self.inputs :])
        ):
            raise ValueError(f"{self.cell} weights are not all representable as {self.bits}-bit codes")
        H = self.hidden
        gamma = beta = None
        if self.layer_norm:
            gamma, beta = (t.numpy() for t in self.ln_integer())
        return RNNParams(
            self.cell,
            W,
            U,
            b.numpy().reshape(4, H),
            M.numpy().reshape(4, H),
            n.numpy().reshape(4, H),
            self.bits,
            dict(self.tables),
            ln_gamma=gamma,
            ln_beta=beta,
        )

    # -- forward -----------------------------------------------------------------------------------

    def forward(self, xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``xs`` (B, T, I): integer-valued Q0.7 inputs (float). Returns (h_all real (B, T, H), h_all int or None).

        The integer states (int64) are returned in the exact phase, ``None`` in the float phase.
        """
        if self.phase == "float":
            return self._float_forward(xs * X_SCALE), None
        return self._exact_forward(xs)

    def _slots_real(self, x: torch.Tensor, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Real pre-activations (B, 4, H) before layer norm (the surrogate of the requantized z)."""
        B, H, n_in = x.shape[0], self.hidden, self.inputs
        if self.cell == "lstm":
            acc = (torch.cat([x, h], 1) @ w.T).view(B, 4, H)
        else:
            wx = (x @ w[:, :n_in].T).view(B, 3, H)
            uh = (h @ w[:, n_in:].T).view(B, 3, H)
            acc = torch.stack([wx[:, 0] + uh[:, 0], wx[:, 1] + uh[:, 1], wx[:, 2], uh[:, 2]], 1)
        return torch.exp(self.log_gain).view(4, H) * acc + self.bias.view(4, H)

    def _ln_real(self, z: torch.Tensor) -> torch.Tensor:
        mu = z.mean(-1, keepdim=True)
        var = (z - mu).square().mean(-1, keepdim=True)
        zn = (z - mu) * torch.rsqrt(var + LN_EPS / float(1 << 24))
        H = self.hidden
        return self.ln_gamma.view(4, H) * zn + self.ln_beta.view(4, H)

    def _float_forward(self, xs: torch.Tensor) -> torch.Tensor:
        B, T, _ = xs.shape
        H = self.hidden
        w = self.weight()
        h = xs.new_zeros(B, H)
        c = xs.new_zeros(B, H)
        out = []
        for t in range(T):
            z = self._slots_real(xs[:, t], h, w)
            if self.layer_norm:
                z = self._ln_real(z)
            if self.cell == "lstm":
                i, f, g, o = torch.sigmoid(z[:, 0]), torch.sigmoid(z[:, 1]), torch.tanh(z[:, 2]), torch.sigmoid(z[:, 3])
                c = f * c + i * g
                h = o * torch.tanh(c)
            else:
                zg, r = torch.sigmoid(z[:, 0]), torch.sigmoid(z[:, 1])
                nn_ = torch.tanh(z[:, 2] + r * z[:, 3])
                h = nn_ + zg * (h - nn_)
            out.append(h)
        return torch.stack(out, 1)

    def _integer_acc(self, qx: torch.Tensor, h_i: torch.Tensor, v: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        B, H, n_in = qx.shape[0], self.hidden, self.inputs
        # float64 holds every partial sum exactly (|acc| < 2**53)
        if self.cell == "lstm":
            acc = (torch.cat([qx, h_i], 1).double() @ v.T).round().to(torch.int64).view(B, 4, H)
        else:
            wx = (qx.double() @ v[:, :n_in].T).round().to(torch.int64).view(B, 3, H)
            uh = (h_i.double() @ v[:, n_in:].T).round().to(torch.int64).view(B, 3, H)
            acc = torch.stack([wx[:, 0] + uh[:, 0], wx[:, 1] + uh[:, 1], wx[:, 2], uh[:, 2]], 1)
        return acc + b

    def _exact_forward(self, xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, _ = xs.shape
        H = self.hidden
        F = self.config.cell_frac_bits
        s_fc, s_ig, s_h = lstm_shifts(F)
        sig, th = self._pwl["sigmoid"], self._pwl["tanh"]
        v, M, n, b = self.integer()
        M, n, b = M.view(4, H), n.view(4, H), b.view(4, H)
        if self.layer_norm:
            ln_g, ln_b = self.ln_integer()
        w = self.weight()
        qx = xs.detach().round().to(torch.int64)
        if torch.any(qx < -128) or torch.any(qx > 127):
            raise ValueError(f"Quant{self.cell.upper()}: inputs must be int8 (Q0.7)")
        h_i = torch.zeros(B, H, dtype=torch.int64)
        c_i = torch.zeros(B, H, dtype=torch.int64)
        h_r = xs.new_zeros(B, H)
        c_r = xs.new_zeros(B, H)
        gs = 1.0 / (1 << G_FRAC_BITS)
        hs_r, hs_i = [], []
        for t in range(T):
            with torch.no_grad():
                z = sat_t(rshift_round_t(self._integer_acc(qx[:, t], h_i, v, b) * M, n), 16)
                if self.layer_norm:
                    z = layer_norm_t(z, ln_g, ln_b)
                if self.cell == "lstm":
                    self._observe("sigmoid", z[:, [0, 1, 3]])
                    self._observe("tanh", z[:, 2])
                    ig_i, fg_i, gg_i, og_i = sig(z[:, 0]), sig(z[:, 1]), th(z[:, 2]), sig(z[:, 3])
                    fc = sat_t(rshift_round_t(fg_i * c_i, s_fc), 16)
                    ig = sat_t(rshift_round_t(ig_i * gg_i, s_ig), 16)
                    c_i = sat_t(fc + ig, 16)
                    self._observe("tanh_cell", c_i)
                    h_i = sat_t(rshift_round_t(og_i * self._pwl["tanh_cell"](c_i), s_h), 8)
                else:
                    self._observe("sigmoid", z[:, :2])
                    zg_i, r_i = sig(z[:, 0]), sig(z[:, 1])
                    npre_i = sat_t(z[:, 2] + rshift_round_t(r_i * z[:, 3], 15), 16)
                    self._observe("tanh", npre_i)
                    n_i = th(npre_i)
                    h_i = sat_t(rshift_round_t((n_i << 15) + zg_i * ((h_i << 8) - n_i), 23), 8)
            # the float graph the gradients follow, each value replaced by its integer result
            zs = self._slots_real(xs[:, t] * X_SCALE, h_r, w)
            if self.layer_norm:
                zs = self._ln_real(zs)
            zr = splice(z.float() / (1 << Z_FRAC_BITS), zs)
            if self.cell == "lstm":
                i = splice(ig_i.float() * gs, torch.sigmoid(zr[:, 0]))
                f = splice(fg_i.float() * gs, torch.sigmoid(zr[:, 1]))
                g = splice(gg_i.float() * gs, torch.tanh(zr[:, 2]))
                o = splice(og_i.float() * gs, torch.sigmoid(zr[:, 3]))
                c_r = splice(c_i.float() / (1 << F), f * c_r + i * g)
                h_r = splice(h_i.float() * X_SCALE, o * torch.tanh(c_r))
            else:
                zg = splice(zg_i.float() * gs, torch.sigmoid(zr[:, 0]))
                r = splice(r_i.float() * gs, torch.sigmoid(zr[:, 1]))
                npre = splice(npre_i.float() / (1 << Z_FRAC_BITS), zr[:, 2] + r * zr[:, 3])
                nr = splice(n_i.float() * gs, torch.tanh(npre))
                h_r = splice(h_i.float() * X_SCALE, nr + zg * (h_r - nr))
            hs_r.append(h_r)
            hs_i.append(h_i)
        self._flush()
        return torch.stack(hs_r, 1), torch.stack(hs_i, 1)

    def extra_repr(self) -> str:
        ln = ", layer_norm" if self.layer_norm else ""
        return f"{self.cell}, {self.inputs}, {self.hidden}, weight={self.weight.kind}, phase={self.phase}{ln}"


class QuantLSTM(QuantRNN):
    """:class:`QuantRNN` with ``cell="lstm"`` (gate rows i, f, g, o)."""

    def __init__(self, inputs: int, hidden: int, **kw):
        super().__init__("lstm", inputs, hidden, **kw)


class QuantGRU(QuantRNN):
    """:class:`QuantRNN` with ``cell="gru"`` (rows z, r, n; slots z, r, nx, nh)."""

    def __init__(self, inputs: int, hidden: int, **kw):
        super().__init__("gru", inputs, hidden, **kw)
