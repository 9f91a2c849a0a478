"""SPEC §1 on int64 torch tensors: the one torch mirror of :mod:`quant.fixed` used by training.

The exact (integer) training paths must agree bit for bit with the golden model; they call these
instead of writing the rounding again.
"""

from __future__ import annotations

import torch

__all__ = ["rshift_round_t", "sat_t"]


def rshift_round_t(x: torch.Tensor, n) -> torch.Tensor:
    """:func:`quant.fixed.rshift_round` on int64 tensors (``n`` an int or an int64 tensor, >= 0)."""
    if isinstance(n, int):
        return x if n == 0 else torch.bitwise_right_shift(x + (1 << (n - 1)), n)
    half = torch.where(n > 0, torch.bitwise_left_shift(torch.ones_like(n), (n - 1).clamp_min(0)), 0)
    return torch.bitwise_right_shift(x + half, n)


def sat_t(x: torch.Tensor, bits: int) -> torch.Tensor:
    """:func:`quant.fixed.sat` on int64 tensors."""
    return torch.clamp(x, -(1 << (bits - 1)), (1 << (bits - 1)) - 1)
