"""A whole LSTM/GRU layer in hardware, sequenced without the host: a simple reference engine.

:class:`SequentialRNNLayer` computes the gate accumulators with one sequential multiply-free
shift-add MAC (or an int8 multiply in baseline mode), feeds them to a :class:`~hw.rnn.GateUnit`,
writes each new ``h`` into the other half of a ping-pong state buffer, and loops over the hidden
units and the time steps by itself. It is slow (one MAC per two cycles) and exists to verify the
gate unit and the time-step sequencing bit for bit against :func:`quant.rnn.rnn_layer` over long
sequences; the fast path uses the systolic array for the products.

For step ``t``, unit ``j`` and accumulator slot ``g`` (LSTM i, f, g, o; GRU z, r, nx, nh)::

    acc[g] = b[g, j] + Σ_k W[wrow(g, j), k] x_t[k] + Σ_k U[urow(g, j), k] h_{t-1}[k]

where LSTM uses ``wrow = urow = g*H + j`` and GRU uses rows ``g*H + j`` for z and r, only ``W`` row
``2H + j`` for nx and only ``U`` row ``2H + j`` for nh (so the GRU's ``r`` gates ``U_n h + b_nh``).

Members
-------
w_en : In(1), w_addr : In(addr_width), w_data : In(32)
    Host write port for weights, biases, inputs, the initial ``h`` and the gate unit's parameters;
    addresses from the ``*_writes`` methods.
start : In(1)
    Pulse to run ``n_steps`` steps of a layer with ``n_in`` inputs and ``n_hidden`` units (sampled
    at the pulse; each at most the build-time maximum).
n_steps, n_in, n_hidden : In
busy : Out(1)
o_stream : Out(stream.Signature(StructLayout({"step", "unit", "h", "c"})))
    Every new ``h`` (and LSTM ``c``) as it is produced, step by step, unit by unit.
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from quant import codes
from quant.config import NPUConfig
from quant.pwl import PWLTable
from quant.rnn import CELL_KINDS, RNNParams, accumulator_ranges

from .rnn import GateUnit

__all__ = ["SequentialRNNLayer"]

R_W, R_U, R_B, R_X, R_H, R_GATE = range(6)


def _bits(n: int) -> int:
    return max(1, (n - 1).bit_length())


class SequentialRNNLayer(wiring.Component):
    """Sequential reference LSTM/GRU layer (see the module docstring).

    Parameters
    ----------
    config : NPUConfig
        Weight width, accumulator width, PWL and cell formats.
    kind : "lstm" or "gru"
    max_in, max_hidden, max_steps : int
        Build-time maxima of the input size, hidden size and sequence length.
    tables : dict of PWLTable, optional
        Build-time PWL tables (otherwise written by the host).
    """

    def __init__(
        self,
        config: NPUConfig,
        kind: str = "lstm",
        *,
        max_in: int = 8,
        max_hidden: int = 64,
        max_steps: int = 64,
        tables: dict[str, PWLTable] | None = None,
    ):
        if kind not in CELL_KINDS:
            raise ValueError(f"kind must be one of {CELL_KINDS}, got {kind!r}")
        for name, v in (("max_in", max_in), ("max_hidden", max_hidden), ("max_steps", max_steps)):
            if not 1 <= v <= 4096:
                raise ValueError(f"{name} must be in [1, 4096], got {v}")
        self.config, self.kind = config, kind
        self.max_in, self.max_hidden, self.max_steps = max_in, max_hidden, max_steps
        self.G = 4 if kind == "lstm" else 3
        self.gate = GateUnit(config, kind, max_hidden, tables=tables)
        self.acc_width = self.gate.acc_width
        self.offset_width = max(
            _bits(self.G * max_hidden * max_in),
            _bits(self.G * max_hidden * max_hidden),
            _bits(max_steps * max_in),
            self.gate.addr_width,
            _bits(4 * max_hidden),
        )
        self.addr_width = 3 + self.offset_width
        out = data.StructLayout(
            {"step": unsigned(_bits(max_steps)), "unit": unsigned(_bits(max_hidden)), "h": signed(8), "c": signed(16)}
        )
        super().__init__(
            {
                "w_en": In(1),
                "w_addr": In(self.addr_width),
                "w_data": In(32),
                "start": In(1),
                "n_steps": In(range(max_steps + 1)),
                "n_in": In(range(max_in + 1)),
                "n_hidden": In(range(max_hidden + 1)),
                "busy": Out(1),
                "o_stream": Out(stream.Signature(out)),
            }
        )

    # -- host-side address map ------------------------------------------------------------------

    def _a(self, region: int, offset: int) -> int:
        return (region << self.offset_width) | offset

    def param_writes(self, p: RNNParams) -> list[tuple[int, int]]:
        """Writes loading a layer's weights, biases, requant parameters and PWL tables."""
        if p.kind != self.kind:
            raise ValueError(f"{p.kind} parameters for a {self.kind} layer")
        H, I_ = p.hidden, p.inputs
        if H > self.max_hidden or I_ > self.max_in:
            raise ValueError(f"layer {I_}x{H} exceeds the build maxima {self.max_in}x{self.max_hidden}")
        if p.weight_bits != self.config.weight_bits:
            raise ValueError(f"{p.weight_bits}-bit weights for a {self.config.weight_bits}-bit build")
        Hm, Im = self.max_hidden, self.max_in
        out = []
        for blk in range(self.G):
            for j in range(H):
                for k in range(I_):
                    out.append((self._a(R_W, (blk * Hm + j) * Im + k), int(p.W[blk * H + j, k])))
                for k in range(H):
                    out.append((self._a(R_U, (blk * Hm + j) * Hm + k), int(p.U[blk * H + j, k])))
        lim = 1 << (self.acc_width - 1)
        # the accumulator wraps silently: refuse a layer whose exact range (bias included) does not fit
        lo, hi = accumulator_ranges(p)
        for g in range(4):
            for j in range(H):
                if not -lim <= int(p.b[g, j]) < lim:
                    raise ValueError(f"bias {p.b[g, j]} does not fit the {self.acc_width}-bit accumulator")
                if lo[g, j] < -lim or hi[g, j] >= lim:
                    raise ValueError(
                        f"accumulator overflow: slot {g} of unit {j} can reach [{int(lo[g, j])}, {int(hi[g, j])}] "
                        f"(bias and weights), beyond the {self.acc_width}-bit accumulator's [{-lim}, {lim - 1}] "
                        "(raise max_k)"
                    )
                out.append((self._a(R_B, g * Hm + j), int(p.b[g, j]) & 0xFFFFFFFF))
        out += [(self._a(R_GATE, a), v) for a, v in self.gate.mn_writes(p.M, p.n)]
        out += [(self._a(R_GATE, a), v) for a, v in self.gate.table_writes(p.tables)]
        return out

    def input_writes(self, xs, h0=None, c0=None) -> list[tuple[int, int]]:
        """Writes loading a sequence ``xs`` (T, I) int8 and the initial states (default zero)."""
        xs = np.asarray(xs)
        T, I_ = xs.shape
        if T > self.max_steps or I_ > self.max_in:
            raise ValueError(f"sequence {T}x{I_} exceeds the build maxima {self.max_steps}x{self.max_in}")
        out = [(self._a(R_X, t * self.max_in + k), int(xs[t, k]) & 0xFF) for t in range(T) for k in range(I_)]
        if h0 is not None:
            out += [(self._a(R_H, j), int(v) & 0xFF) for j, v in enumerate(h0)]
        if c0 is not None:
            out += [(self._a(R_GATE, a), v) for a, v in self.gate.c_writes(c0)]
        return out

    def state_reset_writes(self, hidden: int) -> list[tuple[int, int]]:
        """Writes zeroing ``h`` (bank 0) and, for LSTM, ``c`` of units ``0 .. hidden - 1``."""
        out = [(self._a(R_H, j), 0) for j in range(hidden)]
        if self.kind == "lstm":
            out += [(self._a(R_GATE, a), v) for a, v in self.gate.c_writes([0] * hidden)]
        return out

    # -- gateware -------------------------------------------------------------------------------

    def elaborate(self, platform):
        m = Module()
        m.submodules.gate = gate = self.gate
        cfg, G = self.config, self.G
        Hm, Im, Tm = self.max_hidden, self.max_in, self.max_steps
        wb, aw = cfg.weight_bits, self.acc_width
        gru = self.kind == "gru"

        m.submodules.wmem = wmem = Memory(shape=unsigned(wb), depth=G * Hm * Im, init=[])
        m.submodules.umem = umem = Memory(shape=unsigned(wb), depth=G * Hm * Hm, init=[])
        m.submodules.bmem = bmem = Memory(shape=signed(32), depth=4 * Hm, init=[])
        m.submodules.xmem = xmem = Memory(shape=signed(8), depth=Tm * Im, init=[])
        m.submodules.hmem = hmem = Memory(shape=signed(8), depth=2 * Hm, init=[])
        w_wp, w_rp = wmem.write_port(), wmem.read_port()
        u_wp, u_rp = umem.write_port(), umem.read_port()
        b_wp, b_rp = bmem.write_port(), bmem.read_port()
        x_wp, x_rp = xmem.write_port(), xmem.read_port()
        h_wp, h_rp, hj_rp = hmem.write_port(), hmem.read_port(), hmem.read_port()

        region = self.w_addr[self.offset_width :]
        offset = self.w_addr[: self.offset_width]
        for wp, r in ((w_wp, R_W), (u_wp, R_U), (b_wp, R_B), (x_wp, R_X)):
            m.d.comb += [wp.addr.eq(offset), wp.data.eq(self.w_data), wp.en.eq(self.w_en & (region == r))]
        m.d.comb += [
            gate.p_en.eq(self.w_en & (region == R_GATE)),
            gate.p_addr.eq(offset),
            gate.p_data.eq(self.w_data),
        ]

        # run registers
        T = Signal.like(self.n_steps)
        I_ = Signal.like(self.n_in)
        H = Signal.like(self.n_hidden)
        t = Signal(range(Tm + 1))
        j = Signal(range(Hm + 1))
        g = Signal(3)
        k = Signal(range(max(Im, Hm) + 1))
        bank = Signal()
        acc = [Signal(signed(aw), name=f"acc{i}") for i in range(4)]
        acc_cur = Signal(signed(aw))
        outs_done = Signal(range(Hm + 1))  # gate outputs received in this step
        h_j = Signal(signed(8))
        pend = Signal()  # a read issued last cycle: its data is on the read ports now

        # gate-block row of each slot: W block, U block (None = not used)
        w_blk = [0, 1, 2, 3] if not gru else [0, 1, 2, None]
        u_blk = [0, 1, 2, 3] if not gru else [0, 1, None, 2]

        def blk_of(table):
            return Mux(g == 0, table[0] or 0, Mux(g == 1, table[1] or 0, Mux(g == 2, table[2] or 0, table[3] or 0)))

        use_w = Signal()
        use_u = Signal()
        m.d.comb += [
            use_w.eq(Mux(g == 3, int(w_blk[3] is not None), Mux(g == 2, int(w_blk[2] is not None), 1))),
            use_u.eq(Mux(g == 3, int(u_blk[3] is not None), Mux(g == 2, int(u_blk[2] is not None), 1))),
        ]
        wblk = Signal(2)
        ublk = Signal(2)
        m.d.comb += [wblk.eq(blk_of(w_blk)), ublk.eq(blk_of(u_blk))]

        m.d.comb += [
            w_rp.addr.eq((wblk * Hm + j) * Im + k),
            x_rp.addr.eq(t * Im + k),
            u_rp.addr.eq((ublk * Hm + j) * Hm + k),
            h_rp.addr.eq(bank * Hm + k),
            hj_rp.addr.eq(bank * Hm + j),
            b_rp.addr.eq(g * Hm + j),
        ]

        def product(code, a):
            """Weight code times activation: shift and conditional negate, or int8 multiply."""
            if wb == codes.INT8_BITS:
                return code.as_signed() * a
            sign = code[wb - 1]
            mag = a << code[: wb - 1]
            return Mux(sign, -mag, mag)

        # gate unit output -> o_stream, h into the other bank
        go = gate.o_stream
        m.d.comb += [
            self.o_stream.valid.eq(go.valid),
            go.ready.eq(self.o_stream.ready),
            self.o_stream.payload.step.eq(t),
            self.o_stream.payload.unit.eq(go.payload.unit),
            self.o_stream.payload.h.eq(go.payload.h),
            self.o_stream.payload.c.eq(go.payload.c),
        ]
        got_out = go.valid & self.o_stream.ready
        with m.If(got_out):
            m.d.sync += outs_done.eq(outs_done + 1)
        host_h = self.w_en & (region == R_H)
        m.d.comb += [
            h_wp.en.eq(got_out | host_h),
            h_wp.addr.eq(Mux(got_out, (~bank) * Hm + go.payload.unit, offset)),
            h_wp.data.eq(Mux(got_out, go.payload.h, self.w_data[:8])),
        ]

        gi = gate.i_stream
        m.d.comb += [gi.payload.unit.eq(j), gi.payload.h.eq(h_j)]
        m.d.comb += [gi.payload.acc[i].eq(acc[i]) for i in range(4)]

        with m.FSM(name="seq"):
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [T.eq(self.n_steps), I_.eq(self.n_in), H.eq(self.n_hidden), t.eq(0), bank.eq(0)]
                    m.d.sync += [j.eq(0), g.eq(0), k.eq(0), outs_done.eq(0)]
                    m.next = "STEP"
            with m.State("STEP"):
                m.d.comb += self.busy.eq(1)
                with m.If(t == T):
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [j.eq(0), g.eq(0), k.eq(0), outs_done.eq(0)]
                    m.next = "BIAS"
            with m.State("BIAS"):  # b_rp / hj_rp addresses valid now, data next cycle
                m.d.comb += self.busy.eq(1)
                m.next = "BIAS2"
            with m.State("BIAS2"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [acc_cur.eq(b_rp.data), k.eq(0), h_j.eq(hj_rp.data), pend.eq(0)]
                m.next = "W"
            # one MAC per cycle: the address of term k goes out while term k - 1's data comes back
            for phase, use, limit, rp_w, rp_a, nxt in (
                ("W", use_w, I_, w_rp, x_rp, "U"),
                ("U", use_u, H, u_rp, h_rp, "SLOT_DONE"),
            ):
                with m.State(phase):
                    m.d.comb += self.busy.eq(1)
                    more = Signal(name=f"{phase.lower()}_more")
                    m.d.comb += more.eq(use & (k < limit))
                    m.d.sync += pend.eq(more)
                    with m.If(more):
                        m.d.sync += k.eq(k + 1)
                    with m.If(pend):
                        m.d.sync += acc_cur.eq(acc_cur + product(rp_w.data, rp_a.data))
                    with m.If(~more & ~pend):
                        m.d.sync += k.eq(0)
                        m.next = nxt
            with m.State("SLOT_DONE"):
                m.d.comb += self.busy.eq(1)
                with m.Switch(g):
                    for i in range(4):
                        with m.Case(i):
                            m.d.sync += acc[i].eq(acc_cur)
                m.d.sync += [g.eq(g + 1), k.eq(0)]
                with m.If(g == 3):
                    m.next = "SEND"
                with m.Else():
                    m.next = "BIAS"
            with m.State("SEND"):
                m.d.comb += [self.busy.eq(1), gi.valid.eq(1)]
                with m.If(gi.ready):
                    m.d.sync += [j.eq(j + 1), g.eq(0)]
                    with m.If(j + 1 == H):
                        m.next = "DRAIN"
                    with m.Else():
                        m.next = "BIAS"
            with m.State("DRAIN"):  # wait for every h of this step before the next one reads them
                m.d.comb += self.busy.eq(1)
                with m.If((outs_done == H) & ~gate.busy):
                    m.d.sync += [t.eq(t + 1), bank.eq(~bank)]
                    m.next = "STEP"
        return m
