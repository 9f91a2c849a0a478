"""Weight parametrizations for quantization-aware training.

Each parametrization owns the latent tensors of one layer's weight and returns, on every call, the
weight the forward pass uses (with straight-through gradients to the latents). The quantized ones
also give the integer weight values ``v`` and a per-output-channel scale ``alpha`` such that the
real weight is ``alpha[c] * v[c, ...]``:

- :class:`DenseShiftWeight`: ``v = s * 2**S``, ``s`` in {-1, +1}, ``S`` in {0 .. 2**(b-1) - 1}, no zero
  (DenseShift's sign-scale decomposition); ``alpha = 1`` (the BatchNorm after the layer absorbs it).
- :class:`PowerOfTwoWithZeroWeight`: the same code budget with one code spent on zero
  (``v = s * z * 2**S``, ``z`` in {0, 1}, ``S`` in {0 .. 2**(b-1) - 2}: S3's sign-sparse-shift
  decomposition); the baseline that DenseShift is compared with. It has no hardware code.
- :class:`Int8Weight`: symmetric per-channel int8 in [-127, 127] (the MAC-array baseline).
- :class:`FloatWeight`: plain FP32.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "sign_ste",
    "binarize_ste",
    "DenseShiftWeight",
    "PowerOfTwoWithZeroWeight",
    "Int8Weight",
    "FloatWeight",
    "make_weight",
    "WEIGHT_KINDS",
    "LATENT_INIT_STD",
]

#: DenseShift's low-variance initialization: every latent ~ N(0, 1e-3**2).
LATENT_INIT_STD = 1e-3


def sign_ste(x: torch.Tensor) -> torch.Tensor:
    """``+1`` where ``x >= 0``, else ``-1``; identity gradient (straight-through)."""
    s = torch.where(x >= 0, 1.0, -1.0).to(x.dtype)
    return x + (s - x).detach()


def binarize_ste(x: torch.Tensor) -> torch.Tensor:
    """``1`` where ``x > 0``, else ``0``; identity gradient (straight-through)."""
    t = (x > 0).to(x.dtype)
    return x + (t - x).detach()


def _recursive_exponent(latents: torch.Tensor) -> torch.Tensor:
    """``S_1 = t_1``, ``S_i = (S_{i-1} + 1) * t_i`` over binarized latents; ``S`` takes 0 .. len(latents).

    With ``m`` latents the exponent reaches ``m``, so a range 0 .. 2**(b-1) - 1 needs ``2**(b-1) - 1``
    latents (3 for 3-bit: ``S = ((t1 + 1) * t2 + 1) * t3``, as in the paper's code).
    """
    S = torch.zeros_like(latents[0])
    for i in range(latents.shape[0]):
        S = (S + 1) * binarize_ste(latents[i])
    return S


def _shift_weight(sign: torch.Tensor, S: torch.Tensor, gate: torch.Tensor | None = None) -> torch.Tensor:
    """Forward ``s * 2**S`` exactly, backward through the surrogate ``s * sqrt(S + 1)``."""
    w_fw = sign * torch.pow(2.0, S)
    w_bw = sign * torch.sqrt(S + 1)
    if gate is not None:
        w_fw, w_bw = w_fw * gate, w_bw * gate
    return w_bw + (w_fw - w_bw).detach()


class DenseShiftWeight(nn.Module):
    """DenseShift zero-free power-of-two weight of ``bits`` in {2, 3, 4} (SPEC §2).

    Latents: ``sign`` (shape of the weight) and ``scale`` (``2**(bits-1) - 1`` tensors of that shape),
    all drawn from N(0, 1e-3**2).
    """

    kind = "denseshift"

    def __init__(self, shape: tuple[int, ...], bits: int, init_std: float = LATENT_INIT_STD):
        super().__init__()
        if bits not in (2, 3, 4):
            raise ValueError(f"DenseShift weights have 2, 3 or 4 bits, got {bits}")
        self.bits = bits
        self.k_max = (1 << (bits - 1)) - 1
        self.sign = nn.Parameter(torch.randn(shape) * init_std)
        self.scale = nn.Parameter(torch.randn((self.k_max, *shape)) * init_std)

    def exponent(self) -> torch.Tensor:
        return _recursive_exponent(self.scale)

    def forward(self) -> torch.Tensor:
        return _shift_weight(sign_ste(self.sign), self.exponent())

    @torch.no_grad()
    def integer(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(v, alpha)``: integer weights ``±2**S`` and per-channel scales (all 1)."""
        v = torch.where(self.sign >= 0, 1.0, -1.0) * torch.pow(2.0, self.exponent())
        return v, torch.ones(v.shape[0])


class PowerOfTwoWithZeroWeight(nn.Module):
    """Power-of-two weight that spends a code on zero: ``v`` in {0} ∪ {±2**S, S in 0 .. 2**(b-1) - 2}.

    Sign-sparse-shift decomposition: a binary sign, a binary "non-zero" gate ``z`` and
    ``2**(b-1) - 2`` exponent latents combined as in DenseShift. 2-bit is ternary {-1, 0, +1}.
    """

    kind = "pot-zero"

    def __init__(self, shape: tuple[int, ...], bits: int, init_std: float = LATENT_INIT_STD):
        super().__init__()
        if bits not in (2, 3, 4):
            raise ValueError(f"with-zero power-of-two weights have 2, 3 or 4 bits, got {bits}")
        self.bits = bits
        self.k_max = (1 << (bits - 1)) - 2
        self.sign = nn.Parameter(torch.randn(shape) * init_std)
        self.sparse = nn.Parameter(torch.randn(shape) * init_std)
        self.scale = nn.Parameter(torch.randn((self.k_max, *shape)) * init_std)

    def exponent(self) -> torch.Tensor:
        if self.k_max == 0:
            return torch.zeros_like(self.sign)
        return _recursive_exponent(self.scale)

    def forward(self) -> torch.Tensor:
        return _shift_weight(sign_ste(self.sign), self.exponent(), binarize_ste(self.sparse))

    @torch.no_grad()
    def integer(self) -> tuple[torch.Tensor, torch.Tensor]:
        s = torch.where(self.sign >= 0, 1.0, -1.0) * (self.sparse > 0).float()
        v = s * torch.pow(2.0, self.exponent())
        return v, torch.ones(v.shape[0])


def _kaiming(shape: tuple[int, ...]) -> torch.Tensor:
    fan_in = math.prod(shape[1:])
    return torch.randn(shape) * math.sqrt(2.0 / fan_in)


class Int8Weight(nn.Module):
    """Symmetric per-output-channel int8 weight in [-127, 127] (so a negated channel still fits)."""

    kind = "int8"
    bits = 8

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.weight = nn.Parameter(_kaiming(shape))

    def _alpha(self) -> torch.Tensor:
        w = self.weight.detach().reshape(self.weight.shape[0], -1)
        return w.abs().amax(dim=1).clamp_min(1e-8) / 127

    def forward(self) -> torch.Tensor:
        a = self._alpha().reshape(-1, *([1] * (self.weight.dim() - 1)))
        x = self.weight / a
        q = torch.clamp(torch.round(x), -127, 127)
        return (x + (q - x).detach()) * a

    @torch.no_grad()
    def integer(self) -> tuple[torch.Tensor, torch.Tensor]:
        a = self._alpha()
        v = torch.clamp(torch.round(self.weight / a.reshape(-1, *([1] * (self.weight.dim() - 1)))), -127, 127)
        return v, a


class FloatWeight(nn.Module):
    """Full-precision weight (the FP32 baseline); it has no integer form."""

    kind = "fp32"
    bits = 32

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.weight = nn.Parameter(_kaiming(shape))

    def forward(self) -> torch.Tensor:
        return self.weight

    def integer(self):
        raise ValueError("an FP32 weight has no integer form")


WEIGHT_KINDS = ("fp32", "int8", "denseshift", "pot-zero")


def make_weight(kind: str, shape: tuple[int, ...], bits: int) -> nn.Module:
    """The weight parametrization ``kind`` (one of :data:`WEIGHT_KINDS`) for a weight of ``shape``."""
    if kind == "denseshift":
        return DenseShiftWeight(shape, bits)
    if kind == "pot-zero":
        return PowerOfTwoWithZeroWeight(shape, bits)
    if kind == "int8":
        return Int8Weight(shape)
    if kind == "fp32":
        return FloatWeight(shape)
    raise ValueError(f"unknown weight kind {kind!r}; expected one of {WEIGHT_KINDS}")
