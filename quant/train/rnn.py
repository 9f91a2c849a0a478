"""Integer-exact LSTM for quantization-aware training (SPEC §4, §5): torch twin of :mod:`quant.rnn`.

:class:`QuantLSTM` holds one weight parametrization (:mod:`quant.train.weights`) over the stacked
matrix ``[W | U]`` of shape ``(4H, I + H)`` (gate rows i, f, g, o as in :mod:`quant.rnn`), a positive
per-row gain and a real bias. Real pre-activation of row ``r``::

    z[r] = gain[r] * ([x, h] @ w[r]) + bias[r]          (x, h real, in [-1, 1))

In the ``exact`` phase the forward pass *is* the integer LSTM of :mod:`quant.rnn`: x and h are Q0.7
int8 (``q / 128``), ``w = alpha * v`` with integer ``v`` (DenseShift ``±2**S``, ``alpha = 1``; or int8
with a per-row ``alpha``), so one accumulator unit is worth ``a[r] = gain[r] * alpha[r] / 128`` and::

    acc = [q_x, q_h] @ v.T + round(bias / a)            int64 (bias in accumulator units, int32)
    (M, n) = quantize_multiplier(a * 2**12)             per row: acc -> Q3.12
    z = sat(rshift_round(acc * M, n), 16)

followed by the PWL tables and the int16 cell update of :func:`quant.rnn.lstm_pointwise`, all in
int64 torch arithmetic. :meth:`QuantLSTM.rnn_params` gives the very same integers as a
:class:`quant.rnn.RNNParams`, so the golden model reproduces the torch forward bit for bit.

Gradients are straight-through: every integer quantity ``e`` (pre-activation, gate, cell, h) enters
the graph as ``e + (s - s.detach())`` where ``s`` is the float expression it approximates (float
``sigmoid``/``tanh`` in place of the tables, no rounding, no saturation). The value is exactly ``e``,
the gradient that of ``s``.

The ``float`` phase is the same cell with float activations: the FP32 baseline, or a warm-up with quantized weights.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..codes import decode, encode
from ..config import NPUConfig
from ..pwl import PWLTable
from ..rnn import RNNParams, default_tables, lstm_shifts
from .network import quantize_multipliers
from .weights import make_weight

__all__ = ["QuantLSTM", "TorchPWL", "rshift_round_t", "sat_t", "splice", "X_SCALE", "Z_FRAC_BITS"]

#: Real value of one LSB of x and h (Q0.7).
X_SCALE = 1.0 / 128
#: Fraction bits of the gate pre-activations (Q3.12) and of the PWL outputs (Q0.15).
Z_FRAC_BITS, G_FRAC_BITS = 12, 15
_INT32 = (1 << 31) - 1


def rshift_round_t(x: torch.Tensor, n) -> torch.Tensor:
    """:func:`quant.fixed.rshift_round` on int64 tensors (``n`` an int or an int64 tensor, >= 0)."""
    if isinstance(n, int):
        return x if n == 0 else torch.bitwise_right_shift(x + (1 << (n - 1)), n)
    half = torch.where(n > 0, torch.bitwise_left_shift(torch.ones_like(n), (n - 1).clamp_min(0)), 0)
    return torch.bitwise_right_shift(x + half, n)


def sat_t(x: torch.Tensor, bits: int) -> torch.Tensor:
    """:func:`quant.fixed.sat` on int64 tensors."""
    return torch.clamp(x, -(1 << (bits - 1)), (1 << (bits - 1)) - 1)


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


class QuantLSTM(nn.Module):
    """One LSTM layer (no return of the sequence: :meth:`forward` gives every h, the caller picks).

    Parameters
    ----------
    inputs, hidden:
        I and H.
    kind, bits:
        Weight parametrization (``denseshift`` with ``bits`` in {2, 3, 4}, ``int8`` or ``fp32``).
    config:
        Gives the PWL tables (:func:`quant.rnn.default_tables`) and the cell format.
    """

    def __init__(self, inputs: int, hidden: int, *, kind: str = "denseshift", bits: int = 4, config=None):
        super().__init__()
        self.inputs, self.hidden, self.kind = inputs, hidden, kind
        self.bits = 8 if kind == "int8" else bits
        self.config = config or NPUConfig(weight_bits=self.bits if kind in ("denseshift", "int8") else 4)
        K = inputs + hidden
        self.weight = make_weight(kind, (4 * hidden, K), bits)
        # DenseShift weights are ±2**S (|v| ~ 2 at init), the others are Kaiming-scaled already
        g0 = 1.0 / (2.0 * math.sqrt(K)) if kind == "denseshift" else 1.0
        self.log_gain = nn.Parameter(torch.full((4 * hidden,), math.log(g0)))
        b = torch.zeros(4 * hidden)
        b[hidden : 2 * hidden] = 1.0  # forget-gate bias 1: remember by default
        self.bias = nn.Parameter(b)
        self.tables = default_tables(self.config)
        self._pwl = {k: TorchPWL(t) for k, t in self.tables.items()}
        self.phase = "float" if kind == "fp32" else "exact"

    # -- integer parameters ------------------------------------------------------------------------

    @torch.no_grad()
    def integer(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(v, M, n, b)``: integer weights (float64 ``[4H, I+H]``), per-row requant and int32 bias (int64)."""
        if self.kind == "fp32":
            raise ValueError("an FP32 LSTM has no integer form")
        v, alpha = self.weight.integer()
        a = torch.exp(self.log_gain.detach().double()) * alpha.double() * X_SCALE
        M, n = quantize_multipliers(a * (1 << Z_FRAC_BITS))
        b = torch.clamp(torch.round(self.bias.detach().double() / a), -_INT32 - 1, _INT32).to(torch.int64)
        return v.double(), M, n, b

    def rnn_params(self) -> RNNParams:
        """The layer as :class:`quant.rnn.RNNParams` (codes, (4, H) bias/M/n, tables): what is exported."""
        v, M, n, b = self.integer()
        v = v.round().to(torch.int64).numpy()
        W = encode(v[:, : self.inputs], self.bits)
        U = encode(v[:, self.inputs :], self.bits)
        if not (
            np.array_equal(decode(W, self.bits), v[:, : self.inputs])
            and np.array_equal(decode(U, self.bits), v[:, self.inputs :])
        ):
            raise ValueError(f"LSTM weights are not all representable as {self.bits}-bit codes")
        H = self.hidden
        return RNNParams(
            "lstm",
            W,
            U,
            b.numpy().reshape(4, H),
            M.numpy().reshape(4, H),
            n.numpy().reshape(4, H),
            self.bits,
            dict(self.tables),
        )

    # -- forward -----------------------------------------------------------------------------------

    def forward(self, xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``xs`` (B, T, I): integer-valued Q0.7 inputs (float). Returns (h_all real (B, T, H), h_all int or None).

        The integer states (int64) are returned in the exact phase, ``None`` in the float phase.
        """
        if self.phase == "float":
            return self._float_forward(xs * X_SCALE), None
        return self._exact_forward(xs)

    def _float_forward(self, xs: torch.Tensor) -> torch.Tensor:
        B, T, _ = xs.shape
        H = self.hidden
        w, gain = self.weight(), torch.exp(self.log_gain)
        h = xs.new_zeros(B, H)
        c = xs.new_zeros(B, H)
        out = []
        for t in range(T):
            z = (gain * (torch.cat([xs[:, t], h], 1) @ w.T) + self.bias).view(B, 4, H)
            i, f, g, o = torch.sigmoid(z[:, 0]), torch.sigmoid(z[:, 1]), torch.tanh(z[:, 2]), torch.sigmoid(z[:, 3])
            c = f * c + i * g
            h = o * torch.tanh(c)
            out.append(h)
        return torch.stack(out, 1)

    def _exact_forward(self, xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, _ = xs.shape
        H = self.hidden
        F = self.config.cell_frac_bits
        s_fc, s_ig, s_h = lstm_shifts(F)
        sig, th, thc = self._pwl["sigmoid"], self._pwl["tanh"], self._pwl["tanh_cell"]
        v, M, n, b = self.integer()
        M, n = M.view(4, H), n.view(4, H)
        b = b.view(4, H)
        w, gain = self.weight(), torch.exp(self.log_gain)
        qx = xs.detach().round().to(torch.int64)
        if torch.any(qx < -128) or torch.any(qx > 127):
            raise ValueError("QuantLSTM: inputs must be int8 (Q0.7)")
        h_i = torch.zeros(B, H, dtype=torch.int64)
        c_i = torch.zeros(B, H, dtype=torch.int64)
        h_r = xs.new_zeros(B, H)
        c_r = xs.new_zeros(B, H)
        hs_r, hs_i = [], []
        for t in range(T):
            with torch.no_grad():
                # float64 holds every partial sum exactly (|acc| < 2**53)
                acc = (torch.cat([qx[:, t], h_i], 1).double() @ v.T).round().to(torch.int64).view(B, 4, H) + b
                z = sat_t(rshift_round_t(acc * M, n), 16)
                ig_i, fg_i, gg_i, og_i = sig(z[:, 0]), sig(z[:, 1]), th(z[:, 2]), sig(z[:, 3])
                fc = sat_t(rshift_round_t(fg_i * c_i, s_fc), 16)
                ig = sat_t(rshift_round_t(ig_i * gg_i, s_ig), 16)
                c_i = sat_t(fc + ig, 16)
                h_i = sat_t(rshift_round_t(og_i * thc(c_i), s_h), 8)
            # the float graph the gradients follow, each value replaced by its integer result
            zs = (gain * (torch.cat([xs[:, t] * X_SCALE, h_r], 1) @ w.T) + self.bias).view(B, 4, H)
            zr = splice(z.float() / (1 << Z_FRAC_BITS), zs)
            gs = 1.0 / (1 << G_FRAC_BITS)
            i = splice(ig_i.float() * gs, torch.sigmoid(zr[:, 0]))
            f = splice(fg_i.float() * gs, torch.sigmoid(zr[:, 1]))
            g = splice(gg_i.float() * gs, torch.tanh(zr[:, 2]))
            o = splice(og_i.float() * gs, torch.sigmoid(zr[:, 3]))
            c_r = splice(c_i.float() / (1 << F), f * c_r + i * g)
            h_r = splice(h_i.float() * X_SCALE, o * torch.tanh(c_r))
            hs_r.append(h_r)
            hs_i.append(h_i)
        return torch.stack(hs_r, 1), torch.stack(hs_i, 1)

    def extra_repr(self) -> str:
        return f"{self.inputs}, {self.hidden}, weight={self.weight.kind}, phase={self.phase}"
