"""The on-chip layer sequencer: runs a layer program (quant/program.py) with no host round trip.

It fetches each instruction from the program memory, hands GEMMs to the engine's command stream
and waits for their completion, and performs the small data-movement layers itself -- 2x2
max-pool, 3x3 im2col, argmax -- through the engine's memory port while the engine is idle.

With the LSTM path (``rnn=True``) it also owns the gate unit (hw/rnn.py, one instance in ``z_in``
mode): ``PWL_LOAD`` copies table entries from the feature memory into it, and ``LSTM`` runs a whole
layer -- per step the x copy, one gate-mode GEMM and the gate unit over every (sequence, unit),
writing h where the next step's GEMM reads it (docs/architecture.md, "The LSTM path").

Area notes (the block has to fit the iCE40UP5K beside the engine): every field, counter and
pointer is as wide as the memory it indexes (the engine truncates its addresses the same way, so
the low bits are all that matter); the word read from the memory is registered once (``rdq``)
before anything uses it; and the memory port's write-data register doubles as the working
register of MAXPOOL2 (the running lane-wise maximum) and of ARGMAX / LSTM (the packed bytes), so
a write needs no data multiplexer in front of it.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from quant.config import NPUConfig
from quant.gate_map import cell_depth, entries_per_word, lstm_supported
from quant.program import INSTR_WORDS, Op

from .ebr import is_ice40
from .gemm import ADDR_BITS, DIM_BITS, GemmCommand
from .rnn import REGION_PWL, GateUnit

__all__ = ["Sequencer"]


def _is_last(counter: Signal, extent):
    """``counter == extent - 1`` on the counter's increment, which the loop computes anyway (no subtractor)."""
    return (counter + 1)[: len(counter)] == extent[: len(counter)]


def _bits(n: int) -> int:
    return max(1, int(n).bit_length())


