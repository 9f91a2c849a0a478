"""The RNN gate unit: requantization, PWL activations and the LSTM/GRU state update (SPEC §4).

It takes the four gate accumulators of one hidden unit per transfer, exactly as the golden model's
:func:`quant.rnn.lstm_pointwise` / :func:`quant.rnn.gru_pointwise` after
:func:`quant.rnn.requant_gates` define them, and returns that unit's new ``h`` (and ``c``).

Datapath, time-multiplexed per hidden unit (one transfer in flight at a time; a new transfer is
accepted every :attr:`GateUnit.cycles_per_unit` cycles, 35 for LSTM and 39 for GRU with 16-piece
tables, 25 for the NPU's ``z_in`` LSTM, when the output is taken at once):

1. requantize the four accumulators to Q3.12 (one ``acc x M`` multiplier, variable rounding shift,
   16-bit saturation, in short pipeline steps for iCE40 timing), with ``(M, n)`` of row
   ``(slot, unit)`` read from a small memory;
2. the activations through one shared :class:`~hw.pwl.PWLUnit` holding the tables σ (slot 0),
   tanh (slot 1) and, for LSTM, tanh of the cell format (slot 2), issued back to back (LSTM in
   the order f, i, g, o); the PWL's output is always taken, so it never stalls;
3. the state update through one shared 16 x 16 multiplier (one SB_MAC16 on iCE40):
   LSTM ``f*c`` and ``g*i`` as f and g come out of the PWL (input a is always the PWL output,
   input b one register holding c, then i, then o), ``c'`` and ``tanh_c(c')`` issued at once,
   ``o*tanh_c(c')``;
   GRU ``r*b``, ``n = tanh(a + ...)``, ``z*n``, ``z*h``, then
   ``h' = sat(rshift_round(n 2^15 + (z h) 2^8 - z n, 23), 8)`` (equal to the golden
   ``n 2^15 + z (h 2^8 - n)``, without an 18-bit operand).
   The cell state lives in a memory indexed by hidden unit.

Members
-------
i_stream : In(stream.Signature(StructLayout({"unit": unsigned(uw), "acc": ArrayLayout(signed(acc_width), 4), "h": signed(8)})))
    Hidden unit ``j``, its accumulators (LSTM: i, f, g, o; GRU: z, r, nx, nh; bias included) and,
    for GRU, its previous ``h`` (ignored by LSTM).
o_stream : Out(stream.Signature(StructLayout({"unit": unsigned(uw), "h": signed(8), "c": signed(16)})))
    The unit's new ``h`` (int8 Q0.7) and, for LSTM, its new cell ``c`` (the cell memory is updated
    too; 0 for GRU).
p_en : In(1), p_addr : In(addr_width), p_data : In(32) (In(16) with ``z_in``)
    Parameter write port: requant ``(M, n)`` per row, PWL tables, and cell-state words; addresses
    from :meth:`GateUnit.mn_writes`, :meth:`GateUnit.table_writes`, :meth:`GateUnit.c_writes`.
    Write only while the unit is idle.
busy : Out(1)
    A transfer is being processed.

With ``z_in=True`` (the NPU's LSTM path, where the array's requantizer already made the Q3.12
pre-activations) the transfer carries the four ``z`` (int16) instead of accumulators, and a
``first`` bit that starts the unit from ``c = 0`` (the first step of a sequence); the requant stage
and its ``(M, n)`` memory are left out, ``unit`` indexes the cell memory directly (the NPU uses
``sequence * H + j``, so one cell memory serves a batch of sequences), the LSTM's transfer has no
``h`` and ``p_data`` is 16 bits wide. f enters the PWL in the accepting cycle.
"""

from __future__ import annotations

from amaranth.hdl import Array, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from quant.config import NPUConfig
from quant.pwl import PWLTable
from quant.rnn import CELL_KINDS, lstm_shifts

