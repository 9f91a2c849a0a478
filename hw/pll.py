"""PLLs that turn a board's oscillator into the design clock.

The divider arithmetic is plain Python (:func:`ice40_pll`, :func:`ecp5_pll`) so it is tested on its
own; :class:`PLLDomain` instantiates the primitive and drives the ``sync`` clock domain, held in
reset until the PLL locks.

iCE40 (``SB_PLL40_PAD``, simple feedback)::

    f_pfd = f_in / (DIVR + 1)          10 .. 133 MHz
    f_vco = f_pfd * (DIVF + 1)        533 .. 1066 MHz
    f_out = f_vco / 2**DIVQ            16 .. 275 MHz   (DIVQ 1..6)

ECP5 (``EHXPLLL``, feedback from CLKOP)::

    f_pfd = f_in / CLKI_DIV          3.125 .. 400 MHz
    f_out = f_pfd * CLKFB_DIV          3.125 .. 400 MHz
    f_vco = f_out * CLKOP_DIV          400 .. 800 MHz
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import ClockSignal, Instance, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.wiring import Out

__all__ = ["PLLParams", "ice40_pll", "ecp5_pll", "pll_for", "PLLDomain"]


@dataclass(frozen=True)
class PLLParams:
    """Dividers of one PLL setting and the clock it gives."""

    family: str
    f_in_mhz: float
    f_out_mhz: float
    params: dict[str, int]

    @property
    def f_vco_mhz(self) -> float:
        p = self.params
        if self.family == "ice40":
            return self.f_in_mhz / (p["DIVR"] + 1) * (p["DIVF"] + 1)
        return self.f_out_mhz * p["CLKOP_DIV"]


def _ice40_filter_range(f_pfd: float) -> int:
    # Loop-filter setting by PFD frequency (iCE40 sysCLOCK PLL design guide table).
    for i, top in enumerate((17, 26, 44, 66, 101), start=1):
        if f_pfd < top:
            return i
    return 6


def _pick(candidates, f_req: float, what: str):
    """The candidate closest to ``f_req`` without exceeding it (a faster clock could break timing)."""
    below = [c for c in candidates if c[0] <= f_req * (1 + 1e-9)]
    if not below:
        raise ValueError(f"{what}: no PLL setting gives {f_req:g} MHz or less")
    best = max(below, key=lambda c: (c[0], -c[1]))
    if best[0] < 0.95 * f_req:
        raise ValueError(f"{what}: the closest PLL output below {f_req:g} MHz is {best[0]:.3f} MHz (more than 5% off)")
    return best


def ice40_pll(f_in_mhz: float, f_out_mhz: float) -> PLLParams:
    """``SB_PLL40`` dividers for the fastest clock not above ``f_out_mhz`` (within 5%)."""
    if not 16 <= f_out_mhz <= 275:
        raise ValueError(f"iCE40 PLL output must be in 16..275 MHz, got {f_out_mhz:g}")
    cands = []
    for divr in range(16):
        f_pfd = f_in_mhz / (divr + 1)
        if not 10 <= f_pfd <= 133:
            continue
        for divf in range(128):
            f_vco = f_pfd * (divf + 1)
            if not 533 <= f_vco <= 1066:
                continue
            for divq in range(1, 7):
                f = f_vco / (1 << divq)
                if 16 <= f <= 275:
                    # prefer the lowest DIVR (highest PFD frequency: less jitter)
                    cands.append((f, divr, {"DIVR": divr, "DIVF": divf, "DIVQ": divq}))
    f, _, p = _pick(cands, f_out_mhz, f"iCE40 PLL from {f_in_mhz:g} MHz")
    p["FILTER_RANGE"] = _ice40_filter_range(f_in_mhz / (p["DIVR"] + 1))
    return PLLParams("ice40", f_in_mhz, round(f, 6), p)


def ecp5_pll(f_in_mhz: float, f_out_mhz: float) -> PLLParams:
    """``EHXPLLL`` dividers (CLKOP feedback) for the fastest clock not above ``f_out_mhz`` (within 5%)."""
    if not 3.125 <= f_out_mhz <= 400:
        raise ValueError(f"ECP5 PLL output must be in 3.125..400 MHz, got {f_out_mhz:g}")
    cands = []
    for clki in range(1, 129):
        f_pfd = f_in_mhz / clki
        if not 3.125 <= f_pfd <= 400:
            continue
        for clkfb in range(1, 81):
            f = f_pfd * clkfb
            if not 3.125 <= f <= 400:
                continue
            # the VCO as close to the middle of its range as the output divider allows
            ops = [d for d in range(1, 129) if 400 <= f * d <= 800]
            if ops:
                op = min(ops, key=lambda d: abs(f * d - 600))
                cands.append((f, clki, {"CLKI_DIV": clki, "CLKFB_DIV": clkfb, "CLKOP_DIV": op}))
    f, _, p = _pick(cands, f_out_mhz, f"ECP5 PLL from {f_in_mhz:g} MHz")
    p["CLKOP_CPHASE"] = p["CLKOP_DIV"] - 1
    return PLLParams("ecp5", f_in_mhz, round(f, 6), p)


def pll_for(family: str, f_in_mhz: float, f_out_mhz: float) -> PLLParams:
    if family == "ice40":
        return ice40_pll(f_in_mhz, f_out_mhz)
    if family == "ecp5":
        return ecp5_pll(f_in_mhz, f_out_mhz)
    raise ValueError(f"no PLL for FPGA family {family!r}")


class PLLDomain(wiring.Component):
    """Clocks the ``sync`` domain (defined by the parent) from the board oscillator through a PLL.

    Members
    -------
    locked : Out(1)
        The PLL has locked (``sync`` leaves reset a few cycles later).
    """

    def __init__(self, pll: PLLParams, clk_resource: str):
        self.pll = pll
        self.clk_resource = clk_resource
        super().__init__({"locked": Out(1)})

    def elaborate(self, platform):
        m = Module()
        clk_pll = Signal()
        m.d.comb += ClockSignal("sync").eq(clk_pll)
        lock = Signal()
        p = self.pll.params
        if self.pll.family == "ice40":
            # The iCEBreaker's oscillator pin is the PLL's own input pad: the PAD variant is
            # the one that can use it (the CORE variant would need it routed through fabric).
            pin = platform.request(self.clk_resource, 0, dir="-")
            m.submodules.pll = Instance(
                "SB_PLL40_PAD",
                p_FEEDBACK_PATH="SIMPLE",
                p_DIVR=p["DIVR"],
                p_DIVF=p["DIVF"],
                p_DIVQ=p["DIVQ"],
                p_FILTER_RANGE=p["FILTER_RANGE"],
                i_PACKAGEPIN=pin.io,
                i_RESETB=1,
                i_BYPASS=0,
                o_PLLOUTGLOBAL=clk_pll,
                o_LOCK=lock,
            )
        else:
            clk_in = platform.request(self.clk_resource, 0).i
            m.submodules.pll = Instance(
                "EHXPLLL",
                a_FREQUENCY_PIN_CLKI=f"{self.pll.f_in_mhz:g}",
                a_FREQUENCY_PIN_CLKOP=f"{self.pll.f_out_mhz:.6g}",
                p_PLLRST_ENA="DISABLED",
                p_INTFB_WAKE="DISABLED",
                p_STDBY_ENABLE="DISABLED",
                p_DPHASE_SOURCE="DISABLED",
                p_OUTDIVIDER_MUXA="DIVA",
                p_CLKI_DIV=p["CLKI_DIV"],
                p_CLKFB_DIV=p["CLKFB_DIV"],
                p_CLKOP_ENABLE="ENABLED",
                p_CLKOP_DIV=p["CLKOP_DIV"],
                p_CLKOP_CPHASE=p["CLKOP_CPHASE"],
                p_CLKOP_FPHASE=0,
                p_FEEDBK_PATH="CLKOP",
                i_CLKI=clk_in,
                i_CLKFB=clk_pll,
                i_RST=0,
                i_STDBY=0,
                i_PHASESEL0=0,
                i_PHASESEL1=0,
                i_PHASEDIR=1,
                i_PHASESTEP=1,
                i_PHASELOADREG=1,
                i_PLLWAKESYNC=0,
                i_ENCLKOP=0,
                o_CLKOP=clk_pll,
                o_LOCK=lock,
            )
        # No clock constraint here: nextpnr derives the PLL output's frequency from the oscillator
        # pin's constraint and the dividers ("Derived frequency constraint ... for net clk"), and
        # a net name given here does not survive Yosys' flattening.
        m.submodules.reset_sync = ResetSynchronizer(~lock, domain="sync")
        m.d.comb += self.locked.eq(lock)
        return m
