"""Linear and 2-D convolution layers over a weight parametrization (:mod:`quant.train.weights`).

:class:`DenseShiftLinear` and :class:`DenseShiftConv2d` are the DenseShift layers; the baselines are
the same classes with another weight kind (``QuantLinear(..., kind="int8")``). No layer has a bias:
the BatchNorm that follows provides it (and absorbs DenseShift's global scale).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .weights import make_weight

__all__ = ["QuantLinear", "QuantConv2d", "DenseShiftLinear", "DenseShiftConv2d"]


class QuantLinear(nn.Module):
    """``y = x @ W.T`` with ``W`` from the parametrization ``kind`` (``[out, in]``, as torch)."""

    def __init__(self, in_features: int, out_features: int, *, kind: str = "denseshift", bits: int = 3):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = make_weight(kind, (out_features, in_features), bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight())

    def integer_forward(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The same layer with weights ``v`` (exact for integer tensors held in float64)."""
        return F.linear(x, v)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, weight={self.weight.kind}"


class QuantConv2d(nn.Module):
    """Stride-1 ``k x k`` convolution (NCHW, as torch) with zero padding ``padding``."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, padding: int = 1, *, kind="denseshift", bits=3
    ):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.padding = kernel_size, padding
        self.weight = make_weight(kind, (out_channels, in_channels, kernel_size, kernel_size), bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight(), padding=self.padding)

    def integer_forward(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, v, padding=self.padding)

    def extra_repr(self) -> str:
        k = self.kernel_size
        return f"{self.in_channels}, {self.out_channels}, {k}x{k}, padding={self.padding}, weight={self.weight.kind}"


class DenseShiftLinear(QuantLinear):
    """Linear layer with DenseShift weights ``±2**S`` of ``bits`` in {2, 3, 4}."""

    def __init__(self, in_features: int, out_features: int, bits: int = 3):
        super().__init__(in_features, out_features, kind="denseshift", bits=bits)


class DenseShiftConv2d(QuantConv2d):
    """2-D convolution with DenseShift weights ``±2**S`` of ``bits`` in {2, 3, 4}."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, padding: int = 1, bits: int = 3):
        super().__init__(in_channels, out_channels, kernel_size, padding, kind="denseshift", bits=bits)
