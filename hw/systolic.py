"""A weight-stationary systolic array of shift (or int8-MAC) PEs.

Dataflow (rows = reduction dimension K of one pass, cols = output channels)::

        w_in[0]   w_in[1]   ...           weights shift down the columns (double-buffered)
          |         |
    a[0] ---+-------+--- ...              activation of row r broadcast to the whole row,
          PE(0,0)  PE(0,1)                delayed r // 2 cycles (input skew)
    a[1] ---+-------+--- ...
          PE(1,0)  PE(1,1)                partial sums flow down the columns, registered
          |         |                     after every second row
        out[0]    out[1]                  every column in lock-step: no output deskew

One activation vector ``a`` (``rows`` int8 values) entering at cycle ``t`` leaves as the output
vector ``out[c] = sum_r a[r] * w[r][c]`` at cycle ``t + latency``, with
``latency = (rows - 1) // 2 + 2`` (``quant.perf.array_latency``).

Broadcasting the activation along a row instead of passing it PE to PE removes the 9 pass-through
flip-flops of every PE and the whole output deskew (a triangle of partial-sum registers); on the
iCE40 each such register is a logic cell of its own. A fan-out of ``cols`` is nothing at these
clocks. Only the input skew remains, and since a partial sum passes two rows' adders per cycle
(``ROWS_PER_STAGE``; two short carry chains fit a 40 MHz iCE40 cycle easily) it is one cycle
per pair of rows: ``9 * sum(r // 2)`` flip-flops.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from quant.config import NPUConfig
from quant.perf import ROWS_PER_STAGE, array_latency

from .pe import make_pe

__all__ = ["SystolicArray"]


class SystolicArray(wiring.Component):
    """``rows x cols`` weight-stationary array with internal input skew.

    Parameters
    ----------
    config : NPUConfig
        Array size, weight width (PE flavour) and accumulator width.

    Members
    -------
    en : In(1)
        Advance the compute pipeline (products, partial sums, skew, valid). Low = stall.
    a_in : In(ArrayLayout(signed(8), rows))
        One activation vector (one row of A restricted to this pass's K slice).
    in_valid : In(1)
        ``a_in`` holds a vector to compute. Invalid slots still flow, their results are not valid.
    in_bank : In(1)
        Weight bank this vector is multiplied with.
    out : Out(ArrayLayout(signed(array_sum_width), cols))
        Result vector (sums of ``rows`` products), :attr:`latency` enabled cycles after its input.
    out_valid : Out(1)
        ``out`` holds the result of a valid input.
    w_in : In(ArrayLayout(unsigned(weight_bits), cols))
        One row of weight codes, entering at the top of every column.
    w_shift : In(1)
        Shift bank ``w_bank`` of every column down by one row. After ``rows`` shifts, the row
        shifted in first sits at the bottom: feed ``W[rows-1]`` first and ``W[0]`` last.
    w_bank : In(1)
        Bank being loaded; it must not be the bank any in-flight vector uses.
    w_row : In(range(rows))
        Direct-load arrays only (``direct=True``): ``w_shift`` writes ``w_in`` into the weights
        of array row ``w_row`` at once, effective for the activation that reaches that row from
        the next cycle on; ``in_bank`` and ``w_bank`` are unused. The user must not rewrite a row
        while a vector that needs its old weights has still to reach it.

    Parameters
    ----------
    direct : bool
        One weight register per PE, written row by row (see ``w_row``), instead of two banks
        loaded through per-bank shift chains. About 8 logic cells less per PE on the iCE40; the
        GEMM engine (hw/gemm.py) uses it and schedules the row writes between passes.
    """

    def __init__(self, config: NPUConfig, *, direct: bool = False):
        self.config = config
        self.direct = direct
        r, c = config.rows, config.cols
        extra = {"w_row": In(range(r))} if direct else {}
        super().__init__(
            {
                "en": In(1),
                "a_in": In(data.ArrayLayout(signed(8), r)),
                "in_valid": In(1),
                "in_bank": In(1),
                "out": Out(data.ArrayLayout(signed(config.array_sum_width), c)),
                "out_valid": Out(1),
                "w_in": In(data.ArrayLayout(unsigned(config.weight_bits), c)),
                "w_shift": In(1),
                "w_bank": In(1),
                **extra,
            }
        )

    @property
    def latency(self) -> int:
        """Enabled cycles from a vector at ``a_in`` to its result at ``out``."""
        return array_latency(self.config)

    @property
    def weight_load_cycles(self) -> int:
        """``w_shift`` cycles needed to fill one bank."""
        return self.config.rows

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        R, C = cfg.rows, cfg.cols

        G = ROWS_PER_STAGE
        # Rows go in groups of G: the partial sum passes the group's adders in one cycle and is
        # registered once, by its last row.
        D = self.direct
        pes = [
            [make_pe(cfg, r, registered=(r % G == G - 1 or r == R - 1), direct=D) for _ in range(C)] for r in range(R)
        ]
        for r in range(R):
            # Input skew: row r sees its activation (and the bank tag with it) r // G cycles late.
            a, bank = self.a_in[r], self.in_bank
            for i in range(r // G):
                a_d = Signal(signed(8), name=f"skew_a_{r}_{i}")
                with m.If(self.en):
                    m.d.sync += a_d.eq(a)
                if not D:
                    b_d = Signal(name=f"skew_b_{r}_{i}")
                    with m.If(self.en):
                        m.d.sync += b_d.eq(bank)
                    bank = b_d
                a = a_d
            w_here = Signal(name=f"w_write_{r}")
            m.d.comb += w_here.eq(self.w_shift & (self.w_row == r) if D else self.w_shift)
            for c in range(C):
                pe = pes[r][c]
                m.submodules[f"pe_{r}_{c}"] = pe
                m.d.comb += [pe.en.eq(self.en), pe.w_shift.eq(w_here), pe.w_bank.eq(self.w_bank)]
                # The activation is broadcast along the row.
                m.d.comb += [pe.a_in.eq(a), pe.bank_in.eq(bank)]
                # Weights come down the column (direct-load: to every row at once).
                if r == 0 or D:
                    m.d.comb += [pe.w_in[0].eq(self.w_in[c]), pe.w_in[1].eq(self.w_in[c])]
                else:
                    m.d.comb += pe.w_in.eq(pes[r - 1][c].w_out)
                # Partial sums come down the column.
                m.d.comb += pe.psum_in.eq(0 if r == 0 else pes[r - 1][c].psum_out)
        for c in range(C):
            m.d.comb += self.out[c].eq(pes[R - 1][c].psum_out)

        # Valid travels alongside as a plain delay line of the same latency.
        valid = self.in_valid
        for i in range(self.latency):
            v_d = Signal(name=f"valid_d{i}")
            with m.If(self.en):
                m.d.sync += v_d.eq(valid)
            valid = v_d
        m.d.comb += self.out_valid.eq(valid)
        return m
