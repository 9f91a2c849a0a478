"""The on-chip layer sequencer: runs a layer program (quant/program.py) with no host round trip.

It fetches each instruction from the program memory, hands GEMMs to the engine's command stream
and waits for their completion, and performs the small data-movement layers itself -- 2x2
max-pool, 3x3 im2col, argmax -- through the engine's memory port while the engine is idle.
"""

from __future__ import annotations

from amaranth.hdl import Array, Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from quant.config import NPUConfig
from quant.program import INSTR_WORDS, Op

from .gemm import ADDR_BITS, GemmCommand

__all__ = ["Sequencer"]


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
        The feature memory through the engine's host port (word one cycle after the address).
    """

    def __init__(self, config: NPUConfig):
        self.config = config
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
                "mem_wdata": Out(64),
                "mem_we": Out(1),
                "mem_rdata": In(64),
            }
        )

    def elaborate(self, platform):
        m = Module()
        lanes = self.config.rows
        W8 = 8 * lanes

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
        ]
        src, dst, h, w, ct = f[0], f[1], f[2], f[3], f[4]

        # loop counters shared by the data-movement ops
        i_ct = Signal(16)
        i_y = Signal(16)
        i_x = Signal(16)
        i_tap = Signal(4)
        i_k = Signal(3)  # max-pool: which of the 4 inputs
        ct_off = Signal(ADDR_BITS + 16)  # ct * M (source)
        dct_off = Signal(ADDR_BITS + 16)  # ct * M' (max-pool destination)
        out_ptr = Signal(ADDR_BITS)
        npix = Signal(32)
        m.d.comb += npix.eq(h * w)
        best = Array(Signal(signed(8), name=f"best{i}") for i in range(lanes))

        # im2col source pixel (y + dy - 1, x + dx - 1)
        dy = Signal(2)
        dx = Signal(2)
        m.d.comb += [dy.eq(Mux(i_tap >= 6, 2, Mux(i_tap >= 3, 1, 0))), dx.eq(i_tap - dy * 3)]
        sy = Signal(signed(18))
        sx = Signal(signed(18))
        m.d.comb += [sy.eq(i_y + dy - 1), sx.eq(i_x + dx - 1)]
        inside = Signal()
        m.d.comb += inside.eq((sy >= 0) & (sy < h) & (sx >= 0) & (sx < w))

        # argmax state
        a_row = Signal(16)
        a_nt = Signal(16)
        a_lane = Signal(range(lanes + 1))
        a_best = Signal(signed(9))
        a_idx = Signal(16)
        a_pack = Signal(W8)
        a_word = Signal(W8)
        lane_vals = Array(a_word[8 * i : 8 * i + 8].as_signed() for i in range(lanes))

        m.d.comb += [self.mem_we.eq(0)]

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
                m.d.sync += [i_ct.eq(0), i_y.eq(0), i_x.eq(0), i_tap.eq(0), i_k.eq(0), ct_off.eq(0), dct_off.eq(0)]
                m.d.sync += [a_row.eq(0), a_nt.eq(0), a_lane.eq(0), a_pack.eq(0), out_ptr.eq(dst)]
                # An op with a zero extent does nothing (as in quant.device_model); the loops below
                # count to `extent - 1` and would never end on a zero.
                empty = Signal()
                with m.Switch(op):
                    with m.Case(Op.GEMM):
                        m.d.comb += empty.eq((f[0] == 0) | (f[1] == 0) | (f[2] == 0) | (f[3] == 0))
                    with m.Case(Op.MAXPOOL2, Op.IM2COL3):
                        m.d.comb += empty.eq((h == 0) | (w == 0) | (ct == 0))
                    with m.Case(Op.ARGMAX):
                        m.d.comb += empty.eq((f[2] == 0) | (f[3] == 0) | (f[4] == 0))
                with m.Switch(op):
                    with m.Case(Op.END):
                        m.d.sync += [self.running.eq(0), self.done.eq(1)]
                        m.next = "IDLE"
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

            # ---- MAXPOOL2: 4 reads, lane-wise max, 1 write per output pixel ----
            with m.State("POOL_READ"):
                base = Signal(ADDR_BITS + 16)
                m.d.comb += base.eq(src + ct_off + (i_y * 2) * w + i_x * 2)
                m.d.comb += self.mem_addr.eq(base + Mux(i_k[0], 1, 0) + Mux(i_k[1], w, 0))
                m.next = "POOL_ACC"
            with m.State("POOL_ACC"):
                for i in range(lanes):
                    v = self.mem_rdata[8 * i : 8 * i + 8].as_signed()
                    m.d.sync += best[i].eq(Mux((i_k == 0) | (v > best[i]), v, best[i]))
                m.d.sync += i_k.eq(i_k + 1)
                with m.If(i_k == 3):
                    m.next = "POOL_WRITE"
                with m.Else():
                    m.next = "POOL_READ"
            with m.State("POOL_WRITE"):
                m.d.comb += [
                    self.mem_addr.eq(dst + dct_off + i_y * (w >> 1) + i_x),
                    self.mem_we.eq(1),
                ]
                for i in range(lanes):
                    m.d.comb += self.mem_wdata[8 * i : 8 * i + 8].eq(best[i])
                m.d.sync += [i_k.eq(0), i_x.eq(i_x + 1)]
                m.next = "POOL_READ"
                with m.If(i_x == (w >> 1) - 1):
                    m.d.sync += [i_x.eq(0), i_y.eq(i_y + 1)]
                    with m.If(i_y == (h >> 1) - 1):
                        m.d.sync += [
                            i_y.eq(0),
                            i_ct.eq(i_ct + 1),
                            ct_off.eq(ct_off + npix),
                            dct_off.eq(dct_off + (npix >> 2)),
                        ]
                        with m.If(i_ct == ct - 1):
                            m.next = "FETCH"

            # ---- IM2COL3: one read (or a zero) and one write per destination word ----
            with m.State("IM2COL"):
                m.d.comb += self.mem_addr.eq(src + ct_off + (sy * w + sx)[: ADDR_BITS + 16])
                m.next = "IM2COL_WRITE"
            with m.State("IM2COL_WRITE"):
                m.d.comb += [
                    self.mem_addr.eq(out_ptr),
                    self.mem_wdata.eq(Mux(inside, self.mem_rdata, 0)),
                    self.mem_we.eq(1),
                ]
                m.d.sync += [out_ptr.eq(out_ptr + 1), i_x.eq(i_x + 1)]
                m.next = "IM2COL"
                with m.If(i_x == w - 1):
                    m.d.sync += [i_x.eq(0), i_y.eq(i_y + 1)]
                    with m.If(i_y == h - 1):
                        m.d.sync += [i_y.eq(0), i_ct.eq(i_ct + 1), ct_off.eq(ct_off + npix)]
                        with m.If(i_ct == ct - 1):
                            m.d.sync += [i_ct.eq(0), ct_off.eq(0), i_tap.eq(i_tap + 1)]
                            with m.If(i_tap == 8):
                                m.next = "FETCH"

            # ---- ARGMAX: scan each row's lanes, pack one index byte per row ----
            # fields: src f[0], dst f[1], m f[2], n f[3], nt f[4]
            with m.State("ARG_READ"):
                m.d.comb += self.mem_addr.eq(src + a_nt * f[2] + a_row)
                m.next = "ARG_LATCH"
            with m.State("ARG_LATCH"):
                m.d.sync += [a_word.eq(self.mem_rdata), a_lane.eq(0)]
                m.next = "ARG_SCAN"
            with m.State("ARG_SCAN"):
                gidx = Signal(16)
                m.d.comb += gidx.eq(a_nt * lanes + a_lane)
                v = lane_vals[a_lane[: max(1, (lanes - 1).bit_length())]]
                with m.If((gidx < f[3]) & (((a_nt == 0) & (a_lane == 0)) | (v > a_best))):
                    m.d.sync += [a_best.eq(v), a_idx.eq(gidx)]
                m.d.sync += a_lane.eq(a_lane + 1)
                with m.If(a_lane == lanes - 1):
                    m.d.sync += a_nt.eq(a_nt + 1)
                    m.next = "ARG_READ"
                    with m.If(a_nt == f[4] - 1):
                        m.d.sync += a_nt.eq(0)
                        m.next = "ARG_EMIT"
            with m.State("ARG_EMIT"):
                slot = Signal(range(lanes))
                m.d.comb += slot.eq(a_row % lanes if lanes & (lanes - 1) else a_row[: max(1, (lanes - 1).bit_length())])
                packed = Signal(W8)
                for i in range(lanes):
                    m.d.comb += packed[8 * i : 8 * i + 8].eq(Mux(slot == i, a_idx[:8], a_pack[8 * i : 8 * i + 8]))
                m.d.sync += [a_pack.eq(packed), a_row.eq(a_row + 1)]
                last = Signal()
                m.d.comb += last.eq(a_row == f[2] - 1)
                with m.If((slot == lanes - 1) | last):
                    m.d.comb += [self.mem_addr.eq(out_ptr), self.mem_wdata.eq(packed), self.mem_we.eq(1)]
                    m.d.sync += [out_ptr.eq(out_ptr + 1), a_pack.eq(0)]
                m.next = "ARG_READ"
                with m.If(last):
                    m.next = "FETCH"
        return m
