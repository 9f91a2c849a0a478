"""The digits networks: blocks of (layer, BatchNorm, int8 requantizer), and BatchNorm folding.

A network runs in one of three phases:

``float``
    FP32 baseline: no quantization at all.
``qat``
    Quantized weights (straight-through), BatchNorm on batch statistics, int8 activation
    fake-quantization with moving-average scales.
``exact``
    BatchNorm frozen and folded, activation scales frozen. The forward pass *is* the integer network:
    every block computes ``acc = sum q_x * v`` on integers, then ``sat(rshift_round((acc + bias) * M, n), 8)``
    with the per-channel ``(M, n)`` and int32 ``bias`` that :meth:`QuantBlock.fold` derives (the very
    numbers the exporter writes), exactly as :func:`quant.golden.gemm` does. Gradients flow through the
    float expression it approximates (straight-through), so training can continue in this phase.

Folding (one block; ``alpha`` is the weight's per-channel scale, 1 for DenseShift)::

    a[c] = gamma[c] * alpha[c] * s_x / sqrt(var[c] + eps)     real value of one accumulator unit
    b[c] = beta[c] - gamma[c] * mean[c] / sqrt(var[c] + eps)
    y[c] = a[c] * (acc[c] + b[c] / a[c])  ->  q_y = y / s_y
    (M[c], n[c]) = quantize_multiplier(|a[c]| / s_y),  bias[c] = round(b[c] / |a[c]|)

A channel with ``a[c] < 0`` has its weights negated (for DenseShift codes: the sign bit flipped), so
``M`` stays unsigned. Images are NCHW inside torch; the flatten before the dense head uses NHWC
order so that the exported (NHWC) model needs no permutation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..fixed import M_BITS, N_MAX
from .actquant import ActQuant
from .fixed_t import rshift_round_t
from .layers import QuantConv2d, QuantLinear

__all__ = ["Folded", "QuantBlock", "DigitsNet", "TASKS", "PHASES", "INPUT_SCALE", "quantize_multipliers"]

TASKS = ("digits-mlp", "digits-cnn")
PHASES = ("float", "qat", "exact")
#: Real value of one LSB of the int8 input: pixel p becomes q = 7 p, and 16 stands for 1.0.
INPUT_SCALE = 1.0 / 112
_INT32 = (1 << 31) - 1


def quantize_multipliers(scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`quant.fixed.quantize_multiplier` on a float64 tensor of scales (the same ``(M, n)``, vectorized).

    Exact in float64: ``scale * 2**n`` is a power-of-two scaling, and adding 0.5 to a value below
    2**16 loses nothing, so ``floor(. + 0.5)`` is the half-up rounding of the exact product.
    """
    scale = scale.double()
    if not torch.all(torch.isfinite(scale) & (scale > 0)):
        raise ValueError("quantize_multipliers: scales must be positive and finite")
    _, exp = torch.frexp(scale)
    n = torch.clamp(M_BITS - exp.to(torch.int64), 0, N_MAX)
    M = torch.floor(torch.ldexp(scale, n.double()) + 0.5)
    carry = M > (1 << M_BITS) - 1
    if torch.any(carry & (n == 0)):
        raise ValueError(f"quantize_multipliers: a scale exceeds {(1 << M_BITS) - 1}")
    n = torch.where(carry, n - 1, n)
    M = torch.floor(torch.ldexp(scale, n.double()) + 0.5)
    if torch.any(M == 0):
        raise ValueError("quantize_multipliers: a scale is too small for n <= 63")
    return M.to(torch.int64), n


@dataclass
class Folded:
    """Integer parameters of one block (torch layout: ``v`` is ``[out, in]`` or ``[out, in, kh, kw]``)."""

    v: torch.Tensor  # float64, integer-valued weights, channels already sign-corrected
    M: torch.Tensor  # int64 [out]
    n: torch.Tensor  # int64 [out]
    bias: torch.Tensor  # int64 [out]
    in_scale: float
    out_scale: float


