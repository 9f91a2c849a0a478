"""SPEC §1 in gateware: the one rounding rule and saturation, for Amaranth values.

The RTL counterparts of :func:`quant.fixed.rshift_round` and :func:`quant.fixed.sat`; every
constant-shift rescale in the gateware goes through these (``sat_narrow`` and ``round_sat`` are
the same functions built with fewer logic cells, for the gate unit's wide products).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed

from quant.fixed import sat_bounds

__all__ = ["rshift_round_const", "sat", "sat_narrow", "round_sat"]


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


def sat_narrow(m: Module, value, bits: int, name: str) -> Signal:
    """``sat(value, bits)`` (SPEC §1) for a signed ``value``, by a sign-extension check instead of
    two comparisons: the value fits iff its bits from ``bits - 1`` up are all equal (a small LUT
    tree on iCE40 rather than two carry chains as wide as ``value``)."""
    value = value.as_signed()
    out = Signal(signed(bits), name=name)
    if len(value) <= bits:
        m.d.comb += out.eq(value)
        return out
    top = value[bits - 1 :]
    fits = (top == 0) | (top == (1 << len(top)) - 1)
    lo, hi = sat_bounds(bits)
    m.d.comb += out.eq(Mux(fits, value[:bits], Mux(value[-1], lo, hi)))
    return out


def round_sat(m: Module, value, shift: int, bits: int, name: str) -> Signal:
    """``sat(rshift_round(value, shift), bits)`` for a signed ``value`` and a constant ``shift >= 1``:
    ``(value + 2^(shift-1)) >> shift`` equals ``(value[shift-1:] + 1) >> 1``, so the adder is only as
    wide as the bits that survive the shift (the low bits can never carry)."""
    value = value.as_signed()
    if shift == 0:
        return sat_narrow(m, value, bits, name)
    t = value[shift - 1 :].as_signed()
    r = Signal(signed(len(t)), name=f"{name}_r")
    m.d.comb += r.eq((t + 1) >> 1)
    return sat_narrow(m, r, bits, name)
