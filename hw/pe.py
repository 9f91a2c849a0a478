"""Processing elements of the weight-stationary systolic array.

Two PEs share one interface so the same array generator builds either:

* :class:`ShiftPE` -- DenseShift (SPEC §2): the weight is a code ``sign | k`` and the product is
  ``sign ? -(a << k) : (a << k)``. No multiplier.
* :class:`IntMacPE` -- the int8 baseline: the weight is an int8 and the product is ``a * w``.

Each PE holds two weight banks. Weights are shifted down a column into one bank (``w_shift`` with
``w_bank`` selecting it) while the other bank serves the activations, and every activation carries
the bank it must meet (``bank_in``), so a new tile's weights take effect exactly with its first
activation, wavefront by wavefront, with no pipeline drain.

The activation and its bank tag are broadcast to every PE of an array row (hw/systolic.py), so a
PE does not pass them on: only the partial sum and the weight chain connect neighbours.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from quant.config import NPUConfig

__all__ = ["PE", "ShiftPE", "IntMacPE", "make_pe"]


def _require_config(config) -> NPUConfig:
    if not isinstance(config, NPUConfig):
        raise TypeError(f"expected an NPUConfig, got {type(config).__name__}")
    return config


class PE(wiring.Component):
    """Common interface of the array's processing elements.

    Parameters
    ----------
    config : NPUConfig
        Supplies the weight width and the product range.
    row : int
        Row of the PE in the array. The partial sum entering row ``r`` holds ``r`` products and
        the one leaving it ``r + 1``, so each row is only as wide as it must be; the full
        accumulator lives once per column, outside the array.
    direct : bool
        *Direct-load* weights (the GEMM engine's array): one weight register, written from
        ``w_in[0]`` while ``w_shift`` is high (the array decodes the row), and ``bank_in``,
        ``w_bank`` and ``w_out`` unused. No second bank and no bank multiplexer: on the iCE40
        that is 5 LUTs and 3 flip-flops less per PE. The engine reloads a row between the last
        vector of one pass and the first of the next reaching it (docs/architecture.md).
    registered : bool
        Register ``psum_out`` (the default). Without the register the PE adds its product to
        ``psum_in`` combinationally, for the array to chain two rows' adders in one cycle.
    psum_width : int, optional
        Width of both ``psum_in`` and ``psum_out``, overriding the per-row widths. For area
        comparisons of PE flavours at one accumulator width (``bench/area.py``); it must hold
        ``partial_sum_width(row + 1)``.

    Members
    -------
    en : In(1)
        Compute enable: the product-term and partial-sum registers advance only when high
        (a stall freezes the compute pipeline; weight shifting is independent).
    a_in : In(signed(8))
        Activation, shared by the whole array row.
    bank_in : In(1)
        Weight bank the activation must be multiplied with.
    psum_in : In(signed(partial_sum_width(row)))
        Partial sum from the PE above.
    psum_out : Out(signed(partial_sum_width(row + 1)))
        ``psum_in + a * w[bank]`` to the PE below, for the activation that entered one cycle
        before ``psum_in`` (see :attr:`latency`).
    w_in : In(ArrayLayout(weight_bits, 2))
        Weight code of each bank from the PE above (the column's loader at the top row).
    w_shift : In(1)
        Shift the weight chain of bank ``w_bank`` down by one PE (direct-load: write the weight).
    w_bank : In(1)
        Bank being loaded.
    w_out : Out(ArrayLayout(weight_bits, 2))
        This PE's code in each bank, to the PE below. One chain per bank: a bank register takes
        its input straight from the register above, with no bank multiplexer in between (on the
        iCE40 such a multiplexer would cost a logic cell per weight bit).
    """

    def __init__(
        self,
        config: NPUConfig,
        row: int | None = None,
        psum_width: int | None = None,
        *,
        registered: bool = True,
        direct: bool = False,
    ):
        _require_config(config)
        self.config = config
        self.registered = registered
        self.direct = direct
        #: Cycles from ``a_in`` to the ``psum_out`` that includes its product.
        self.latency = 2 if registered else 1
        self.row = config.rows - 1 if row is None else row
        if not 0 <= self.row < config.max_k:
            raise ValueError(f"PE row {self.row} out of range")
        wb = config.weight_bits
        w_in, w_out = config.partial_sum_width(self.row), config.partial_sum_width(self.row + 1)
        if psum_width is not None:
            if psum_width < w_out:
                raise ValueError(f"psum_width {psum_width} cannot hold a sum of {self.row + 1} products ({w_out} bits)")
            w_in = w_out = psum_width
        super().__init__(
            {
                "en": In(1),
                "a_in": In(signed(8)),
                "bank_in": In(1),
                "psum_in": In(signed(w_in)),
                "psum_out": Out(signed(w_out)),
                "w_in": In(data.ArrayLayout(unsigned(wb), 2)),
                "w_shift": In(1),
                "w_bank": In(1),
                "w_out": Out(data.ArrayLayout(unsigned(wb), 2)),
            }
        )

    def term(self, m: Module, a, code):
        """``(t, cin)`` with ``t + cin == a * weight(code)``, computed in the first pipeline stage."""
        raise NotImplementedError

    def elaborate(self, platform):
        m = Module()
        wb = self.config.weight_bits

        code = Signal(unsigned(wb))
        if self.direct:
            with m.If(self.w_shift):
                m.d.sync += code.eq(self.w_in[0])
        else:
            banks = [Signal(unsigned(wb), name=f"w_bank{i}") for i in range(2)]
            for i in range(2):
                m.d.comb += self.w_out[i].eq(banks[i])
                with m.If(self.w_shift & (self.w_bank == i)):
                    m.d.sync += banks[i].eq(self.w_in[i])
            m.d.comb += code.eq(Mux(self.bank_in, banks[1], banks[0]))
        t, cin = self.term(m, self.a_in, code)
        # Two stages: the product term is registered (on iCE40 the register shares the logic cell
        # of the LUT that computes it, so the stage costs no extra cells), then added to the
        # partial sum arriving from above one cycle later (the row below sees its activation one
        # cycle after this row: the array skews the rows' inputs).
        t_q = Signal(signed(len(t)))
        cin_q = Signal()
        with m.If(self.en):
            m.d.sync += [t_q.eq(t), cin_q.eq(cin)]
        if self.registered:
            with m.If(self.en):
                m.d.sync += self.psum_out.eq(self.psum_in + t_q + cin_q)
        else:
            m.d.comb += self.psum_out.eq(self.psum_in + t_q + cin_q)
        return m


class ShiftPE(PE):
    """DenseShift PE: ``psum + (sign ? -(a << k) : (a << k))`` with no multiplier (SPEC §2)."""

    def __init__(self, config: NPUConfig, row: int | None = None, psum_width: int | None = None, **kw):
        if _require_config(config).pe_kind != "shift":
            raise ValueError(f"ShiftPE needs 2-, 3- or 4-bit weights, got {config.weight_bits}-bit")
        super().__init__(config, row, psum_width, **kw)

    def term(self, m: Module, a, code):
        wb = self.config.weight_bits
        sign = code[wb - 1]
        shifted = Signal(signed(self.config.product_width))
        m.d.comb += shifted.eq(a << code[: wb - 1])
        # Negation as ones' complement plus a carry-in: -(x) == ~x + 1. No negator, one adder.
        flipped = Signal(signed(self.config.product_width))
        m.d.comb += flipped.eq(shifted ^ sign.replicate(len(shifted)))
        return flipped, sign


class IntMacPE(PE):
    """int8 baseline PE: ``psum + a * w`` with a multiplier."""

    def __init__(self, config: NPUConfig, row: int | None = None, psum_width: int | None = None, **kw):
        if _require_config(config).pe_kind != "int8":
            raise ValueError(f"IntMacPE needs 8-bit weights, got {config.weight_bits}-bit")
        super().__init__(config, row, psum_width, **kw)

    def term(self, m: Module, a, code):
        p = Signal(signed(self.config.product_width))
        m.d.comb += p.eq(a * code.as_signed())
        return p, 0


def make_pe(
    config: NPUConfig,
    row: int | None = None,
    psum_width: int | None = None,
    *,
    registered: bool = True,
    direct: bool = False,
) -> PE:
    """The PE flavour that ``config`` asks for."""
    cls = ShiftPE if config.pe_kind == "shift" else IntMacPE
    return cls(config, row, psum_width, registered=registered, direct=direct)