class Sequencer(wiring.Component):
    """Executes a layer program.

    Members
    -------
    start : In(1)
        Pulse: run the program from address 0.
    running, done, error : Out(1)
        Status: ``done`` stays high until the next start; ``error`` flags an unknown opcode.
    cycles : Out(32)
        Cycles from start to END of the last run.
    prog_addr : Out(16), prog_data : In(32)
        Program memory read port (data one cycle after the address).
    cmd : Out(stream.Signature(GemmCommand)), gemm_done : In(stream.Signature(32))
        The engine's command and completion streams.
    mem_addr, mem_wdata, mem_we : Out, mem_rdata : In
        The feature memory through the engine's host port (word one cycle after the address):
        ``8 * rows`` bits wide; address, write enable and data leave flip-flops, and the read word
        enters one (a read's word is usable three cycles after the state that issues it).

    Fields are held as wide as the memories need (quant.program's 16 bits are an encoding limit):
    addresses modulo the feature memory depth, as the engine takes them, extents up to the feature
    memory depth, and ARGMAX's ``n`` up to ``chan_depth + rows`` (it ranks a GEMM's output
    channels); the compiler refuses programs that do not fit the memories anyway. MAXPOOL2 needs
    an even height and width (quant.program refuses others).

    Parameters
    ----------
    rnn : bool
        Include the gate unit and the ``PWL_LOAD`` / ``LSTM`` ops (only where
        :func:`quant.gate_map.lstm_supported`; otherwise those opcodes stop with an error).
    prog_depth : int, optional
        Words of the program memory (``config.prog_depth`` by default): the program counter is
        as wide as its address.
    """

    def __init__(
        self, config: NPUConfig, rnn: bool = True, prog_depth: int | None = None, *, fetch_reg: bool | None = None
    ):
        self.config = config
        #: the fetched word is registered (True) or the fetch address is (False); None: False on an
        #: iCE40 platform (a flip-flop is a logic cell there), else True. Same cycles either way.
        self.fetch_reg = fetch_reg
        self.prog_depth = config.prog_depth if prog_depth is None else int(prog_depth)
        if not 1 <= self.prog_depth <= 1 << 16:
            raise ValueError(f"prog_depth must be in [1, 65536], got {self.prog_depth}")
        self.rnn = bool(rnn) and lstm_supported(config)
        self.gate_unit = GateUnit(config, "lstm", hidden=cell_depth(config), z_in=True) if self.rnn else None
        super().__init__(
            {
                "start": In(1),
                "running": Out(1),
                "done": Out(1),
                "error": Out(1),
                "cycles": Out(32),
                "prog_addr": Out(16),
                "prog_data": In(32),
                "cmd": Out(stream.Signature(GemmCommand)),
                "gemm_done": In(stream.Signature(unsigned(32))),
                "mem_addr": Out(ADDR_BITS),
                "mem_wdata": Out(8 * config.rows),
                "mem_we": Out(1),
                "mem_rdata": In(8 * config.rows),
            }
        )

    def _widths(self):
        """Bits of each 16-bit field slot and of the loop counters (see the class docstring)."""
        cfg, L = self.config, self.config.rows
        FA = _bits(cfg.act_depth - 1)  # feature address
        EW = _bits(cfg.act_depth)  # an extent of feature words (h, w, ct, m, count, steps, tiles)
        MW = min(DIM_BITS, _bits(cfg.act_depth))  # the engine's widths (hw/gemm.py)
        TW = min(DIM_BITS, _bits(-(-cfg.weight_depth // L)))
        NW = min(DIM_BITS, _bits(cfg.chan_depth))
        WA, CA = _bits(cfg.weight_depth - 1), _bits(cfg.chan_depth - 1)
        GW = _bits(cfg.chan_depth + L)  # ARGMAX n: the classes of a GEMM's output (channels have parameters)
        slots = [
            (MW, FA),  # m | src
            (NW, FA, EW),  # n | dst | count | hidden
            (TW, EW),  # kt | h | m | steps
            (TW, EW, GW, FA),  # nt | w | n | x_base
            (FA, EW),  # act_base | ct | nt
            (FA,),  # out_base | z_base
            (WA,),  # wgt_base
            (CA,),  # chan_base
            (EW,),  # xt
            (FA,),  # h_base
        ]
        fw = [min(16, max(s)) for s in slots]
        return FA, fw, min(16, max(EW, GW, NW, MW)), min(16, max(EW, MW))

    def elaborate(self, platform):
        m = Module()
        L = self.config.rows
        lane_bits = max(1, (L - 1).bit_length())
        FA, fw, CXW, CYW = self._widths()
        nf = 10 if self.rnn else 8

        # ---- memory port: registered address / write enable; mem_wdata is a working register ----
        # Datapath registers have no reset (RL): their values after power-up do not matter, and a
        # flip-flop's reset input is then free for the clear of a counter or a lane (iCE40 SB_DFFESR).
        RL = dict(reset_less=True)
        addr = Signal(FA)
        we = Signal()
        addr_q, wdq, cyc = Signal(FA, **RL), Signal(8 * L, **RL), Signal(32, **RL)
        m.d.sync += [addr_q.eq(addr), self.mem_we.eq(we)]
        m.d.comb += [self.mem_addr.eq(addr_q), self.mem_wdata.eq(wdq), self.cycles.eq(cyc)]
        wd = [wdq[8 * i : 8 * i + 8] for i in range(L)]

        # the read word, registered: loaded two cycles after the state that issued the read (rd);
        # IM2COL3 loads a zero for a tap outside the image (ins)
        rd, ins = Signal(), Signal(init=1)
        rd_p, ins_p = Signal(2, **RL), Signal(2, **RL)
        m.d.sync += [rd_p.eq(Cat(rd, rd_p[0])), ins_p.eq(Cat(ins, ins_p[0]))]
        rdq = Signal(8 * L, **RL)
        rq_shift = Signal()  # ARGMAX: move the next lane into lane 0
        with m.If(rd_p[1] | rq_shift):
            m.d.sync += rdq.eq(Mux(rd_p[1] & ~ins_p[1], 0, Mux(rd_p[1], self.mem_rdata, rdq >> 8)))
        rq = [rdq[8 * i : 8 * i + 8].as_signed() for i in range(L)]

        # mem_wdata, lane by lane, in one statement (so that the clear and the enable map onto the
        # flip-flops): the word read (w_all), zeros (w_zero), MAXPOOL2's maximum (pool_cp), or
        # byte `wb_val` into the lane of `wb_oh` with the other lanes cleared on a new word (wb_en)
        w_all, w_zero, wb_en = Signal(), Signal(), Signal()
        wb_val = Signal(8)
        # the slot as a one-hot lane mask, from registered decodes of the two slot counters (ARGMAX's
        # sl, LSTM's ln: each moves at least a few cycles before a byte goes in), so that no counter
        # compare sits in front of the lanes' enables
        wb_oh = Signal(L)
        # MAXPOOL2 builds a window's maximum in pm (beside its compare, see the end of elaborate) and
        # copies it into mem_wdata in the cycle after POOL_WRITE (pool_cp): the write goes out a
        # window later, so that no compare reaches mem_wdata, which sits by the memory's write port
        pm = [Signal(8, name=f"pool_max{i}", reset_less=True) for i in range(L)]
        pool_cp = Signal()
        for i in range(L):
            ld_i = Signal(name=f"ld{i}")
            m.d.comb += ld_i.eq(w_all | w_zero | pool_cp | (wb_en & (wb_oh[i] | wb_oh[0])))
            with m.If(ld_i):
                m.d.sync += wd[i].eq(
                    Mux(w_zero | (wb_en & ~wb_oh[i]), 0, Mux(wb_en, wb_val, Mux(pool_cp, pm[i], rq[i])))
                )

        # ---- instruction: op and flags, then the fields (zero-extended to 16 bits where used) ----
        pc = Signal(_bits(self.prog_depth - 1), **RL)
        fetch_i = Signal(range(INSTR_WORDS + 2), **RL)
        op = Signal(4, **RL)
        relu, gate = Signal(**RL), Signal(**RL)
        f = [Signal(fw[i], name=f"f{i}", **RL) for i in range(nf)]
        # the opcode decoded into flags one cycle after it is fetched (valid from the second fetch
        # cycle on), so that no opcode comparison sits in front of the datapath
        is_op = {o: Signal(name=f"is_{Op.NAMES[o].lower()}", **RL) for o in Op.NAMES}
        m.d.sync += [sig.eq(op == o) for o, sig in is_op.items()]
        # The fetched word passes a register before the decode (its block RAM's output would
        # otherwise reach the pointer registers' multiplexers, the 16x16 ECP5 NPU's critical
        # path), or, on the iCE40 (a flip-flop is a logic cell), the read address is registered
        # instead: word pc arrives two cycles after pc either way.
        prog_word = Signal(32, **RL)
        if not ((not is_ice40(platform)) if self.fetch_reg is None else self.fetch_reg):
            pc_q = Signal.like(pc)
            m.d.sync += pc_q.eq(pc)
            m.d.comb += [self.prog_addr.eq(pc_q), prog_word.eq(self.prog_data)]
        else:
            m.d.comb += self.prog_addr.eq(pc)
            m.d.sync += prog_word.eq(self.prog_data)

        # counts while running (an add of `running`: no enable logic), cleared by a start
        cyc_clear = Signal()
        m.d.sync += cyc.eq(Mux(cyc_clear, 0, cyc + self.running))

        m.d.comb += [
            self.cmd.payload.m.eq(f[0]),
            self.cmd.payload.n.eq(f[1]),
            self.cmd.payload.kt.eq(f[2]),
            self.cmd.payload.nt.eq(f[3]),
            self.cmd.payload.act_base.eq(f[4]),
            self.cmd.payload.out_base.eq(f[5]),
            self.cmd.payload.wgt_base.eq(f[6]),
            self.cmd.payload.chan_base.eq(f[7]),
            self.cmd.payload.relu.eq(relu),
            self.cmd.payload.gate.eq(gate),
        ]
        h, w, ct = f[2], f[3], f[4]

        # ---- loop state shared by the ops ----
        # cx/cy/cc: inner/middle/outer counters; rp: read pointer, bp: a second read pointer
        # (MAXPOOL2's lower row, IM2COL3's tap row, ARGMAX's row), wp: write pointer.
        cx = Signal(CXW, **RL)
        cy = Signal(CYW, **RL)
        cc = Signal(fw[4], **RL)
        k = Signal(2, **RL)  # MAXPOOL2: which input word; IM2COL3: dx
        dy = Signal(2, **RL)
        ln = Signal(range(max(L, entries_per_word(self.config) if self.rnn else 1) + 1), **RL)  # lane / entry
        sl = Signal(lane_bits, **RL)  # ARGMAX: packing slot (row % lanes)
        ln_oh, sl_oh = Signal(L, **RL), Signal(L, **RL)  # ln == i, sl == i, a cycle late (see wb_oh)
        pool_prev = Signal(**RL)  # MAXPOOL2: a window's maximum waits in mem_wdata for its write
        m.d.sync += [ln_oh.eq(Cat(ln == i for i in range(L))), sl_oh.eq(Cat(sl == i for i in range(L)))]
        rp, bp, wp = Signal(FA, name="rp", **RL), Signal(FA, name="bp", **RL), Signal(FA, name="wp", **RL)
        # Two shared adders: bsum = bp + (w, ~w, dx or 0) + (1 unless w), rsum = rp + (w, m or 0) + (1 unless
        # a field); by default they step bp and rp by one. Their operand selects are registered: set in
        # the state before the one that adds (see `b_next` below).
        b_w, b_inv, b_k, r_op, r_arg = (Signal(name=n, **RL) for n in ("b_w", "b_inv", "b_k", "r_op", "r_arg"))
        nb_w, nb_inv, nb_k, nr_op = Signal(), Signal(), Signal(), Signal()
        m.d.sync += [b_w.eq(nb_w), b_inv.eq(nb_inv), b_k.eq(nb_k), r_op.eq(nr_op | is_op[Op.ARGMAX])]
        m.d.comb += r_arg.eq(is_op[Op.ARGMAX])
        bsum, rsum = Signal(FA), Signal(FA)
        m.d.comb += [
            bsum.eq(bp + Mux(b_w, w ^ b_inv.replicate(len(w)), Mux(b_k, k, 0)) + ~b_w),
            rsum.eq(rp + Mux(r_op, Mux(r_arg, f[2], w), 0) + ~r_op),
        ]
        # Loop ends, registered: lx = (cx == ex - 1) etc. for the running op's extents, computed
        # from the counters of the cycle before. Every state that tests a flag comes at least one
        # cycle after its counter last moved (the counters are cleared while fetching), so the
        # flags are exact there, and no carry chain reaches the state machine. The extents are
        # registered too (exq, eyq, ecq: the selection below, a cycle late), so that no field
        # multiplexer is in front of the compares either: they settle long before a test, except
        # when the LSTM op enters its zeroing phase, where eyq is loaded with that phase's extent.
        ex, ey, ec = Signal(CXW), Signal(CYW), Signal(len(cc))
        exq, eyq, ecq = Signal(CXW, **RL), Signal(CYW, **RL), Signal(len(cc), **RL)
        m.d.sync += [exq.eq(ex), eyq.eq(ey), ecq.eq(ec)]
        last_x, last_y, last_c = Signal(**RL), Signal(**RL), Signal(**RL)
        m.d.sync += [last_x.eq(_is_last(cx, exq)), last_y.eq(_is_last(cy, eyq)), last_c.eq(_is_last(cc, ecq))]
        ph_zero, ph_gate = Signal(**RL), Signal(**RL)  # LSTM phases (set on entering them)
        # the data-movement ops all loop over w (f3, x), h or m (f2, y) and ct or nt (f4, c);
        # MAXPOOL2 counts x and y in steps of two from 1, up to w and h rounded down to even (so that
        # an odd size, which quant.program refuses, still ends)
        pool = is_op[Op.MAXPOOL2]
        m.d.comb += [ex.eq(Cat(w[0] & ~pool, w[1:])), ey.eq(Cat(h[0] & ~pool, h[1:])), ec.eq(ct)]
        ht = Signal(fw[1], **RL)  # LSTM: h tiles, (hidden + rows - 1) // rows, registered (see _lstm_setup)
        if self.rnn:
            m.d.sync += ht.eq((f[1] + (L - 1)) >> lane_bits)
            with m.If(is_op[Op.PWL_LOAD]):
                m.d.comb += ex.eq(f[1])
            with m.If(is_op[Op.LSTM]):
                # x copy / h zeroing: words of a tile (m) and tiles (xt / ht); gate: units (hidden)
                # and sequences (m); steps
                m.d.comb += [ex.eq(Mux(ph_gate, f[1], f[0])), ey.eq(f[8]), ec.eq(f[2])]
                with m.If(ph_zero):
                    m.d.comb += ey.eq(ht)
                with m.If(ph_gate):
                    m.d.comb += ey.eq(f[0])

        # ARGMAX
        a_best = Signal(8, **RL)
        a_idx = Signal(8, **RL)
        a_ok, a_first = Signal(**RL), Signal(**RL)
        # a_rem: lanes of the row still to count (n - cx), counted down beside cx; a_last: cx is
        # lane n - 1 (a compare of a flip-flop word with a constant: no adder in front of it)
        a_rem = Signal(CXW, **RL)
        a_last = Signal()
        m.d.comb += a_last.eq(a_rem == 1)
        lane_v = rq[0]  # the scan shifts rdq down one lane a cycle (no lane multiplexer)
        # Off the iCE40 the running maximum is a stage behind the scan: the scan registers each lane
        # (a_v), its index and whether it counts, and the compare with a_best runs on those local
        # registers the next cycle (a_upd), so the compare-to-enable loop does not start at the wide
        # rdq shifter (the 16x16 ECP5 NPU's critical path: 93.6 -> 109.1 MHz). ARG_EMIT, right after a
        # row's last lane, takes that lane's index directly when it wins (no cycle added). On the
        # iCE40 (96-98 % full) the 18 flip-flops and the forwarding cost more than they give (the
        # 4x4 LSTM NPU: 40.9 -> 37.3 MHz), so there the scan compares lane_v itself.
        staged = not is_ice40(platform)
        if staged:
            a_v, a_vi = Signal(8, **RL), Signal(8, **RL)
            a_vok, a_vfirst = Signal(), Signal(**RL)
            a_upd = Signal()
            m.d.sync += a_vok.eq(0)  # (the scan state sets it)
            m.d.comb += a_upd.eq(a_vok & (a_vfirst | (a_v.as_signed() > a_best.as_signed())))
            with m.If(a_upd):
                m.d.sync += [a_best.eq(a_v), a_idx.eq(a_vi)]

        if self.rnn:
            lstm = dict(
                op_is_lstm=is_op[Op.LSTM],
                last_x=last_x,
                bsum=bsum,
                w_all=w_all,
                w_zero=w_zero,
                wb_en=wb_en,
                wb_oh=wb_oh,
                ln_oh=ln_oh,
                wb_val=wb_val,
                rsum=rsum,
                last_y=last_y,
                last_c=last_c,
                ph_zero=ph_zero,
                ph_gate=ph_gate,
                f=f,
                rdq=rdq,
                wd=wd,
                addr=addr,
                we=we,
                rd=rd,
                cx=cx,
                cy=cy,
                cc=cc,
                ln=ln,
                rp=rp,
                bp=bp,
                wp=wp,
                ht=ht,
                eyq=eyq,
            )
            self._lstm_setup(m, lstm)

        # An op with a zero extent does nothing (as in quant.device_model); the loops count to
        # `extent - 1` and would never end on a zero. Registered: the fields are all in by the
        # last fetch cycle (LSTM's xt, in the last word, is tested by L_INIT).
        # Two register stages: the fields' zero flags (f0..f4 are in two cycles before DECODE), then
        # their AND-OR with the decoded opcode flags, so no compare sits in front of an op decode.
        z = [Signal(name=f"z{i}", **RL) for i in range(5)]  # f[i] == 0
        zh, zw = Signal(**RL), Signal(**RL)  # h < 2, w < 2 (MAXPOOL2's rounded-down extents)
        m.d.sync += [z[i].eq(f[i] == 0) for i in range(5)]
        m.d.sync += [zh.eq(h[1:] == 0), zw.eq(w[1:] == 0)]
        empty = Signal(**RL)
        empty_c = (
            (is_op[Op.GEMM] & (z[0] | z[1] | z[2] | z[3]))
            | (is_op[Op.MAXPOOL2] & (zh | zw | z[4]))
            | ((is_op[Op.IM2COL3] | is_op[Op.ARGMAX]) & (z[2] | z[3] | z[4]))
        )
        if self.rnn:
            empty_c = empty_c | (is_op[Op.PWL_LOAD] & z[1]) | (is_op[Op.LSTM] & (z[0] | z[1] | z[2]))
        m.d.sync += empty.eq(empty_c)

        with m.FSM() as fsm:
            with m.State("IDLE"):
                m.d.comb += cyc_clear.eq(self.start)
                with m.If(self.start):
                    m.d.sync += [
                        pc.eq(0),
                        fetch_i.eq(0),
                        self.running.eq(1),
                        self.done.eq(0),
                        self.error.eq(0),
                    ]
                    m.next = "FETCH"
            with m.State("FETCH"):
                # word i is on prog_word when fetch_i == i + 2; pc ends on the next instruction
                m.d.sync += fetch_i.eq(fetch_i + 1)
                m.d.sync += [cx.eq(0), cy.eq(0), cc.eq(0), k.eq(0), dy.eq(0), ln.eq(0), sl.eq(0)]
                with m.If(fetch_i < INSTR_WORDS):
                    m.d.sync += pc.eq(pc + 1)
                with m.If(fetch_i == 2):
                    m.d.sync += [op.eq(prog_word[:4]), relu.eq(prog_word[4]), gate.eq(prog_word[5])]
                for i in range(nf):
                    with m.If(fetch_i == 3 + i // 2):
                        lo = 16 * (i % 2)
                        m.d.sync += f[i].eq(prog_word[lo : lo + fw[i]])
                with m.If(fetch_i == 3):  # src, dst: the pointers start there
                    m.d.sync += [rp.eq(prog_word[:FA]), bp.eq(prog_word[:FA]), wp.eq(prog_word[16:])]
                with m.If(fetch_i == INSTR_WORDS + 1):
                    m.d.sync += fetch_i.eq(0)
                    m.d.comb += [nb_w.eq(1), nb_inv.eq(is_op[Op.IM2COL3])]  # for DECODE
                    m.next = "DECODE"
            with m.State("DECODE"):
                m.d.sync += [a_ok.eq(1), a_first.eq(1), a_rem.eq(f[3])]
                m.d.comb += [nb_w.eq(k == 2), nb_k.eq(1)]  # for IM2COL3's first read state
                m.d.sync += pool_prev.eq(0)
                with m.If(is_op[Op.MAXPOOL2]):
                    m.d.sync += [bp.eq(bsum), cx.eq(1), cy.eq(1)]  # the lower row of the first window: src + w
                with m.If(is_op[Op.IM2COL3]):
                    # tap (0, 0) starts at src + ~w = src - w - 1 (modulo the address width; only read inside)
                    m.d.sync += [bp.eq(bsum), rp.eq(bsum)]
                known = [Op.GEMM, Op.MAXPOOL2, Op.IM2COL3, Op.ARGMAX] + ([Op.PWL_LOAD, Op.LSTM] if self.rnn else [])
                with m.If(is_op[Op.END]):
                    m.d.sync += [self.running.eq(0), self.done.eq(1)]
                    m.next = "IDLE"
                with m.Elif(Cat(is_op[o] for o in known).any()):
                    with m.If(empty):
                        m.next = "FETCH"
                    with m.Elif(is_op[Op.GEMM]):
                        m.next = "GEMM_CMD"
                    with m.Elif(is_op[Op.MAXPOOL2]):
                        m.next = "POOL_READ"
                    with m.Elif(is_op[Op.IM2COL3]):
                        m.next = "IM2COL"
                    with m.Elif(is_op[Op.ARGMAX]):
                        m.next = "ARG_READ"
                    if self.rnn:
                        with m.Elif(is_op[Op.PWL_LOAD]):
                            m.next = "PL_READ"
                        with m.Else():
                            m.next = "L_INIT"
                with m.Else():
                    m.d.sync += [self.running.eq(0), self.done.eq(1), self.error.eq(1)]
                    m.next = "IDLE"

            # ---- GEMM: hand the command to the engine, wait for its completion ----
            with m.State("GEMM_CMD"):
                m.d.comb += self.cmd.valid.eq(1)
                with m.If(self.cmd.ready):
                    m.next = "GEMM_WAIT"
            with m.State("GEMM_WAIT"):
                m.d.comb += self.gemm_done.ready.eq(1)
                with m.If(self.gemm_done.valid):
                    m.next = "FETCH"

            # ---- MAXPOOL2: reads p, p + 1 (rp) and p + w, p + w + 1 (bp) back to back; the
            # lane-wise maximum builds up in pm as the words arrive (three cycles after each
            # read) and is copied into mem_wdata after POOL_WRITE; it is written in the next
            # window's POOL_W1 (a free cycle of the memory port), the last one's in POOL_FLUSH:
            # 7 cycles a pixel, plus 1 for the op. h and w are even (quant.program refuses
            # others), so the next row of windows starts where bp ends.
            with m.State("POOL_READ"):
                m.d.comb += [addr.eq(Mux(k[1], bp, rp)), rd.eq(1)]
                m.d.sync += k.eq(k + 1)
                with m.If(k[1]):
                    m.d.sync += bp.eq(bsum)
                with m.Else():
                    m.d.sync += rp.eq(rsum)
                with m.If(k == 3):
                    m.next = "POOL_W1"
            with m.State("POOL_W1"):
                with m.If(pool_prev):  # the previous window's maximum
                    m.d.comb += [addr.eq(wp), we.eq(1)]
                    m.d.sync += wp.eq(wp + 1)
                m.next = "POOL_W2"
            with m.State("POOL_W2"):
                m.d.comb += [nb_w.eq(1), nr_op.eq(1)]  # POOL_WRITE steps rp and bp by w
                m.next = "POOL_WRITE"
            with m.State("POOL_WRITE"):
                m.d.sync += [pool_prev.eq(1), cx.eq(cx + 2)]
                m.next = "POOL_READ"
                with m.If(last_x):  # rp = row + w, bp = row + 2w: both step by w
                    m.d.sync += [cx.eq(1), cy.eq(cy + 2), rp.eq(rsum), bp.eq(bsum)]
                    with m.If(last_y):
                        m.d.sync += [cy.eq(1), cc.eq(cc + 1)]
                        with m.If(last_c):
                            m.next = "POOL_FLUSH"
            with m.State("POOL_FLUSH"):  # the last window's maximum (copied into mem_wdata in this cycle)
                m.d.comb += [addr.eq(wp), we.eq(1)]
                m.d.sync += wp.eq(wp + 1)
                m.next = "FETCH"
            # ---- IM2COL3: one read (or a zero) and one write per destination word, 4 cycles ----
            # Source words are consecutive within a tap (channel tiles and rows are contiguous), so
            # rp counts; bp = src + (dy - 1) * w - 1 is the tap row, a tap starts at bp + dx.
            with m.State("IM2COL"):
                m.d.comb += [
                    addr.eq(rp),
                    rd.eq(1),
                    ins.eq(
                        ~((k == 0) & (cx == 0))
                        & ~((k == 2) & last_x)
                        & ~((dy == 0) & (cy == 0))
                        & ~((dy == 2) & last_y)
                    ),
                ]
                m.d.sync += [rp.eq(rsum), cx.eq(cx + 1)]
                m.next = "IM2COL_W1"
                with m.If(last_x):
                    m.d.sync += [cx.eq(0), cy.eq(cy + 1)]
                    with m.If(last_y):
                        m.d.sync += [cy.eq(0), cc.eq(cc + 1)]
                        with m.If(last_c):
                            # next tap: bp + dx + 1, or the next tap row bp + w
                            m.d.sync += [cc.eq(0), k.eq(k + 1), rp.eq(bsum)]
                            with m.If(k == 2):
                                m.d.sync += [k.eq(0), dy.eq(dy + 1), bp.eq(bsum)]
            with m.State("IM2COL_W1"):
                m.next = "IM2COL_W2"
            with m.State("IM2COL_W2"):
                m.next = "IM2COL_WRITE"
            with m.State("IM2COL_WRITE"):
                m.d.comb += [addr.eq(wp), we.eq(1), nb_w.eq(k == 2), nb_k.eq(1)]  # for the next read state
                m.d.comb += w_all.eq(1)
                m.d.sync += wp.eq(wp + 1)
                m.next = "IM2COL"
                # the read state wrapped every counter after the last tap
                with m.If(dy == 3):
                    m.next = "FETCH"

            # ---- ARGMAX: scan each row's lanes, pack one index byte per row ----
            # fields: src f0, dst f1, m f2, n f3, nt f4; rp = src + cc * m + cy (row cy, N-tile cc),
            # bp = src + cy; cx counts the row's global lane index
            with m.State("ARG_READ"):
                m.d.comb += [addr.eq(rp), rd.eq(1)]
                m.next = "ARG_WAIT"
            with m.State("ARG_WAIT"):
                m.next = "ARG_LATCH"
            with m.State("ARG_LATCH"):  # rdq is loaded at the end of this cycle
                m.next = "ARG_SCAN"
            with m.State("ARG_SCAN"):
                # lanes cx < n count (a_ok drops after lane n - 1); the first one always wins
                if staged:
                    m.d.sync += [a_v.eq(lane_v), a_vi.eq(cx), a_vok.eq(a_ok), a_vfirst.eq(a_first)]
                else:
                    with m.If(a_ok & (a_first | (lane_v > a_best.as_signed()))):
                        m.d.sync += [a_best.eq(lane_v), a_idx.eq(cx)]
                m.d.comb += rq_shift.eq(1)
                m.d.sync += a_first.eq(0)
                with m.If(a_last):
                    m.d.sync += a_ok.eq(0)
                m.d.sync += [ln.eq(ln + 1), cx.eq(cx + 1), a_rem.eq(a_rem - 1)]
                with m.If(ln == L - 1):
                    m.d.sync += [ln.eq(0), cc.eq(cc + 1), rp.eq(rsum)]
                    m.next = "ARG_READ"
                    with m.If(last_c):
                        m.d.sync += [cc.eq(0), rp.eq(bsum), bp.eq(bsum)]
                        m.next = "ARG_EMIT"
            with m.State("ARG_EMIT"):
                # the index goes into byte `sl` of mem_wdata (the others clear on a new word)
                m.d.comb += [wb_en.eq(1), wb_oh.eq(sl_oh), wb_val.eq(Mux(a_upd, a_vi, a_idx) if staged else a_idx)]
                m.d.sync += [cy.eq(cy + 1), sl.eq(sl + 1), cx.eq(0), a_ok.eq(1), a_first.eq(1), a_rem.eq(f[3])]
                with m.If(sl == L - 1):
                    m.d.sync += sl.eq(0)
                with m.If((sl == L - 1) | last_y):
                    m.d.comb += [addr.eq(wp), we.eq(1)]
                    m.d.sync += wp.eq(wp + 1)
                m.next = "ARG_READ"
                with m.If(last_y):
                    m.next = "FETCH"

            if self.rnn:  # opens its states inside this FSM
                self._lstm_states(m, lstm)

        # MAXPOOL2's lane-wise maximum, in pm: the four words of a window are in rdq during the
        # last read state and the three after it (POOL_READ with k == 3, then POOL_W1, POOL_W2,
        # POOL_WRITE: the states follow each other unconditionally, so the phase flags are
        # registered, set in the state before). Each lane's signed compare is a carry chain and one
        # LUT to pm's enable; pm is copied into mem_wdata in the cycle after POOL_WRITE (pool_cp).
        pool_first, pool_cmp = Signal(), Signal()
        pool_r2 = fsm.ongoing("POOL_READ") & (k == 2)
        m.d.sync += [
            pool_first.eq(pool_r2),
            pool_cmp.eq(pool_r2 | pool_first | fsm.ongoing("POOL_W1") | fsm.ongoing("POOL_W2")),
            pool_cp.eq(fsm.ongoing("POOL_WRITE")),
        ]
        gt = [Signal(name=f"pool_gt{i}") for i in range(L)]
        # signed a > b as unsigned with the sign bits flipped
        m.d.comb += [
            gt[i].eq(Cat(rdq[8 * i : 8 * i + 7], ~rdq[8 * i + 7]) > Cat(pm[i][:7], ~pm[i][7])) for i in range(L)
        ]
        for i in range(L):
            with m.If(pool_cmp & (pool_first | gt[i])):
                m.d.sync += pm[i].eq(rdq[8 * i : 8 * i + 8])
        fsm.state.attrs["fsm_encoding"] = "one-hot"
        return m

    def _lstm_setup(self, m, v):
        """Registers and combinational logic of PWL_LOAD and LSTM (see quant/program.py); adds its names to ``v``."""
        cfg, gu = self.config, self.gate_unit
        m.submodules.gate = gu
        f, rdq = v["f"], v["rdq"]
        C = cfg.cols
        lc = (C - 1).bit_length()
        per = entries_per_word(cfg)
        upw = C // 8  # units per z word (0 at 4x4: a unit's gates are the two words of its row)
        FA = len(v["rp"])

        # ---- PWL_LOAD: fields src f0, count f1; rows/4 entries per word ----
        entry = Signal(32)
        m.d.comb += entry.eq(rdq.word_select(v["ln"][: max(1, (per - 1).bit_length())], 32) if per > 1 else rdq[:32])
        m.d.comb += [gu.p_addr.eq((REGION_PWL << gu.offset_width) | entry[16:32]), gu.p_data.eq(entry[:16])]

        # ---- LSTM: fields m f0, hidden f1, steps f2, x_base f3, act_base f4, z_base f5,
        # wgt_base f6, chan_base f7, xt f8, h_base f9. Counters: cc the step, cy the sequence (or
        # the copy's tile), cx the unit (or the copy's word), ln the h lane; rp the x word (the
        # steps' x blocks are consecutive), bp the z word, wp the h (or activation) word.
        H_ = f[1]
        RL = dict(reset_less=True)
        # the h tiles (v["ht"]) and the gate GEMM's N-tiles are registered (hidden is in from the
        # first fetch cycles, long before either is used): no adder in front of the loop flags
        ht = v["ht"]
        nt = Signal(len(H_) + 2, **RL)
        m.d.sync += nt.eq(((H_ << 2) + (C - 1)) >> lc)
        cidx = Signal(gu.unit_width, **RL)  # row * H + j: the cell of this (sequence, unit)
        half = Signal(**RL)
        sub = Signal(range(max(upw, 2)), **RL)
        z_row = Signal(FA, **RL)  # z_base + 2 * row
        h_row = Signal(FA, **RL)  # h_base + row
        with m.If(v["op_is_lstm"]):
            m.d.comb += [
                self.cmd.payload.n.eq(H_ << 2),
                self.cmd.payload.kt.eq(f[8] + ht),
                self.cmd.payload.nt.eq(nt),
                self.cmd.payload.relu.eq(0),
                self.cmd.payload.gate.eq(1),
            ]
        if upw:
            zw = rdq if upw == 1 else rdq.word_select(sub, 64)
        else:  # 4x4: gates i, f from the first word of the row (kept in zlo), g, o from the second
            zlo = Signal(32, **RL)
            zw = Cat(zlo, rdq)
            v.update(zlo=zlo)
        m.d.comb += [gu.i_stream.payload.acc[g].eq(zw[16 * g : 16 * g + 16]) for g in range(4)]
        m.d.comb += [gu.i_stream.payload.unit.eq(cidx), gu.i_stream.payload.first.eq(v["cc"] == 0)]
        v.update(per=per, upw=upw, ht=ht, cidx=cidx, half=half, sub=sub, z_row=z_row, h_row=h_row, gu=gu)

    def _lstm_states(self, m, v):
        """The states of PWL_LOAD and LSTM, opened inside the sequencer's FSM; ``v``: :meth:`_lstm_setup`'s names."""
        f, gu, per, upw, R = v["f"], v["gu"], v["per"], v["upw"], self.config.rows
        addr, we, rd = v["addr"], v["we"], v["rd"]
        cx, cy, cc, ln, rp, bp, wp = (v[n] for n in ("cx", "cy", "cc", "ln", "rp", "bp", "wp"))
        ht, cidx, half, sub, z_row, h_row = (v[n] for n in ("ht", "cidx", "half", "sub", "z_row", "h_row"))
        last_x, last_y, last_c, ph_zero, ph_gate = (v[n] for n in ("last_x", "last_y", "last_c", "ph_zero", "ph_gate"))
        M_ = f[0]

        # rp = src (set while fetching); ln counts the word's entries
        with m.State("PL_READ"):
            m.d.comb += [addr.eq(rp), rd.eq(1)]
            m.d.sync += rp.eq(v["rsum"])
            m.next = "PL_WAIT"
        with m.State("PL_WAIT"):
            m.next = "PL_LATCH"
        with m.State("PL_LATCH"):  # rdq is loaded at the end of this cycle
            m.d.sync += ln.eq(0)
            m.next = "PL_WRITE"
        with m.State("PL_WRITE"):
            m.d.comb += gu.p_en.eq(1)
            m.d.sync += ln.eq(ln + 1)
            with m.If(ln == per - 1):
                m.d.sync += cx.eq(cx + 1)
                m.next = "PL_READ"
                with m.If(last_x):
                    m.next = "FETCH"

        xt_zero = Signal(reset_less=True)
        m.d.sync += xt_zero.eq(f[8] == 0)
        with m.State("L_INIT"):
            m.d.sync += [cc.eq(0), rp.eq(f[3]), wp.eq(f[4]), cx.eq(0), cy.eq(0), ph_zero.eq(0), ph_gate.eq(0)]
            m.next = "L_COPY_RD"
            with m.If(xt_zero):  # no input tiles: nothing to do
                m.next = "FETCH"
        # x_t (xt tiles of M words) into the activation matrix; at step 0 the h tiles after it are zeroed
        with m.State("L_COPY_RD"):
            m.d.comb += [addr.eq(rp), rd.eq(1)]
            m.d.sync += rp.eq(v["rsum"])
            m.next = "L_COPY_W1"
        with m.State("L_COPY_W1"):
            m.next = "L_COPY_W2"
        with m.State("L_COPY_W2"):
            m.next = "L_COPY_WR"
        with m.State("L_COPY_WR"):
            m.d.comb += [addr.eq(wp), we.eq(1)]
            m.d.comb += v["w_all"].eq(1)
            m.d.sync += [wp.eq(wp + 1), cx.eq(cx + 1)]
            m.next = "L_COPY_RD"
            with m.If(last_x):
                m.d.sync += [cx.eq(0), cy.eq(cy + 1)]
                with m.If(last_y):
                    m.d.sync += cy.eq(0)
                    m.next = "L_GEMM_CMD"
                    with m.If(cc == 0):
                        m.d.sync += [ph_zero.eq(1), v["eyq"].eq(ht)]  # (the extent of ph_zero, at once)
                        m.next = "L_ZERO_GAP"
        # two cycles a word, so that the loop flags (and the ht extent) settle after each step
        with m.State("L_ZERO_GAP"):
            m.next = "L_ZERO"
        with m.State("L_ZERO"):  # wp = h_base here
            m.d.comb += [addr.eq(wp), we.eq(1)]
            m.d.comb += v["w_zero"].eq(1)
            m.d.sync += [wp.eq(wp + 1), cx.eq(cx + 1)]
            m.next = "L_ZERO_GAP"
            with m.If(last_x):
                m.d.sync += [cx.eq(0), cy.eq(cy + 1)]
                with m.If(last_y):
                    m.d.sync += [cy.eq(0), ph_zero.eq(0)]
                    m.next = "L_GEMM_CMD"
        with m.State("L_GEMM_CMD"):
            m.d.comb += self.cmd.valid.eq(1)
            with m.If(self.cmd.ready):
                m.next = "L_GEMM_WAIT"
        with m.State("L_GEMM_WAIT"):
            m.d.comb += self.gemm_done.ready.eq(1)
            with m.If(self.gemm_done.valid):
                m.d.sync += [
                    cx.eq(0),
                    cy.eq(0),
                    ln.eq(0),
                    cidx.eq(0),
                    half.eq(0),
                    sub.eq(0),
                    bp.eq(f[5]),
                    z_row.eq(f[5]),
                    wp.eq(f[9]),
                    h_row.eq(f[9]),
                    ph_gate.eq(1),
                ]
                m.next = "L_G_READ"
        # the gate unit over every (sequence, unit): read z, send it, take h' into the packed h word
        with m.State("L_G_READ"):
            m.d.comb += [addr.eq(bp), rd.eq(1)]
            m.next = "L_G_RWAIT" if upw else "L_G_READ2"
        if not upw:  # 4x4: the row's second word (bsum = bp + 1) right after the first
            with m.State("L_G_READ2"):
                m.d.comb += [addr.eq(v["bsum"]), rd.eq(1)]
                m.next = "L_G_RWAIT"
        with m.State("L_G_RWAIT"):
            m.next = "L_G_LATCH"
        with m.State("L_G_LATCH"):  # rdq is loaded at the end of this cycle (at 4x4 the second word)
            if not upw:
                m.d.sync += v["zlo"].eq(v["rdq"])  # the first word, loaded a cycle before
            m.next = "L_G_SEND"
        with m.State("L_G_SEND"):
            m.d.comb += gu.i_stream.valid.eq(1)
            with m.If(gu.i_stream.ready):
                m.next = "L_G_WAIT"
        with m.State("L_G_WAIT"):
            m.d.comb += gu.o_stream.ready.eq(1)
            with m.If(gu.o_stream.valid):
                last_j = last_x
                m.d.comb += [v["wb_en"].eq(1), v["wb_oh"].eq(v["ln_oh"]), v["wb_val"].eq(gu.o_stream.payload.h)]
                m.d.sync += [ln.eq(ln + 1), cx.eq(cx + 1), cidx.eq(cidx + 1)]
                with m.If((ln == R - 1) | last_j):
                    m.d.comb += [addr.eq(wp), we.eq(1)]
                    m.d.sync += [ln.eq(0), wp.eq(wp + M_)]
                # next unit's z word: sub, then half, then the next N-tile (2 * M words on); at 4x4
                # every unit is an N-tile of its own
                if not upw:
                    m.d.sync += bp.eq(bp + (M_ << 1))
                else:
                    if upw > 1:
                        m.d.sync += sub.eq(sub + 1)
                    with m.If(sub == upw - 1):
                        m.d.sync += [sub.eq(0), half.eq(~half), bp.eq(v["bsum"])]
                        with m.If(half):
                            m.d.sync += bp.eq(bp + (M_ << 1) - 1)
                m.next = "L_G_READ"
                with m.If(last_j):  # next sequence
                    m.d.sync += [
                        cx.eq(0),
                        cy.eq(cy + 1),
                        sub.eq(0),
                        half.eq(0),
                        bp.eq(z_row + 2),
                        z_row.eq(z_row + 2),
                        wp.eq(h_row + 1),
                        h_row.eq(h_row + 1),
                    ]
                    with m.If(last_y):  # next step
                        m.d.sync += [cy.eq(0), cc.eq(cc + 1), wp.eq(f[4]), ph_gate.eq(0)]
                        m.next = "L_COPY_RD"
                        with m.If(last_c):
                            m.next = "FETCH"
