"""SPEC §1 in gateware: the one rounding rule and saturation, for Amaranth values.

The RTL counterparts of :func:`quant.fixed.rshift_round` and :func:`quant.fixed.sat`; every
constant-shift rescale in the gateware goes through these two.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed

from quant.fixed import sat_bounds

__all__ = ["rshift_round_const", "sat"]


def rshift_round_const(value, n: int):
    """``(value + 2**(n-1)) >> n`` for a constant ``n >= 1`` (arithmetic shift); ``value`` for ``n = 0``."""
    if n < 0:
        raise ValueError(f"rshift_round_const: shift must be >= 0, got {n}")
    return value if n == 0 else (value + (1 << (n - 1))) >> n


def sat(m: Module, value, bits: int, name: str) -> Signal:
    """A ``bits``-wide signed signal holding ``value`` clamped to its range (combinational)."""
    lo, hi = sat_bounds(bits)
    out = Signal(signed(bits), name=name)
    m.d.comb += out.eq(Mux(value > hi, hi, Mux(value < lo, lo, value)))
    return out
