"""int8 activation fake-quantization: symmetric, one scale per tensor, straight-through rounding."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ActQuant", "round_ste"]


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` forward, identity gradient."""
    return x + (torch.round(x) - x).detach()


class ActQuant(nn.Module):
    """``q = clamp(round(x / s), lo, 127)``, returned as ``q * s``; ``s = running_max / 127``.

    The scale follows an exponential moving average of the batch maximum of ``|x|`` while training
    and not :attr:`frozen`; ``lo`` is 0 after a ReLU (the fused-ReLU requantizer) and -128 otherwise.
    """

    def __init__(self, relu: bool, momentum: float = 0.1):
        super().__init__()
        self.relu = relu
        self.momentum = momentum
        self.frozen = False
        self.register_buffer("running_max", torch.zeros(()))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    @property
    def lo(self) -> int:
        return 0 if self.relu else -128

    @property
    def scale(self) -> float:
        if not bool(self.initialized):
            raise ValueError("ActQuant: the scale has not been observed yet (run a training batch first)")
        return float(self.running_max) / 127

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and not self.frozen:
            with torch.no_grad():
                m = x.detach().abs().max().clamp_min(1e-6)
                if bool(self.initialized):
                    self.running_max.mul_(1 - self.momentum).add_(self.momentum * m)
                else:
                    self.running_max.copy_(m)
                    self.initialized.fill_(True)
        s = self.scale
        q = torch.clamp(round_ste(x / s), self.lo, 127)
        return q * s

    def extra_repr(self) -> str:
        return f"relu={self.relu}, frozen={self.frozen}"
