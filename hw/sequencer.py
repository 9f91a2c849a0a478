"""The on-chip layer sequencer: runs a layer program (quant/program.py) with no host round trip.

It fetches each instruction from the program memory, hands GEMMs to the engine's command stream
and waits for their completion, and performs the small data-movement layers itself -- 2x2
max-pool, 3x3 im2col, argmax -- through the engine's memory port while the engine is idle.

With the LSTM path (``rnn=True``) it also owns the gate unit (hw/rnn.py, one instance in ``z_in``
mode): ``PWL_LOAD`` copies table entries from the feature memory into it, and ``LSTM`` runs a whole
layer -- per step the x copy, one gate-mode GEMM and the gate unit over every (sequence, unit),
writing h where the next step's GEMM reads it (docs/architecture.md, "The LSTM path").
"""

from __future__ import annotations

from amaranth.hdl import Array, Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from quant.config import NPUConfig
from quant.gate_map import cell_depth, entries_per_word, lstm_supported
from quant.program import INSTR_WORDS, Op

from .gemm import ADDR_BITS, GemmCommand
from .rnn import REGION_PWL, GateUnit

__all__ = ["Sequencer"]


def _is_last(counter: Signal, extent):
    """``counter == extent - 1`` on the counter's increment, which the loop computes anyway (no subtractor)."""
    return (counter + 1)[: len(counter)] == extent


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
        ``8 * rows`` bits wide; address, write enable and data leave flip-flops.

    Parameters
    ----------
    rnn : bool
        Include the gate unit and the ``PWL_LOAD`` / ``LSTM`` ops (only where
        :func:`quant.gate_map.lstm_supported`; otherwise those opcodes stop with an error).
    """

    def __init__(self, config: NPUConfig, rnn: bool = True):
        self.config = config
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

    def elaborate(self, platform):
        m = Module()
        lanes = self.config.rows
        W8 = 8 * lanes
        lane_bits = max(1, (lanes - 1).bit_length())

        # The memory port is registered: the states below drive `addr`/`we`/`wdata`, which reach the
        # port one cycle later, so a read's word is on `mem_rdata` two cycles after its state.
        addr = Signal(ADDR_BITS)
        we = Signal()
        wdata = Signal(W8)
        m.d.sync += [self.mem_addr.eq(addr), self.mem_we.eq(we), self.mem_wdata.eq(wdata)]

        pc = Signal(16)  # instruction word address
        words = Array(Signal(32, name=f"iw{i}") for i in range(INSTR_WORDS))
        fetch_i = Signal(range(INSTR_WORDS + 1))
        f = [words[1 + i // 2][16 * (i % 2) : 16 * (i % 2) + 16] for i in range(10)]  # 16-bit fields
        op = words[0][:4]
        relu = words[0][4]

        with m.If(self.running):
            m.d.sync += self.cycles.eq(self.cycles + 1)

        # GEMM command straight from the fields (see quant.program.FIELDS)
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
            self.cmd.payload.gate.eq(words[0][5]),
        ]
        src, dst, h, w, ct = f[0], f[1], f[2], f[3], f[4]

        # Loop counters shared by the data-movement ops. Every address is a pointer register that
        # steps by a constant or a field (no run-time products): the layouts are row-major and the
        # loops walk them in order, so most pointers just count.
        i_ct = Signal(16)
        i_y = Signal(16)
        i_x = Signal(16)
        i_k = Signal(3)  # max-pool: which of the 4 inputs
        out_ptr = Signal(ADDR_BITS)  # next destination word
        rd_ptr = Signal(ADDR_BITS)  # current source word
        row_ptr = Signal(ADDR_BITS)  # max-pool: top-left input of the output row; argmax: src + row
        best = Array(Signal(signed(8), name=f"best{i}") for i in range(lanes))

        # im2col tap (dy, dx) as counters; the source pixel (y + dy - 1, x + dx - 1) is inside the
        # image unless it falls off one of the four borders
        dy = Signal(2)
        dx = Signal(2)
        tap_ptr = Signal(ADDR_BITS)  # src + (dy - 1) * w + (dx - 1)
        last_x = Signal()
        last_y = Signal()
        m.d.comb += [last_x.eq(_is_last(i_x, w)), last_y.eq(_is_last(i_y, h))]
        inside = Signal()
        m.d.comb += inside.eq(
            ~((dx == 0) & (i_x == 0)) & ~((dx == 2) & last_x) & ~((dy == 0) & (i_y == 0)) & ~((dy == 2) & last_y)
        )
        ins_d = Signal(2)  # `inside` of the read in flight (two cycles to its word)

        # max-pool reads in flight: valid and first-of-four flags, two stages
        pv = Signal(2)
        pfirst = Signal(2)
        m.d.sync += [pv.eq(pv << 1), pfirst.eq(pfirst << 1), ins_d.eq(ins_d << 1)]
        with m.If(pv[1]):
            for i in range(lanes):
                v = self.mem_rdata[8 * i : 8 * i + 8].as_signed()
                m.d.sync += best[i].eq(Mux(pfirst[1] | (v > best[i]), v, best[i]))

        # argmax state
        a_row = Signal(16)
        a_nt = Signal(16)
        a_lane = Signal(range(lanes + 1))
        a_slot = Signal(range(lanes))  # a_row % lanes, counted
        a_best = Signal(signed(9))
        a_idx = Signal(16)
        gidx = Signal(16)  # a_nt * lanes + a_lane, counted
        a_pack = Signal(W8)
        a_word = Signal(W8)
        lane_vals = Array(a_word[8 * i : 8 * i + 8].as_signed() for i in range(lanes))

        lstm = self._lstm_setup(m, f, words, i_x, i_y, out_ptr, rd_ptr, a_word, a_pack) if self.rnn else None
        if lstm is not None:
            lstm.update(addr=addr, we=we, wdata=wdata)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [
                        pc.eq(0),
                        fetch_i.eq(0),
                        self.running.eq(1),
                        self.done.eq(0),
                        self.error.eq(0),
                        self.cycles.eq(0),
                    ]
                    m.next = "FETCH"
            with m.State("FETCH"):
                m.d.comb += self.prog_addr.eq(pc + fetch_i)
                m.d.sync += fetch_i.eq(fetch_i + 1)
                with m.If(fetch_i != 0):
                    m.d.sync += words[fetch_i - 1].eq(self.prog_data)
                with m.If(fetch_i == INSTR_WORDS):
                    m.d.sync += [fetch_i.eq(0), pc.eq(pc + INSTR_WORDS)]
                    m.next = "DECODE"
            with m.State("DECODE"):
                m.d.sync += [i_ct.eq(0), i_y.eq(0), i_x.eq(0), i_k.eq(0), dy.eq(0), dx.eq(0)]
                m.d.sync += [a_row.eq(0), a_nt.eq(0), a_lane.eq(0), a_slot.eq(0), gidx.eq(0), a_pack.eq(0)]
                m.d.sync += [out_ptr.eq(dst), rd_ptr.eq(src), row_ptr.eq(src)]
                # IM2COL3 starts at tap (0, 0): src - w - 1 (modulo the address width; only read inside)
                with m.If(op == Op.IM2COL3):
                    m.d.sync += [rd_ptr.eq(src - w - 1), tap_ptr.eq(src - w - 1)]
                # An op with a zero extent does nothing (as in quant.device_model); the loops below
                # count to `extent - 1` and would never end on a zero.
                empty = Signal()
                with m.Switch(op):
                    with m.Case(Op.GEMM):
                        m.d.comb += empty.eq((f[0] == 0) | (f[1] == 0) | (f[2] == 0) | (f[3] == 0))
                    with m.Case(Op.MAXPOOL2):
                        # also an image smaller than 2x2 (no output pixel)
                        m.d.comb += empty.eq((h[1:] == 0) | (w[1:] == 0) | (ct == 0))
                    with m.Case(Op.IM2COL3):
                        m.d.comb += empty.eq((h == 0) | (w == 0) | (ct == 0))
                    with m.Case(Op.ARGMAX):
                        m.d.comb += empty.eq((f[2] == 0) | (f[3] == 0) | (f[4] == 0))
                    with m.Case(Op.PWL_LOAD):
                        m.d.comb += empty.eq(f[1] == 0)
                    with m.Case(Op.LSTM):
                        m.d.comb += empty.eq((f[0] == 0) | (f[1] == 0) | (f[2] == 0) | (f[8] == 0))
                with m.Switch(op):
                    with m.Case(Op.END):
                        m.d.sync += [self.running.eq(0), self.done.eq(1)]
                        m.next = "IDLE"
                    if self.rnn:
                        with m.Case(Op.PWL_LOAD, Op.LSTM):
                            with m.If(empty):
                                m.next = "FETCH"
                            with m.Elif(op == Op.PWL_LOAD):
                                m.next = "PL_READ"
                            with m.Else():
                                m.next = "L_INIT"
                    with m.Case(Op.GEMM, Op.MAXPOOL2, Op.IM2COL3, Op.ARGMAX):
                        with m.If(empty):
                            m.next = "FETCH"
                        with m.Elif(op == Op.GEMM):
                            m.next = "GEMM_CMD"
                        with m.Elif(op == Op.MAXPOOL2):
                            m.next = "POOL_READ"
                        with m.Elif(op == Op.IM2COL3):
                            m.next = "IM2COL"
                        with m.Else():
                            m.next = "ARG_READ"
                    with m.Default():
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

            # ---- MAXPOOL2: 4 back-to-back reads (p, p+1, p+w, p+w+1), lane-wise max as the words
            # arrive (see `pv` above), 1 write per output pixel; 7 cycles a pixel ----
            # rd_ptr: top-left input of the output pixel; outputs are consecutive words from dst
            with m.State("POOL_READ"):
                m.d.comb += addr.eq(rd_ptr + Mux(i_k[1], w, 0) + i_k[0])
                m.d.sync += [pv[0].eq(1), pfirst[0].eq(i_k == 0), i_k.eq(i_k + 1)]
                with m.If(i_k == 3):
                    m.next = "POOL_W1"
            with m.State("POOL_W1"):
                m.next = "POOL_W2"
            with m.State("POOL_W2"):
                m.next = "POOL_WRITE"
            with m.State("POOL_WRITE"):
                m.d.comb += [addr.eq(out_ptr), we.eq(1)]
                for i in range(lanes):
                    m.d.comb += wdata[8 * i : 8 * i + 8].eq(best[i])
                m.d.sync += [i_k.eq(0), i_x.eq(i_x + 1), out_ptr.eq(out_ptr + 1), rd_ptr.eq(rd_ptr + 2)]
                m.next = "POOL_READ"
                with m.If(_is_last(i_x, w >> 1)):
                    # next output row: two input rows down
                    m.d.sync += [
                        i_x.eq(0),
                        i_y.eq(i_y + 1),
                        rd_ptr.eq(row_ptr + (w << 1)),
                        row_ptr.eq(row_ptr + (w << 1)),
                    ]
                    with m.If(_is_last(i_y, h >> 1)):
                        # next channel tile: past an odd height's unused last row
                        nxt = Signal(ADDR_BITS)
                        m.d.comb += nxt.eq(row_ptr + (w << 1) + Mux(h[0], w, 0))
                        m.d.sync += [i_y.eq(0), i_ct.eq(i_ct + 1), rd_ptr.eq(nxt), row_ptr.eq(nxt)]
                        with m.If(_is_last(i_ct, ct)):
                            m.next = "FETCH"

            # ---- IM2COL3: one read (or a zero) and one write per destination word, 3 cycles ----
            # Source words are consecutive within a tap (channel tiles and rows are contiguous), so
            # rd_ptr counts; a tap starts at tap_ptr = src + (dy - 1) * w + dx - 1.
            with m.State("IM2COL"):
                m.d.comb += addr.eq(rd_ptr)
                m.d.sync += [ins_d[0].eq(inside), rd_ptr.eq(rd_ptr + 1), i_x.eq(i_x + 1)]
                m.next = "IM2COL_WAIT"
                with m.If(last_x):
                    m.d.sync += [i_x.eq(0), i_y.eq(i_y + 1)]
                    with m.If(last_y):
                        m.d.sync += [i_y.eq(0), i_ct.eq(i_ct + 1)]
                        with m.If(_is_last(i_ct, ct)):
                            step = Signal(ADDR_BITS)
                            m.d.comb += step.eq(tap_ptr + Mux(dx == 2, w - 2, 1))
                            m.d.sync += [i_ct.eq(0), rd_ptr.eq(step), tap_ptr.eq(step), dx.eq(dx + 1)]
                            with m.If(dx == 2):
                                m.d.sync += [dx.eq(0), dy.eq(dy + 1)]
            with m.State("IM2COL_WAIT"):
                m.next = "IM2COL_WRITE"
            with m.State("IM2COL_WRITE"):
                m.d.comb += [addr.eq(out_ptr), wdata.eq(Mux(ins_d[1], self.mem_rdata, 0)), we.eq(1)]
                m.d.sync += out_ptr.eq(out_ptr + 1)
                m.next = "IM2COL"
                # the read state wrapped every counter after the last tap
                with m.If((dy == 3) & (dx == 0)):
                    m.next = "FETCH"

            # ---- ARGMAX: scan each row's lanes, pack one index byte per row ----
            # fields: src f[0], dst f[1], m f[2], n f[3], nt f[4]; rd_ptr = src + a_nt * m + a_row
            with m.State("ARG_READ"):
                m.d.comb += addr.eq(rd_ptr)
                m.next = "ARG_WAIT"
            with m.State("ARG_WAIT"):
                m.next = "ARG_LATCH"
            with m.State("ARG_LATCH"):
                m.d.sync += [a_word.eq(self.mem_rdata), a_lane.eq(0)]
                m.next = "ARG_SCAN"
            with m.State("ARG_SCAN"):
                v = lane_vals[a_lane[:lane_bits]]
                with m.If((gidx < f[3]) & ((gidx == 0) | (v > a_best))):
                    m.d.sync += [a_best.eq(v), a_idx.eq(gidx)]
                m.d.sync += [a_lane.eq(a_lane + 1), gidx.eq(gidx + 1)]
                with m.If(a_lane == lanes - 1):
                    m.d.sync += [a_nt.eq(a_nt + 1), rd_ptr.eq(rd_ptr + f[2])]
                    m.next = "ARG_READ"
                    with m.If(_is_last(a_nt, f[4])):
                        m.d.sync += [a_nt.eq(0), rd_ptr.eq(row_ptr + 1), row_ptr.eq(row_ptr + 1)]
                        m.next = "ARG_EMIT"
            with m.State("ARG_EMIT"):
                packed = Signal(W8)
                for i in range(lanes):
                    m.d.comb += packed[8 * i : 8 * i + 8].eq(Mux(a_slot == i, a_idx[:8], a_pack[8 * i : 8 * i + 8]))
                m.d.sync += [a_pack.eq(packed), a_row.eq(a_row + 1), a_slot.eq(a_slot + 1), gidx.eq(0)]
                with m.If(a_slot == lanes - 1):
                    m.d.sync += a_slot.eq(0)
                last = Signal()
                m.d.comb += last.eq(_is_last(a_row, f[2]))
                with m.If((a_slot == lanes - 1) | last):
                    m.d.comb += [addr.eq(out_ptr), wdata.eq(packed), we.eq(1)]
                    m.d.sync += [out_ptr.eq(out_ptr + 1), a_pack.eq(0)]
                m.next = "ARG_READ"
                with m.If(last):
                    m.next = "FETCH"

            if self.rnn:  # opens its states inside this FSM
                self._lstm_states(m, lstm)
        return m

    def _lstm_setup(self, m, f, words, i_x, i_y, out_ptr, rd_ptr, a_word, a_pack):
        """Registers and combinational logic of PWL_LOAD and LSTM (see quant/program.py)."""
        cfg = self.config
        gu = self.gate_unit
        m.submodules.gate = gu
        R, C = cfg.rows, cfg.cols
        lr, lc = (R - 1).bit_length(), (C - 1).bit_length()
        per = entries_per_word(cfg)
        upw = C // 8  # units per z word

        # ---- PWL_LOAD: fields src f[0], count f[1]; rows/4 entries per word ----
        e_i = Signal(range(per + 1))
        entry = Signal(32)
        if per > 1:
            m.d.comb += entry.eq(a_word.word_select(e_i[: (per - 1).bit_length()], 32))
        else:
            m.d.comb += entry.eq(a_word[:32])
        m.d.comb += [gu.p_addr.eq((REGION_PWL << gu.offset_width) | entry[16:32]), gu.p_data.eq(entry[:16])]
        # ---- LSTM: fields m f[0], hidden f[1], steps f[2], x_base f[3], act_base f[4], z_base f[5],
        # wgt_base f[6], chan_base f[7], xt f[8], h_base f[9] ----
        M_, H_, T_ = f[0], f[1], f[2]
        x_base, act_base, z_base, xt, h_base = f[3], f[4], f[5], f[8], f[9]
        ht, nt = Signal(16), Signal(16)
        m.d.comb += [ht.eq((H_ + (R - 1)) >> lr), nt.eq(((H_ << 2) + (C - 1)) >> lc)]
        t = Signal(16)  # step
        j = Signal(16)  # unit
        row = Signal(16)  # sequence
        lane = Signal(range(R))  # h lane of unit j
        cidx = Signal(gu.unit_width)  # row * H + j: the cell of this (sequence, unit)
        half = Signal()
        sub = Signal(range(max(upw, 2)))
        # z word of (row, j): z_base + 2 * row + 2 * M * (j // (C/4)) + half, counted in z_ptr
        z_ptr = Signal(ADDR_BITS)
        z_row = Signal(ADDR_BITS)  # z_base + 2 * row
        h_ptr = Signal(ADDR_BITS)  # h_base + (j // R) * M + row
        h_row = Signal(ADDR_BITS)  # h_base + row

        with m.If(words[0][:4] == Op.LSTM):
            m.d.comb += [
                self.cmd.payload.m.eq(M_),
                self.cmd.payload.n.eq(H_ << 2),
                self.cmd.payload.kt.eq(xt + ht),
                self.cmd.payload.nt.eq(nt),
                self.cmd.payload.act_base.eq(act_base),
                self.cmd.payload.out_base.eq(z_base),
                self.cmd.payload.relu.eq(0),
                self.cmd.payload.gate.eq(1),
            ]
        zw = self.mem_rdata if upw == 1 else self.mem_rdata.word_select(sub, 64)
        m.d.comb += [gu.i_stream.payload.acc[g].eq(zw[16 * g : 16 * g + 16]) for g in range(4)]
        m.d.comb += [gu.i_stream.payload.unit.eq(cidx), gu.i_stream.payload.first.eq(t == 0)]
        packed = Signal(8 * R)
        for i in range(R):
            m.d.comb += packed[8 * i : 8 * i + 8].eq(Mux(lane == i, gu.o_stream.payload.h, a_pack[8 * i : 8 * i + 8]))
        return locals()

    def _lstm_states(self, m, v):
        """The states of PWL_LOAD and LSTM, opened inside the sequencer's FSM; ``v``: :meth:`_lstm_setup`'s names."""
        f, gu, per, R, upw = v["f"], v["gu"], v["per"], v["R"], v["upw"]
        addr, we, wdata = v["addr"], v["we"], v["wdata"]
        i_x, i_y, out_ptr, rd_ptr, a_word, a_pack, e_i = (
            v[k] for k in ("i_x", "i_y", "out_ptr", "rd_ptr", "a_word", "a_pack", "e_i")
        )
        t, j, row, lane, cidx, half, sub = (v[k] for k in ("t", "j", "row", "lane", "cidx", "half", "sub"))
        z_ptr, z_row, h_ptr, h_row, packed = (v[k] for k in ("z_ptr", "z_row", "h_ptr", "h_row", "packed"))
        M_, H_, T_, xt, ht = (v[k] for k in ("M_", "H_", "T_", "xt", "ht"))
        x_base, act_base, z_base, h_base = (v[k] for k in ("x_base", "act_base", "z_base", "h_base"))

        # rd_ptr = src + i_x (set at DECODE)
        with m.State("PL_READ"):
            m.d.comb += addr.eq(rd_ptr)
            m.d.sync += rd_ptr.eq(rd_ptr + 1)
            m.next = "PL_WAIT"
        with m.State("PL_WAIT"):
            m.next = "PL_LATCH"
        with m.State("PL_LATCH"):
            m.d.sync += [a_word.eq(self.mem_rdata), e_i.eq(0)]
            m.next = "PL_WRITE"
        with m.State("PL_WRITE"):
            m.d.comb += gu.p_en.eq(1)
            m.d.sync += e_i.eq(e_i + 1)
            with m.If(e_i == per - 1):
                m.d.sync += i_x.eq(i_x + 1)
                m.next = "PL_READ"
                with m.If(_is_last(i_x, f[1])):
                    m.next = "FETCH"

        with m.State("L_INIT"):
            m.d.sync += [t.eq(0), rd_ptr.eq(x_base), out_ptr.eq(act_base), i_x.eq(0), i_y.eq(0)]
            m.next = "L_COPY_RD"
        # x_t (xt tiles of M words; the steps' x blocks are consecutive) into the activation matrix;
        # at step 0 the h tiles after it are zeroed
        with m.State("L_COPY_RD"):
            m.d.comb += addr.eq(rd_ptr)
            m.d.sync += rd_ptr.eq(rd_ptr + 1)
            m.next = "L_COPY_WAIT"
        with m.State("L_COPY_WAIT"):
            m.next = "L_COPY_WR"
        with m.State("L_COPY_WR"):
            m.d.comb += [addr.eq(out_ptr), wdata.eq(self.mem_rdata), we.eq(1)]
            m.d.sync += [out_ptr.eq(out_ptr + 1), i_x.eq(i_x + 1)]
            m.next = "L_COPY_RD"
            with m.If(_is_last(i_x, M_)):
                m.d.sync += [i_x.eq(0), i_y.eq(i_y + 1)]
                with m.If(_is_last(i_y, xt)):
                    m.d.sync += i_y.eq(0)
                    m.next = "L_GEMM_CMD"
                    with m.If(t == 0):
                        m.next = "L_ZERO"
        with m.State("L_ZERO"):  # out_ptr = h_base here
            m.d.comb += [addr.eq(out_ptr), wdata.eq(0), we.eq(1)]
            m.d.sync += [out_ptr.eq(out_ptr + 1), i_x.eq(i_x + 1)]
            with m.If(_is_last(i_x, M_)):
                m.d.sync += [i_x.eq(0), i_y.eq(i_y + 1)]
                with m.If(_is_last(i_y, ht)):
                    m.d.sync += i_y.eq(0)
                    m.next = "L_GEMM_CMD"
        with m.State("L_GEMM_CMD"):
            m.d.comb += self.cmd.valid.eq(1)
            with m.If(self.cmd.ready):
                m.next = "L_GEMM_WAIT"
        with m.State("L_GEMM_WAIT"):
            m.d.comb += self.gemm_done.ready.eq(1)
            with m.If(self.gemm_done.valid):
                m.d.sync += [
                    j.eq(0),
                    row.eq(0),
                    lane.eq(0),
                    cidx.eq(0),
                    half.eq(0),
                    sub.eq(0),
                    z_ptr.eq(z_base),
                    z_row.eq(z_base),
                    h_ptr.eq(h_base),
                    h_row.eq(h_base),
                    a_pack.eq(0),
                ]
                m.next = "L_G_READ"
        # the gate unit over every (sequence, unit): read z, send it, take h' into the packed h word
        with m.State("L_G_READ"):
            m.d.comb += addr.eq(z_ptr)
            m.next = "L_G_RWAIT"
        with m.State("L_G_RWAIT"):
            m.d.comb += addr.eq(z_ptr)
            m.next = "L_G_SEND"
        with m.State("L_G_SEND"):
            m.d.comb += [addr.eq(z_ptr), gu.i_stream.valid.eq(1)]  # the same word while waiting
            with m.If(gu.i_stream.ready):
                m.next = "L_G_WAIT"
        with m.State("L_G_WAIT"):
            m.d.comb += gu.o_stream.ready.eq(1)
            with m.If(gu.o_stream.valid):
                last_j = Signal()
                m.d.comb += last_j.eq(_is_last(j, H_))
                m.d.sync += [a_pack.eq(packed), lane.eq(lane + 1), j.eq(j + 1), cidx.eq(cidx + 1)]
                with m.If((lane == R - 1) | last_j):
                    m.d.comb += [addr.eq(h_ptr), wdata.eq(packed), we.eq(1)]
                    m.d.sync += [a_pack.eq(0), lane.eq(0), h_ptr.eq(h_ptr + M_)]
                # next unit's z word: sub, then half, then the next N-tile (2 * M words on)
                if upw > 1:
                    m.d.sync += sub.eq(sub + 1)
                with m.If(sub == upw - 1):
                    m.d.sync += [sub.eq(0), half.eq(~half), z_ptr.eq(z_ptr + 1)]
                    with m.If(half):
                        m.d.sync += z_ptr.eq(z_ptr + (M_ << 1) - 1)
                m.next = "L_G_READ"
                with m.If(last_j):  # next sequence
                    m.d.sync += [
                        j.eq(0),
                        row.eq(row + 1),
                        sub.eq(0),
                        half.eq(0),
                        z_ptr.eq(z_row + 2),
                        z_row.eq(z_row + 2),
                        h_ptr.eq(h_row + 1),
                        h_row.eq(h_row + 1),
                    ]
                    with m.If(_is_last(row, M_)):  # next step
                        m.d.sync += [t.eq(t + 1), out_ptr.eq(act_base)]
                        m.next = "L_COPY_RD"
                        with m.If(_is_last(t, T_)):
                            m.next = "FETCH"