from .fixed import round_sat, rshift_round_const, sat, sat_narrow
from .pwl import PWLUnit, table_ram

__all__ = ["GateUnit", "TABLE_SIGMOID", "TABLE_TANH", "TABLE_TANH_CELL", "REGION_MN", "REGION_PWL", "REGION_C"]

TABLE_SIGMOID, TABLE_TANH, TABLE_TANH_CELL = 0, 1, 2
REGION_MN, REGION_PWL, REGION_C = 0, 1, 2
_TABLE_NAMES = ("sigmoid", "tanh", "tanh_cell")


def _bits(n: int) -> int:
    return max(1, (n - 1).bit_length())


class GateUnit(wiring.Component):
    """LSTM or GRU gate unit for up to ``hidden`` hidden units (see the module docstring).

    Parameters
    ----------
    config : NPUConfig
        Cell format, PWL pieces and shift.
    kind : "lstm" or "gru"
    hidden : int
        Largest number of hidden units (depth of the cell and requant memories).
    acc_width : int, optional
        Width of an incoming accumulator (default ``config.acc_width``); it must hold the bias too.
    tables : dict of PWLTable, optional
        Build-time PWL tables "sigmoid", "tanh" and (LSTM) "tanh_cell".
    """

    def __init__(
        self,
        config: NPUConfig,
        kind: str = "lstm",
        hidden: int = 32,
        *,
        acc_width: int | None = None,
        tables: dict[str, PWLTable] | None = None,
        z_in: bool = False,
        ebr_model: bool = False,
    ):
        if not isinstance(config, NPUConfig):
            raise TypeError(f"expected an NPUConfig, got {type(config).__name__}")
        if kind not in CELL_KINDS:
            raise ValueError(f"gate unit kind must be one of {CELL_KINDS}, got {kind!r}")
        if not 1 <= hidden <= 4096:
            raise ValueError(f"hidden must be in [1, 4096], got {hidden}")
        self.config, self.kind, self.hidden = config, kind, hidden
        self.z_in = bool(z_in)
        self.acc_width = config.acc_width if acc_width is None else acc_width
        if self.z_in:
            self.acc_width = config.GATE_BITS
        if not 8 <= self.acc_width <= 40:
            raise ValueError(f"acc_width must be in [8, 40], got {self.acc_width}")
        n_tables = 3 if kind == "lstm" else 2
        init = []
        if tables is not None:
            init = [tables[k] for k in _TABLE_NAMES[:n_tables]]
        #: the iCE40 memory path (hw/ebr.py's EBR model) on any platform, for tests
        self.ebr_model = bool(ebr_model)
        self.pwl = PWLUnit(config, tables=n_tables, init=init, ebr_model=self.ebr_model)
        self.unit_width = _bits(hidden)
        self.offset_width = max(_bits(4 * hidden), self.pwl.addr_width)
        self.addr_width = 2 + self.offset_width
        fields_in = {"unit": unsigned(self.unit_width), "acc": data.ArrayLayout(signed(self.acc_width), 4)}
        if not (self.z_in and kind == "lstm"):  # the NPU's LSTM path has no use for h here
            fields_in["h"] = signed(8)
        if self.z_in:
            fields_in["first"] = unsigned(1)
        payload_in = data.StructLayout(fields_in)
        payload_out = data.StructLayout({"unit": unsigned(self.unit_width), "h": signed(8), "c": signed(16)})
        super().__init__(
            {
                "i_stream": In(stream.Signature(payload_in)),
                "o_stream": Out(stream.Signature(payload_out)),
                "p_en": In(1),
                "p_addr": In(self.addr_width),
                "p_data": In(16 if self.z_in else 32),  # 32: requant (M, n) words
                "busy": Out(1),
            }
        )

    @property
    def cycles_per_unit(self) -> int:
        """Cycles from accepting one transfer to accepting the next, with no stalls on either side.

        Accept 1, requant 9 (four slots through a five-stage pipeline; none with ``z_in``), activations
        issued back to back and collected (``latency + 4`` for LSTM, ``latency + 3`` with ``z_in`` where f is issued
        with the accept, ``latency + 2`` for GRU), then LSTM: c' and
        its tanh_c issue 1, wait ``latency``, h' 1 (f*c and i*g ran while the activations arrived); GRU: r*b, its
        rounding, n's input (3), tanh issue and wait (``1 + latency``), z*n, z*h, sum, h' (4); output 1.
        """
        L = self.pwl.latency
        rq = 0 if self.z_in else 9
        if self.kind == "lstm":
            # z_in: f goes to the PWL with the accept, so one issue less in ACT
            return 1 + rq + (L + (3 if self.z_in else 4)) + 1 + L + 1 + 1
        return 1 + rq + (L + 2) + 3 + (1 + L) + 4 + 1

    # -- host-side address map ------------------------------------------------------------------

    def _addr(self, region: int, offset: int) -> int:
        return (region << self.offset_width) | offset

    def mn_writes(self, M, n) -> list[tuple[int, int]]:
        """Writes loading requant ``M`` (unsigned 16) and ``n`` (0..63), both shaped (4, H), H <= hidden."""
        out = []
        for g in range(4):
            for j in range(len(M[g])):
                Mi, ni = int(M[g][j]), int(n[g][j])
                if not (0 <= Mi < 1 << 16 and 0 <= ni <= 63):
                    raise ValueError(f"requant (M, n) = ({Mi}, {ni}) out of range")
                out.append((self._addr(REGION_MN, g * self.hidden + j), Mi | (ni << 16)))
        return out

    def table_writes(self, tables: dict[str, PWLTable]) -> list[tuple[int, int]]:
        """Writes loading the PWL tables by name ("sigmoid", "tanh", "tanh_cell")."""
        out = []
        for slot, name in enumerate(_TABLE_NAMES[: self.pwl.tables]):
            for a, v in self.pwl.table_writes(slot, tables[name]):
                out.append((self._addr(REGION_PWL, a), v & 0xFFFF))
        return out

    def c_writes(self, c) -> list[tuple[int, int]]:
        """Writes setting the cell state of units ``0 .. len(c) - 1`` (int16 each); not with ``z_in``
        (there a sequence's first step starts from ``c = 0``)."""
        if self.z_in:
            raise ValueError(
                "the z_in gate unit has no host writes of the cell state: its first step starts from c = 0"
            )
        return [(self._addr(REGION_C, j), int(v) & 0xFFFF) for j, v in enumerate(c)]

    # -- gateware -------------------------------------------------------------------------------

    def elaborate(self, platform):
        m = Module()
        m.submodules.pwl = pwl = self.pwl
        lstm = self.kind == "lstm"
        F = self.config.cell_frac_bits
        s_fc, s_ig, s_h = lstm_shifts(F)
        Hm, aw = self.hidden, self.acc_width

        # parameter writes
        region = self.p_addr[self.offset_width :]
        offset = self.p_addr[: self.offset_width]
        # (hw/pwl.py's table_ram: on iCE40 EBRs without Yosys' read-during-write emulation; the cell
        # is never read while it is written, see c_r.en below)
        c_r, c_w = table_ram(m, "cell", 16, Hm, [], platform, model=self.ebr_model)
        if not self.z_in:
            m.submodules.mn = mn = Memory(shape=unsigned(22), depth=4 * Hm, init=[])
            mn_w, mn_r = mn.write_port(), mn.read_port(domain="sync")
            m.d.comb += [
                mn_w.addr.eq(offset),
                mn_w.data.eq(self.p_data[:22]),
                mn_w.en.eq(self.p_en & (region == REGION_MN)),
            ]
        m.d.comb += [
            pwl.w_addr.eq(offset),
            pwl.w_data.eq(self.p_data[:16]),
            pwl.w_en.eq(self.p_en & (region == REGION_PWL)),
        ]

        # latched transfer
        unit = Signal(self.unit_width)
        acc = Array(Signal(signed(aw), name=f"acc{g}") for g in range(4))
        h_prev = Signal(signed(8))
        zq = Array(Signal(signed(16), name=f"zq{g}", reset_less=True) for g in range(4))  # Q3.12 pre-activations
        act = Array(Signal(signed(16), name=f"act{g}") for g in range(2 if not lstm else 4))  # Q0.15
        g = Signal(2)
        g_recv = Signal(3)
        sent = Signal(3)
        n_act = 4 if lstm else 2
        # table of each activated slot: LSTM i σ, f σ, g tanh, o σ; GRU z σ, r σ
        tsel = Array([TABLE_SIGMOID, TABLE_SIGMOID, TABLE_TANH, TABLE_SIGMOID][:n_act])

        # requant: one multiplier, variable rounding shift
        rq_issue = Signal(3)
        # valid after: read, register (M, n, acc), multiply, shift, clamp
        rq_v = [Signal(name=f"rq_v{i}") for i in range(5)]
        rq_g = Array(Signal(2, name=f"rq_g{i}") for i in range(5))
        rq_M = Signal(16)
        rq_nn = Signal(6)
        rq_acc = Signal(signed(aw))
        if not self.z_in:
            m.d.comb += mn_r.addr.eq(rq_issue[:2] * Hm + unit)
        m.d.comb += [c_r.addr.eq(unit), c_r.en.eq(~c_w.en)]  # no read of the word being written
        first = Signal()  # z_in: the sequence's first step, c starts at 0
        rq_prod = Signal(signed(aw + 17))
        rq_n = Signal(6)
        # rshift_round(x, n) = ((x >> (n - 1)) + 1) >> 1 for n >= 1: no 2^(n-1) constant, and the
        # arithmetic shifter is only as wide as the product
        # arithmetic shifter is only as wide as the product. Shift in one cycle, round and
        # saturate in the next.
        # saturate. n = 0 goes through the same path as 2x + 1 >> 1 = x. Clamping the shifted value
        # to 18 bits first keeps every carry chain short and does not change the result.
        rq_pre = Signal(signed(aw + 18))
        rq_c = Signal(signed(18))
        rq_clamp = sat(m, rq_pre, 18, "rq_clamp")
        rq_shifted = Signal(signed(18))
        m.d.comb += rq_shifted.eq((rq_c + 1) >> 1)
        rq_sat = sat(m, rq_shifted, 16, "rq_sat")

        # one shared 16 x 16 multiplier for the state update
        mul_a = Signal(signed(16))
        mul_b = Signal(signed(16))
        # every use of mp is in the cycle after its multiply, so it needs no enable; no reset
        # either, so Yosys can make it the SB_MAC16's own output register
        mp = Signal(signed(32), reset_less=True)
        zn = Signal(signed(33))
        mul_go = Signal()  # documents the states that use the multiplier
        m.d.sync += mp.eq(mul_a * mul_b)

        c_old = Signal(signed(16))
        fc = Signal(signed(16), reset_less=True)
        ig = Signal(signed(16), reset_less=True)
        n_pre_r = Signal(signed(16))
        h_sum = Signal(signed(34))
        h_new = Signal(signed(8), reset_less=True)
        n_val = Signal(signed(16))

        # PWL request mux
        pwl_z = Signal(signed(16))
        pwl_t = Signal(2)
        m.d.comb += [pwl.i_stream.payload.z.eq(pwl_z), pwl.i_stream.payload.table.eq(pwl_t)]
        # A PWL result only ever arrives in a state that waits for it, so the unit's output is
        # always taken: its stall logic (a clock enable on every pipeline register, through a
        # global buffer on iCE40) folds away.
        m.d.comb += pwl.o_stream.ready.eq(1)
        pwl_out = pwl.o_stream.payload

        # LSTM: the product in mp (one cycle after the multiply) and where its rounding goes
        MP_FC, MP_IG, MP_H = 1, 2, 3  # 0: none
        mp_kind = Signal(2)
        mp_next = Signal(2)
        m.d.sync += mp_kind.eq(mp_next)
        # LSTM: multiplier input b, always a register: c, then i (for g), then o (for tanh(c'))
        mb = Signal(signed(16), reset_less=True)
        if lstm:
            m.d.comb += [mul_a.eq(pwl_out), mul_b.eq(mb)]

        m.d.comb += [
            self.o_stream.payload.unit.eq(unit),
            self.o_stream.payload.h.eq(h_new),
        ]
        if lstm:
            # c' = sat(f c + i g): fc and ig hold still until the next unit's f arrives, after its
            # output was taken, so c' needs no register of its own
            c_sum = sat_narrow(m, fc + ig, 16, "c_sum")
            m.d.comb += self.o_stream.payload.c.eq(c_sum)

        # cell writes: from the host when idle, from the update otherwise (z_in: from the update
        # only, the sequence's first step starts from c = 0, so the NPU never writes the cell state,
        # and the write port needs no multiplexer)
        c_upd_en = Signal()
        c_upd_data = Signal(signed(16))
        if self.z_in:
            m.d.comb += [c_w.addr.eq(unit), c_w.data.eq(c_sum if lstm else c_upd_data), c_w.en.eq(c_upd_en)]
        else:
            m.d.comb += [
                c_w.addr.eq(Mux(c_upd_en, unit, offset)),
                c_w.data.eq(Mux(c_upd_en, c_upd_data, self.p_data[:16])),
                c_w.en.eq(c_upd_en | (self.p_en & (region == REGION_C))),
            ]

        r_fc = round_sat(m, mp, s_fc, 16, "r_fc")
        r_ig = round_sat(m, mp, s_ig, 16, "r_ig")
        r_h = round_sat(m, mp, s_h, 8, "r_h")
        if lstm:
            with m.Switch(mp_kind):
                with m.Case(MP_FC):
                    m.d.sync += fc.eq(r_fc)
                with m.Case(MP_IG):
                    m.d.sync += ig.eq(r_ig)
                with m.Case(MP_H):
                    m.d.sync += h_new.eq(r_h)
        r_rb = Signal(signed(17))  # registered rshift_round(r * b, 15)
        n_pre = sat(m, zq[2] + r_rb, 16, "n_pre")
        # h' = n + z (h - n) in Q0.30 as n 2^15 + (z h) 2^8 - z n: two 16 x 16 products, one rounding
        gru_h = sat(m, rshift_round_const(h_sum, 23), 8, "gru_h")

        with m.FSM(name="gate"):
            with m.State("IDLE"):
                m.d.comb += self.i_stream.ready.eq(1)
                with m.If(self.i_stream.valid):
                    p = self.i_stream.payload
                    m.d.sync += [unit.eq(p.unit), g.eq(0), rq_issue.eq(0)]
                    if not lstm:
                        m.d.sync += h_prev.eq(p.h)
                    m.d.sync += [sent.eq(0), g_recv.eq(0)]
                    if self.z_in and lstm:
                        # f goes to the PWL at once (it is always ready: its output is always
                        # taken); i, g, o wait in zq[0..2]
                        m.d.comb += [pwl_z.eq(p.acc[1]), pwl_t.eq(TABLE_SIGMOID), pwl.i_stream.valid.eq(1)]
                        m.d.sync += [zq[0].eq(p.acc[0]), zq[1].eq(p.acc[2]), zq[2].eq(p.acc[3])]
                        m.d.sync += [first.eq(p.first), sent.eq(1)]
                        m.next = "ACT"
                    elif self.z_in:
                        m.d.sync += [zq[i].eq(p.acc[i]) for i in range(4)]
                        m.d.sync += first.eq(p.first)
                        m.next = "ACT"
                    else:
                        m.d.sync += [acc[i].eq(p.acc[i]) for i in range(4)]
                        m.d.sync += [v.eq(0) for v in rq_v]
                        m.next = "RQ"
            if not self.z_in:
                with m.State("RQ"):  # a pipeline over the four slots: read, register, multiply, shift, clamp, round
                    m.d.comb += self.busy.eq(1)
                    with m.If(rq_issue < 4):
                        m.d.sync += [rq_v[0].eq(1), rq_g[0].eq(rq_issue[:2]), rq_issue.eq(rq_issue + 1)]
                    with m.Else():
                        m.d.sync += rq_v[0].eq(0)
                    m.d.sync += [rq_v[i + 1].eq(rq_v[i]) for i in range(4)]
                    m.d.sync += [rq_g[i + 1].eq(rq_g[i]) for i in range(4)]
                    m.d.sync += [
                        rq_M.eq(mn_r.data[:16]),
                        rq_nn.eq(mn_r.data[16:22]),
                        rq_acc.eq(acc[rq_g[0]]),
                        rq_prod.eq(rq_acc * rq_M),
                        rq_n.eq(rq_nn),
                        rq_pre.eq(Mux(rq_n == 0, rq_prod << 1, rq_prod >> (rq_n - 1)[:6])),
                        rq_c.eq(rq_clamp),
                    ]
                    with m.If(rq_v[4]):
                        if lstm:  # issue order f, i, g, o: swap slots 0 and 1
                            m.d.sync += zq[rq_g[4] ^ (~rq_g[4][1])].eq(rq_sat)
                        else:
                            m.d.sync += zq[rq_g[4]].eq(rq_sat)
                        with m.If(rq_g[4] == 3):
                            m.d.sync += [g.eq(0), g_recv.eq(0), c_old.eq(c_r.data)]
                            m.next = "ACT"
            if lstm:
                # Issue f, i, g, o back to back (z shifts down, so the PWL input is always zq[0]);
                # each result meets the multiplier as it arrives: f*c at f, g*i at g, and
                # tanh(c')*o later. Input a is always the PWL output, input b always mb (c, then
                # i, then o): no mux on either DSP input.
                with m.State("ACT"):
                    m.d.comb += [self.busy.eq(1), pwl_z.eq(zq[0])]
                    m.d.comb += pwl_t.eq(Mux(sent == 2, TABLE_TANH, TABLE_SIGMOID))
                    with m.If(sent < 4):
                        m.d.comb += pwl.i_stream.valid.eq(1)
                        with m.If(pwl.i_stream.ready):
                            m.d.sync += [sent.eq(sent + 1)] + [zq[i].eq(zq[i + 1]) for i in range(3)]
                    with m.If(g_recv == 0):  # c (0 on a sequence's first step) until f arrives
                        m.d.sync += mb.eq(Mux(first, 0, c_r.data))
                    with m.If(pwl.o_stream.valid):
                        m.d.sync += g_recv.eq(g_recv + 1)
                        with m.Switch(g_recv[:2]):
                            with m.Case(0):  # f: f * c
                                m.d.comb += [mul_go.eq(1), mp_next.eq(MP_FC)]
                            with m.Case(1):  # i
                                m.d.sync += mb.eq(pwl_out)
                            with m.Case(2):  # g: g * i
                                m.d.comb += [mul_go.eq(1), mp_next.eq(MP_IG)]
                            with m.Case(3):  # o
                                m.d.sync += mb.eq(pwl_out)
                                m.next = "L_C"
                with m.State("L_C"):  # c' = sat(f c + i g), stored, and straight into tanh_c
                    m.d.comb += self.busy.eq(1)
                    m.d.comb += [c_upd_en.eq(1), c_upd_data.eq(c_sum)]
                    m.d.comb += [pwl_z.eq(c_sum), pwl_t.eq(TABLE_TANH_CELL), pwl.i_stream.valid.eq(1)]
                    with m.If(pwl.i_stream.ready):
                        m.next = "L_TC_WAIT"
                with m.State("L_TC_WAIT"):
                    m.d.comb += self.busy.eq(1)
                    with m.If(pwl.o_stream.valid):
                        m.d.comb += [mul_go.eq(1), mp_next.eq(MP_H)]
                        m.next = "H_OUT"
                with m.State("H_OUT"):  # h_new is taken from mp this cycle
                    m.d.comb += self.busy.eq(1)
                    m.next = "OUT"
            else:
                with m.State("ACT"):  # issue n_act requests back to back, collect the results in order
                    m.d.comb += self.busy.eq(1)
                    m.d.comb += [pwl_z.eq(zq[g]), pwl_t.eq(tsel[g[: max(1, (n_act - 1).bit_length())]])]
                    with m.If(sent < n_act):
                        m.d.comb += pwl.i_stream.valid.eq(1)
                        with m.If(pwl.i_stream.ready):
                            m.d.sync += [sent.eq(sent + 1), g.eq(g + 1)]
                    with m.If(pwl.o_stream.valid):
                        m.d.sync += [
                            act[g_recv[: max(1, (n_act - 1).bit_length())]].eq(pwl.o_stream.payload),
                            g_recv.eq(g_recv + 1),
                        ]
                        with m.If(g_recv == n_act - 1):
                            m.next = "G_RB"
            if not lstm:
                z_, r_ = act[0], act[1]
                with m.State("G_RB"):
                    m.d.comb += [self.busy.eq(1), mul_a.eq(r_), mul_b.eq(zq[3]), mul_go.eq(1)]
                    m.next = "G_RB2"
                with m.State("G_RB2"):
                    m.d.comb += self.busy.eq(1)
                    m.d.sync += r_rb.eq(rshift_round_const(mp, 15))
                    m.next = "G_N0"
                with m.State("G_N0"):
                    m.d.comb += self.busy.eq(1)
                    m.d.sync += n_pre_r.eq(n_pre)
                    m.next = "G_N"
                with m.State("G_N"):
                    m.d.comb += [self.busy.eq(1), pwl_z.eq(n_pre_r), pwl_t.eq(TABLE_TANH), pwl.i_stream.valid.eq(1)]
                    with m.If(pwl.i_stream.ready):
                        m.next = "G_N_WAIT"
                with m.State("G_N_WAIT"):
                    m.d.comb += [self.busy.eq(1), pwl.o_stream.ready.eq(1)]
                    with m.If(pwl.o_stream.valid):
                        m.d.sync += n_val.eq(pwl.o_stream.payload)
                        m.next = "G_ZN"
                with m.State("G_ZN"):
                    m.d.comb += [self.busy.eq(1), mul_a.eq(z_), mul_b.eq(n_val), mul_go.eq(1)]
                    m.next = "G_ZH"
                with m.State("G_ZH"):
                    m.d.comb += [self.busy.eq(1), mul_a.eq(z_), mul_b.eq(h_prev), mul_go.eq(1)]
                    m.d.sync += zn.eq((n_val << 15) - mp)  # mp = z * n here
                    m.next = "G_H1"
                with m.State("G_H1"):
                    m.d.comb += self.busy.eq(1)
                    m.d.sync += h_sum.eq(zn + (mp << 8))  # mp = z * h here
                    m.next = "G_H"
                with m.State("G_H"):
                    m.d.comb += self.busy.eq(1)
                    m.d.sync += h_new.eq(gru_h)
                    m.next = "OUT"
            with m.State("OUT"):
                m.d.comb += [self.busy.eq(1), self.o_stream.valid.eq(1)]
                with m.If(self.o_stream.ready):
                    m.next = "IDLE"
        return m