class QuantBlock(nn.Module):
    """``layer -> BatchNorm -> (ReLU) -> int8 requantizer``; one GEMM layer of the exported model."""

    def __init__(self, name: str, layer: nn.Module, relu: bool, quantized: bool):
        super().__init__()
        self.name = name
        self.layer = layer
        out = layer.out_features if isinstance(layer, QuantLinear) else layer.out_channels
        self.bn = nn.BatchNorm1d(out) if isinstance(layer, QuantLinear) else nn.BatchNorm2d(out)
        self.relu = relu
        self.act = ActQuant(relu) if quantized else None

    def float_forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.layer(x))
        if self.relu:
            y = torch.relu(y)
        return self.act(y) if self.act is not None else y

    def _bn_terms(self):
        bn = self.bn
        sigma = torch.sqrt(bn.running_var.double() + bn.eps)
        gamma, beta = bn.weight.detach().double(), bn.bias.detach().double()
        return gamma / sigma, beta - gamma * bn.running_mean.double() / sigma

    @torch.no_grad()
    def fold(self, in_scale: float) -> Folded:
        """Fold BatchNorm (running statistics) and the scales into integer ``(v, M, n, bias)``."""
        if self.act is None:
            raise ValueError(f"block {self.name!r} is not quantized; an FP32 network cannot be folded")
        v, alpha = self.layer.weight.integer()
        g, b = self._bn_terms()
        a = g * alpha.double() * in_scale
        if torch.any(a == 0):
            raise ValueError(f"block {self.name!r}: a BatchNorm gamma is exactly 0, its channel carries nothing")
        sign = torch.where(a < 0, -1.0, 1.0).double()
        a = a.abs()
        s_y = self.act.scale
        M, n = quantize_multipliers(a / s_y)
        bias = torch.clamp(torch.round(b / a), -_INT32 - 1, _INT32).to(torch.int64)
        v = v.double() * sign.reshape(-1, *([1] * (v.dim() - 1)))
        return Folded(v=v, M=M, n=n, bias=bias, in_scale=in_scale, out_scale=s_y)

    def exact_forward(self, q: torch.Tensor, in_scale: float) -> tuple[torch.Tensor, float]:
        """Integer block on integer-valued ``q`` (float32); returns integer-valued ``q_y`` and its scale."""
        f = self.fold(in_scale)
        shape = (1, -1) + (1,) * (q.dim() - 2)
        with torch.no_grad():
            # float64 holds every partial sum exactly (|acc| < 2**33), so the order of summation is irrelevant.
            acc = self.layer.integer_forward(q.detach().double(), f.v).round().to(torch.int64)
            t = (acc + f.bias.view(shape)) * f.M.view(shape)
            n = f.n.view(shape)
            y = rshift_round_t(t, n)
            y = torch.clamp(y, 0 if self.relu else -128, 127).float()
        # Straight-through: the value is the integer result, the gradient that of the float block.
        z = self._frozen_bn(self.layer(q * in_scale), shape)
        u = torch.clamp(z / f.out_scale, 0 if self.relu else -128, 127)
        return u + (y - u).detach(), f.out_scale

    def _frozen_bn(self, z: torch.Tensor, shape) -> torch.Tensor:
        bn = self.bn
        inv = torch.rsqrt(bn.running_var + bn.eps).view(shape)
        return (z - bn.running_mean.view(shape)) * inv * bn.weight.view(shape) + bn.bias.view(shape)


class DigitsNet(nn.Module):
    """The digits MLP (64-64-10) or CNN (conv 1->8, conv 8->16, maxpool 2, dense 256->10).

    Input: the int8 image ``q = 7 * pixel`` as a float tensor, ``[B, 64]`` (MLP) or ``[B, 1, 8, 8]`` (CNN).
    Every layer is quantized, the first and the last included, so the whole network runs on the array.
    """

    def __init__(self, task: str, kind: str = "denseshift", bits: int = 3):
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
        self.task, self.kind, self.bits = task, kind, bits
        q = kind != "fp32"
        if task == "digits-mlp":
            self.blocks = nn.ModuleList(
                [
                    QuantBlock("fc1", QuantLinear(64, 64, kind=kind, bits=bits), relu=True, quantized=q),
                    QuantBlock("fc2", QuantLinear(64, 10, kind=kind, bits=bits), relu=False, quantized=q),
                ]
            )
            self.plan = [("block", 0), ("block", 1)]
        else:
            self.blocks = nn.ModuleList(
                [
                    QuantBlock("conv1", QuantConv2d(1, 8, 3, 1, kind=kind, bits=bits), relu=True, quantized=q),
                    QuantBlock("conv2", QuantConv2d(8, 16, 3, 1, kind=kind, bits=bits), relu=True, quantized=q),
                    QuantBlock("fc", QuantLinear(4 * 4 * 16, 10, kind=kind, bits=bits), relu=False, quantized=q),
                ]
            )
            self.plan = [("block", 0), ("block", 1), ("maxpool2d", 2), ("flatten", None), ("block", 2)]
        self.phase = "float" if kind == "fp32" else "qat"

    def input_shape(self) -> tuple[int, ...]:
        return (64,) if self.task == "digits-mlp" else (1, 8, 8)

    def set_phase(self, phase: str) -> None:
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}")
        if self.kind == "fp32" and phase != "float":
            raise ValueError("an FP32 network only has the float phase")
        if self.kind != "fp32" and phase == "float":
            raise ValueError("a quantized network has the qat and exact phases")
        for b in self.blocks:
            if b.act is not None:
                b.act.frozen = phase == "exact"
        self.phase = phase

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (real-valued; in the exact phase the int8 logits times their scale)."""
        if self.phase == "exact":
            q, s = self.trace(x)[-1][1], self.blocks[-1].act.scale
            return q * s
        h = x * INPUT_SCALE
        for op, arg in self.plan:
            if op == "block":
                h = self.blocks[arg].float_forward(h)
            elif op == "maxpool2d":
                h = torch.nn.functional.max_pool2d(h, arg)
            else:
                h = h.permute(0, 2, 3, 1).reshape(h.shape[0], -1)
        return h

    def trace(self, x: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        """Exact phase: ``[(layer name, integer-valued output), ...]`` of every layer, images in NCHW."""
        q, s = x, INPUT_SCALE
        out = []
        for op, arg in self.plan:
            if op == "block":
                b = self.blocks[arg]
                q, s = b.exact_forward(q, s)
                out.append((b.name, q))
            elif op == "maxpool2d":
                q = torch.nn.functional.max_pool2d(q, arg)
                out.append(("pool", q))
            else:
                q = q.permute(0, 2, 3, 1).reshape(q.shape[0], -1)
                out.append(("flatten", q))
        return out

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class indices (first maximum on ties, like the golden argmax)."""
        was = self.training
        self.eval()
        try:
            logits = self.trace(x)[-1][1] if self.phase == "exact" else self(x)
            return torch.argmax(logits, dim=1)
        finally:
            self.train(was)
