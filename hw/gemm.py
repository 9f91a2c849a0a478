"""The GEMM engine: ``C = requant(A @ W + bias)`` for any M x K by K x N, on the systolic array.

Dataflow (see docs/architecture.md)::

    for mb in M-blocks (m_block rows each):         accumulator bank = block parity
      for nt in N-tiles (cols outputs each):
        for kt in K-tiles (rows each):              one "pass": weight tile (kt, nt) in the array
          for m in the block's rows:                one activation vector per cycle
            acc[bank][m] (+)= A[m, kt-tile] @ W[kt-tile, nt-tile]
        drain the block through the requantizer while the next block accumulates

* The array holds one weight tile (one register per PE). The tile of pass p+1 is written row
  by row, top-down, right behind pass p's last vector, and pass p+1 starts while its last rows
  are still being written (a vector reaches row r only r // 2 cycles after row 0): a pass's
  first vector comes ``quant.perf.weight_lead(config) + 1`` cycles after the previous pass's
  last (6 on an 8x8 array; drain slots may use the gap) instead of right after it, which costs
  a few percent of a long GEMM and saves two weight registers and a multiplexer in every PE.
* Column sums leave the array into a read-modify-write accumulator memory with two banks. A
  finished block is drained row by row through one time-shared requantizer (SPEC §3) into the
  feature memory, while the other bank accumulates the next block. The drain borrows the
  accumulator's read port through "drain slots" that the issuer places in the activation stream.

Memory layouts (word addresses; the compiler in ``quant`` produces them):

* feature memory (``rows`` int8 lanes per word): ``A[m, kt*rows + r]`` at ``act_base + kt*M + m``,
  lane ``r``; lanes past K hold 0. Results: ``C[m, nt*cols + c]`` at ``out_base + nt*M + m``, lane
  ``c``; lanes past N are written as 0, so a result is the next layer's input as it stands.
* weight memory (``cols`` codes per word): tile ``(kt, nt)`` row ``r`` at
  ``wgt_base + ((nt*KT + kt) * rows) + r`` (tiles of one N-tile consecutive).
* channel memory: ``{bias, M, n}`` of output channel ``j`` at ``chan_base + j``.

The engine needs ``rows == cols`` so that results and activations share one word format.

*Gate mode* (``cmd.gate``, the LSTM path, docs/architecture.md): the requantizer saturates to int16
(SPEC §4's Q3.12 ``z``, no ReLU) and a result row of an N-tile takes two words, ``cols/2`` int16
lanes each: ``C[m, nt*cols + c]`` at ``out_base + 2*(nt*M + m) + c // (cols/2)``, 16-bit lane
``c % (cols/2)``.
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from quant.config import NPUConfig
from quant.perf import DRAIN_BUFFER_ROWS, pipeline_latency, weight_lead

from .ebr import EBR_DEPTH, CollisionFreeRAM, is_ice40, read_port_no_rw_check
from .requant import Requantizer
from .spram import SinglePortRAM, has_spram, spram_blocks
from .systolic import SystolicArray

__all__ = ["GemmCommand", "ChannelParams", "GemmEngine", "REGION_FEATURE", "REGION_WEIGHT", "REGION_CHANNEL"]

REGION_FEATURE, REGION_WEIGHT, REGION_CHANNEL = 0, 1, 2

DIM_BITS = 16
ADDR_BITS = 16

GemmCommand = data.StructLayout(
    {
        "m": unsigned(DIM_BITS),
        "kt": unsigned(DIM_BITS),
        "nt": unsigned(DIM_BITS),
        "n": unsigned(DIM_BITS),
        "act_base": unsigned(ADDR_BITS),
        "out_base": unsigned(ADDR_BITS),
        "wgt_base": unsigned(ADDR_BITS),
        "chan_base": unsigned(ADDR_BITS),
        "relu": unsigned(1),
        "gate": unsigned(1),
    }
)

ChannelParams = data.StructLayout({"bias": signed(32), "mult": unsigned(16), "shift": unsigned(6)})
#: The part of :data:`ChannelParams` kept in the dual-port channel memory (the bias has its own).
ChannelScale = data.StructLayout({"mult": unsigned(16), "shift": unsigned(6)})


class GemmEngine(wiring.Component):
    """Tiled GEMM with double-buffered weights, a two-bank accumulator and one requantizer.

    Members
    -------
    cmd : In(stream.Signature(GemmCommand))
        One GEMM to run: ``m`` rows, ``kt = ceil(K / rows)`` K-tiles, ``nt = ceil(N / cols)``
        N-tiles, ``n`` = N (lanes past it are written as 0), base addresses, fused ReLU. Accepted
        when the engine is idle and the previous command's ``done`` has been taken. Shapes are not checked here (all counts must be >= 1): the
        compiler refuses what does not fit before anything reaches the device.
    done : Out(stream.Signature(unsigned(32)))
        Completion of a command, with the cycles it took from acceptance to the last result.
    busy : Out(1)
        A command is running (the host bus must not write memories then).
    host_region, host_addr, host_wdata, host_we : In
        Host access to the feature / weight / channel memories while idle. Writes take effect at
        the clock edge; ``host_rdata`` shows the word at ``host_addr`` ``host_read_latency``
        cycles after it is presented (one by default; two with the memories' outputs registered
        after the region multiplexer, so that no path leaves the engine from a block RAM output).
    host_rdata : Out(port_width)
    feat_rdata : Out(8 * rows)
        Only with ``feature_tap``: the feature memory's read data itself (the word at ``host_addr``
        one cycle after it is presented while idle), for a reader that only reads features (the
        sequencer) and so needs neither the region multiplexer nor ``host_read_latency``.
    stall : In(1)
        Verification hook: freezes the whole compute pipeline for a cycle (the next one: the
        pipeline enable is a register). Tie to 0.
    out_stall : In(1)
        Verification hook: backpressure on the requantizer's output stream, in the next cycle
        (through a register), which also freezes the compute pipeline then, as a stall of the
        result path would. Tie to 0.

    Parameters
    ----------
    config : NPUConfig
    drain_rows : int
        Entries of the drain row buffer (``quant.perf.DRAIN_BUFFER_ROWS`` = 1 by default; pass the
        same value to ``quant.perf.gemm_cycles``). Each entry is ``cols * acc_width`` flip-flops.
        With one, the next row is read early enough to arrive as the head row's last lane leaves
        (on an 8x8 or larger array as fast as two entries; on 4x4 drain-bound shapes are a little slower).
    gate : bool
        Support the LSTM gate mode (``cmd.gate``); without it the bit is ignored.
    host_read_latency : int
        1 (the default) or 2: see ``host_rdata``.
    feature_tap : bool
        Add the ``feat_rdata`` output (False by default).
    read_regs : bool, optional
        Where the pipeline stage of each block-RAM read during a command goes (the activation
        and weight reads that feed the array, the accumulator read of the read-modify-write).
        True: a fabric register on the read data, so that no block-RAM output reaches the array or
        the accumulate adder in the same cycle (ECP5: the DP16KD's output register is not
        absorbed by Yosys and its clock-to-output is 5.6 ns); the accumulator row is read a cycle
        earlier to make up for it. False: the feature and weight read addresses are registered
        instead and the accumulator is read as late as possible (iCE40: a flip-flop costs a logic
        cell; a few address bits instead of a word). None (the default) picks False on an iCE40
        platform and True otherwise. Both place the data in the same cycles: the cycle model
        (``quant.perf``) holds for either.
    """

    def __init__(
        self,
        config: NPUConfig,
        drain_rows: int = DRAIN_BUFFER_ROWS,
        *,
        gate: bool = False,
        host_read_latency: int = 1,
        read_regs: bool | None = None,
        feature_tap: bool = False,
    ):
        if drain_rows < 1:
            raise ValueError(f"the drain row buffer needs at least one entry, got {drain_rows}")
        if host_read_latency not in (1, 2):
            raise ValueError(f"host_read_latency must be 1 or 2 cycles, got {host_read_latency}")
        #: cycles from ``host_addr`` to ``host_rdata`` (2: the read multiplexer is registered)
        self.host_read_latency = host_read_latency
        self.drain_rows = drain_rows
        #: registers after the block-RAM reads (True), or on their addresses (False); None: by platform
        self.read_regs = read_regs
        #: gate mode support (int16 results for the LSTM path); without it ``cmd.gate`` is ignored
        self.gate = gate
        if config.rows != config.cols:
            raise ValueError(
                f"the GEMM engine needs a square array (results are the next layer's activations), "
                f"got {config.rows}x{config.cols}"
            )
        self.config = config
        self.array = SystolicArray(config, direct=True)
        #: host port width: a feature word (8 * rows), a weight row (cols * bits) or a channel word
        self.port_width = max(64, 8 * config.rows, config.cols * config.weight_bits)
        self.feature_tap = bool(feature_tap)
        tap = {"feat_rdata": Out(8 * config.rows)} if self.feature_tap else {}
        super().__init__(
            {
                "cmd": In(stream.Signature(GemmCommand)),
                "done": Out(stream.Signature(unsigned(32))),
                "busy": Out(1),
                "host_region": In(2),
                "host_addr": In(ADDR_BITS),
                "host_wdata": In(self.port_width),
                "host_we": In(1),
                "host_rdata": Out(self.port_width),
                "stall": In(1),
                "out_stall": In(1),
                **tap,
            }
        )

    # -- facts other code must not recompute ------------------------------------------------------

    @property
    def feature_width(self) -> int:
        return self.config.rows * 8

    @property
    def weight_width(self) -> int:
        return self.config.cols * self.config.weight_bits

    @property
    def acc_row_width(self) -> int:
        return self.config.cols * self.config.acc_width

    @property
    def pipeline_latency(self) -> int:
        """Cycles from issuing a slot to its accumulator write (feature read, its register, array)."""
        return pipeline_latency(self.config)

    @property
    def weight_lead(self) -> int:
        """Cycles from the weight loader's first row read of a tile to the first vector of its pass."""
        return weight_lead(self.config)

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        R, C = cfg.rows, cfg.cols
        Mb = cfg.m_block
        L = self.pipeline_latency
        # (see read_regs: True = register the read data, False = register the read address)
        out_regs = (not is_ice40(platform)) if self.read_regs is None else self.read_regs

        m.submodules.array = array = self.array
        # Internal widths: addresses as wide as the memory they address (the low bits of a sum
        # depend only on the low bits of its terms, so this is exact), counts as wide as the
        # largest value a command that fits the memories can hold (the compiler refuses others).
        FA = max(1, (cfg.act_depth - 1).bit_length())  # feature address
        WA = max(1, (cfg.weight_depth - 1).bit_length())  # weight address
        CA = max(1, (cfg.chan_depth - 1).bit_length())  # channel address
        MW = min(DIM_BITS, cfg.act_depth.bit_length())  # m <= act_depth (A has m rows)
        TW = min(DIM_BITS, (-(-cfg.weight_depth // R)).bit_length())  # kt * nt tiles of R words fit
        NW = min(DIM_BITS, cfg.chan_depth.bit_length())  # n channels have parameters
        MOW = (cfg.act_depth + Mb).bit_length()  # M-block offsets run up to m rounded up to Mb
        COW = (cfg.chan_depth + C).bit_length()  # output column offsets run up to n rounded up to C
        narrow = {"m": MW, "kt": TW, "nt": TW, "n": NW, "act_base": FA, "out_base": FA, "wgt_base": WA, "chan_base": CA}
        CmdRegs = data.StructLayout(
            {name: unsigned(narrow.get(name, shape.width)) for name, shape in ((k, v.shape) for k, v in GemmCommand)}
        )
        # The requantizer's tag: the row's address, "lane past N" and "last lane of the GEMM". The
        # lane itself is counted at the collector (every row sends its lanes 0..C-1 in order).
        # (collapse=False: its stage enables are the registered output ready alone, see out_ready)
        m.submodules.requant = rq = Requantizer(cfg, tag_width=FA + 2, gate=self.gate, collapse=False)

        # Feature and accumulator memories need a read and a write port in one cycle (EBR). The
        # weight memory and the channel biases are read while busy and written only while idle:
        # single-port, so on an iCE40UP they go to the SPRAM blocks (hw/spram.py), which leaves
        # enough EBRs for the rest. The multiplier/shift half of the channel memory stays in EBR.
        spram_left = 4 if has_spram(platform) else 0
        use_w = spram_blocks(self.weight_width) <= spram_left
        spram_left -= spram_blocks(self.weight_width) if use_w else 0
        use_b = spram_blocks(ChannelParams.members["bias"].width) <= spram_left
        if is_ice40(platform) and cfg.act_depth <= EBR_DEPTH:
            # No read-during-write emulation (about 70 logic cells and the UP5K NPU's host-address
            # path): a read never meets a write of its word (a GEMM's input and result regions are
            # disjoint, quant.compile refuses others), except in a host or sequencer write's own
            # cycle, whose read data nobody uses. (Deeper memories stay with Yosys, whose EBR
            # modes need no read multiplexer across blocks.)
            fmem = m.submodules.fmem = CollisionFreeRAM(self.feature_width, cfg.act_depth)
        else:
            fmem = m.submodules.fmem = Memory(shape=unsigned(self.feature_width), depth=cfg.act_depth, init=[])
        wmem = m.submodules.wmem = SinglePortRAM(self.weight_width, cfg.weight_depth, spram=use_w)
        bmem = m.submodules.bmem = SinglePortRAM(ChannelParams.members["bias"].width, cfg.chan_depth, spram=use_b)
        # (a host write does not read, as in the SinglePortRAMs, so it never collides with a read)
        cmem = m.submodules.cmem = CollisionFreeRAM(ChannelScale.size, cfg.chan_depth)
        # The engine never reads an accumulator row in the cycle it writes it (the cycle model
        # asserts this), so the memory need not emulate read-before-write (hw/ebr.py: on the
        # iCE40 that emulation would cost ~550 LCs for this 176-bit-wide memory).
        amem = m.submodules.amem = CollisionFreeRAM(self.acc_row_width, 2 * Mb)

        # The pipeline enable is the clock enable of every PE and pipeline register: a flip-flop,
        # so that only its route is on its path. Both verification hooks act a cycle late through
        # it, and output backpressure (out_stall) freezes the compute pipeline with the result
        # path, so that the lanes never fall behind the drain's schedule (see drain_ok).
        en = Signal(init=1)
        m.d.sync += en.eq(~self.stall & ~self.out_stall)

        if isinstance(fmem, CollisionFreeRAM):
            f_rd = SimpleNamespace(addr=fmem.raddr, en=fmem.re, data=fmem.rdata)
            f_wr = SimpleNamespace(addr=fmem.waddr, data=fmem.wdata, en=fmem.we)
        else:
            # (no word read in a cycle that writes it is used: the compiler keeps a GEMM's result
            # region off its input; the host and the sequencer use a read's word only from a read cycle)
            f_rd, f_wr = read_port_no_rw_check(m, fmem, platform), fmem.write_port()
        c_we = Signal()
        cmem_rdata = Signal(ChannelScale)
        m.d.comb += cmem_rdata.eq(cmem.rdata)
        chan_rdata = Signal(ChannelParams)
        m.d.comb += [
            chan_rdata.bias.eq(bmem.rdata),
            chan_rdata.mult.eq(cmem_rdata.mult),
            chan_rdata.shift.eq(cmem_rdata.shift),
        ]

        # ---- command registers ------------------------------------------------------------------
        busy = Signal()
        cmd = Signal(CmdRegs)
        gate_cmd = cmd.gate if self.gate else Const(0, 1)  # gate mode of the running command
        KT1, NT1 = cmd.kt, cmd.nt  # the command registers hold kt - 1 and nt - 1 (compared against)
        cycles = Signal(32)
        m.d.comb += self.busy.eq(busy)

        # ---- host access while idle ------------------------------------------------------------
        host_sel = Signal(2)
        m.d.sync += host_sel.eq(self.host_region)
        host_word = Mux(
            host_sel == REGION_FEATURE, f_rd.data, Mux(host_sel == REGION_WEIGHT, wmem.rdata, chan_rdata.as_value())
        )
        if self.host_read_latency == 2:
            m.d.sync += self.host_rdata.eq(host_word)
        else:
            m.d.comb += self.host_rdata.eq(host_word)
        if self.feature_tap:
            m.d.comb += self.feat_rdata.eq(f_rd.data)

        # ---- issuer state -----------------------------------------------------------------------
        running = Signal()  # passes remain to issue
        i_kt, i_nt = Signal(TW), Signal(TW)
        i_kt_off = Signal(FA)  # kt * M
        i_mb_off = Signal(MOW)  # mb * Mb
        i_row = Signal(range(Mb + 1))
        i_accbank = Signal()  # accumulator bank of the current block (block parity)
        i_in_pass = Signal()
        rows_left = Signal(MOW + 1)
        # Rows of the current block, minus one, and "last block": registered, one cycle behind
        # i_mb_off. That is early enough: after i_mb_off moves (a pass's last vector) the next
        # pass waits for its weights (w_ready) for at least two cycles. Likewise for the drain.
        i_rows_m1 = Signal(range(Mb))
        last_mb = Signal()
        m.d.comb += rows_left.eq(cmd.m - i_mb_off)
        one_row = Signal()  # the block has one row (registered like i_rows_m1)
        m.d.sync += [
            i_rows_m1.eq(Mux(rows_left < Mb, rows_left, Mb) - 1),
            last_mb.eq(rows_left <= Mb),
            one_row.eq(rows_left == 1),
        ]
        i_kt0 = Signal()  # i_kt == 0 (kept beside i_kt, for the issuer's short paths)
        last_kt = Signal()
        last_nt = Signal()
        i_last = Signal()  # i_row is the pass's last row (registered, see below)
        # "last K / N tile" flags of the issuer, loader and drain: registered, one cycle behind the
        # counters (which move at the end of a pass, a tile or a block and are tested again at the
        # next such end, at least two cycles later).
        m.d.sync += [last_kt.eq(i_kt == KT1), last_nt.eq(i_nt == NT1)]

        w_ready = Signal()  # the next pass's weight tile is far enough into the array to start it
        acc_busy = Signal(2)  # bank holds a block not yet fully read by the drain

        # ---- loader state -----------------------------------------------------------------------
        ld_todo = Signal()  # tiles remain to load
        ld_active = Signal()
        ld_step = Signal(range(R + 1))
        ld_kt, ld_nt = Signal(TW), Signal(TW)
        ld_tile_off = Signal(WA)  # (nt*KT + kt) * R
        ld_mb_left = Signal(MW)  # rows of A not yet covered by loaded blocks
        ld_wr = Signal()  # the row read last cycle is written into the array this cycle
        ld_wrow = Signal(range(R))

        # ---- drain state ------------------------------------------------------------------------
        d_todo = Signal()  # blocks remain to drain
        d_bank = Signal()
        d_nt = Signal(TW)
        d_nt_off = Signal(FA)  # nt * M
        d_chan_off = Signal(COW)  # nt * C: the first output column of the N-tile
        d_mb_off = Signal(MOW)
        d_rows_m1 = Signal(range(Mb))  # rows of the drained block - 1 (registered, see i_rows_m1)
        d_last_mb = Signal()
        # The slot at the accumulator write tap is the drained block's last row: compared a stage
        # earlier and moved along with the slot (d_rows_m1 is current then: the next block's first
        # slot comes after this block's last capture), so the capture's decisions start at a flip-flop.
        d_cap_last = Signal()
        d_req = Signal(range(Mb + 1))  # next row to request
        d_req0 = Signal()  # d_req == 0 (kept beside d_req)
        D = self.drain_rows
        d_inflight = Signal(range(D + 1))  # drain slots in the pipeline (issued, row not yet captured)
        block_ready = Signal(2)  # bank's block fully accumulated
        d_last_block = Signal()
        d_rows_left = Signal(MOW + 1)
        d_last_nt = Signal()
        m.d.sync += d_last_nt.eq(d_nt == NT1)
        m.d.comb += [d_rows_left.eq(cmd.m - d_mb_off), d_last_block.eq(d_last_nt & d_last_mb)]
        m.d.sync += [d_rows_m1.eq(Mux(d_rows_left < Mb, d_rows_left, Mb) - 1), d_last_mb.eq(d_rows_left <= Mb)]
        # Row FIFO between the accumulator read and the lane sequencer: a ring of D entries whose
        # head (q_head) is the row whose lanes are being sent. A drain slot is issued only while
        # in-flight slots + buffered rows < D, so every capture (pipeline_latency cycles after its
        # slot) finds a free entry even when out_stall holds the lanes back. Rows stay in their
        # entry (no entry-to-entry moves), so each entry bit is one LUT and its flip-flop.
        q_data = [Signal(unsigned(self.acc_row_width), name=f"q{i}_data") for i in range(D)]
        q_waddr = [Signal(FA, name=f"q{i}_waddr") for i in range(D)]
        q_chan = [Signal(COW, name=f"q{i}_col") for i in range(D)]  # first output column of the row
        q_final = [Signal(name=f"q{i}_final") for i in range(D)]  # last row of the last block
        q_count = Signal(range(D + 1))
        q_head = Signal(range(D)) if D > 1 else Const(0, 1)
        buf_valid = Signal()
        m.d.comb += buf_valid.eq(q_count != 0)
        buf_lane = Signal(range(C))
        lane_last = Signal(init=int(C == 1))  # buf_lane == C - 1, as a register (it gates the pipeline enable)

        # ---- slot pipeline metadata ---------------------------------------------------------------
        Meta = data.StructLayout({"vec": 1, "drain": 1, "first": 1, "block_end": 1, "accbank": 1, "row": range(Mb)})
        meta = [Signal(Meta, name=f"meta{i}") for i in range(L + 1)]
        slot = Signal(Meta)
        with m.If(en):
            m.d.sync += meta[1].eq(slot)
            for i in range(2, L + 1):
                m.d.sync += meta[i].eq(meta[i - 1])
        m.d.comb += meta[0].eq(slot)

        # ---- command acceptance -----------------------------------------------------------------
        # The cycle counter stops with the last result and is the done payload itself (no copy),
        # so a command is taken only once the previous done has been.
        done_valid = Signal()
        finish = Signal()  # the last result is written this cycle
        m.d.comb += [
            self.cmd.ready.eq(~busy & ~done_valid),
            self.done.valid.eq(done_valid),
            self.done.payload.eq(cycles),
        ]
        with m.If(self.done.valid & self.done.ready):
            m.d.sync += done_valid.eq(0)
        with m.If(busy & ~finish):
            m.d.sync += cycles.eq(cycles + 1)

        with m.If(self.cmd.valid & self.cmd.ready):
            c = self.cmd.payload
            m.d.sync += [
                busy.eq(1),
                *(cmd[name].eq(c[name] - (name in ("kt", "nt"))) for name in CmdRegs.members),
                cycles.eq(1),
                running.eq(1),
                i_kt.eq(0),
                i_kt0.eq(1),
                i_nt.eq(0),
                i_kt_off.eq(0),
                i_mb_off.eq(0),
                i_row.eq(0),
                i_accbank.eq(0),
                i_in_pass.eq(0),
                w_ready.eq(0),
                acc_busy.eq(0),
                ld_todo.eq(1),
                ld_active.eq(0),
                ld_kt.eq(0),
                ld_nt.eq(0),
                ld_tile_off.eq(0),
                ld_mb_left.eq(c.m),
                d_todo.eq(1),
                d_bank.eq(0),
                d_nt.eq(0),
                d_nt_off.eq(0),
                d_chan_off.eq(0),
                d_mb_off.eq(0),
                d_req.eq(0),
                d_req0.eq(1),
                d_inflight.eq(0),
                block_ready.eq(0),
                q_count.eq(0),
                buf_lane.eq(0),
                lane_last.eq(int(C == 1)),
            ]

        # ---- weight loader ------------------------------------------------------------------------
        # The array has one weight register per PE (direct-load, hw/systolic.py), so a pass's tile
        # is written row by row, top-down, one row per cycle, after the previous pass's last
        # vector has been issued: a vector reaches array row r r // 2 cycles after row 0 and the
        # write of row r comes r cycles after that of row 0, so the pass may start once the rows
        # whose write the vector would overtake are in (quant.perf.weight_lead) while the loader
        # writes the rest. Rows are read two cycles ahead of their write (block RAM latency and a
        # register, see read_regs), as the activations are.
        # The loader starts when the pass's last vector is *pending* (would issue unless a drain
        # slot takes the cycle): row 0 is written one cycle after the start, so the last vector
        # may still issue in the next cycle, and a drain slot is never issued twice in a row then
        # (``ld_early``). This keeps the drain decision off the loader's path.
        last_pending = Signal()  # the current pass's last vector issues now unless a drain slot does
        ld_start = Signal()
        ld_early = Signal()  # the loader started while the last vector was still pending
        w_ready_set = Signal()
        # (with one row, weight_lead exceeds the reads: the tile is marked ready in its write cycle)
        ld_busy = ld_active | ld_wr if self.weight_lead > R else ld_active
        m.d.comb += ld_start.eq(busy & ld_todo & ~ld_busy & (~w_ready | last_pending))
        # Address bases are registered one cycle behind the offsets they add (each moves at the end
        # of a tile, pass or block, and is next used at least two cycles later): one adder per address.
        ld_last_kt, ld_last_nt, ld_last_mb = Signal(), Signal(), Signal()  # (registered, see last_kt)
        m.d.sync += [ld_last_kt.eq(ld_kt == KT1), ld_last_nt.eq(ld_nt == NT1), ld_last_mb.eq(ld_mb_left <= Mb)]
        ld_base = Signal(WA)
        m.d.sync += ld_base.eq(cmd.wgt_base + ld_tile_off)
        ld_addr = Signal(WA)
        m.d.comb += ld_addr.eq(ld_base + ld_step)
        with m.If(en):
            m.d.sync += [ld_wr.eq(ld_active), ld_wrow.eq(ld_step), ld_early.eq(ld_start & w_ready)]
            with m.If(ld_start):
                m.d.sync += [ld_active.eq(1), ld_step.eq(0)]
            # (applied after the issuer; with one row, weight_lead 2 falls in the write cycle)
            m.d.comb += w_ready_set.eq((ld_active | ld_wr) & (ld_step == self.weight_lead - 1))
            with m.If(ld_active):
                m.d.sync += ld_step.eq(ld_step + 1)
                with m.If(ld_step == R - 1):
                    m.d.sync += ld_active.eq(0)
                    # advance to the next tile in pass order: kt, then nt, then the next M-block
                    with m.If(ld_last_kt):
                        m.d.sync += ld_kt.eq(0)
                        with m.If(ld_last_nt):
                            m.d.sync += [ld_nt.eq(0), ld_tile_off.eq(0), ld_mb_left.eq(ld_mb_left - Mb)]
                            with m.If(ld_last_mb):
                                m.d.sync += ld_todo.eq(0)
                        with m.Else():
                            m.d.sync += [ld_nt.eq(ld_nt + 1), ld_tile_off.eq(ld_tile_off + R)]
                    with m.Else():
                        m.d.sync += [ld_kt.eq(ld_kt + 1), ld_tile_off.eq(ld_tile_off + R)]
        # A row read in cycle t reaches the array's weights at the end of cycle t + 2, one cycle
        # later than the read itself allows, in step with the activations (read_regs): the row
        # registers ld_wr / ld_wrow are followed by a second stage.
        ld_wr2 = Signal()
        ld_wrow2 = Signal(range(R))
        w_row_data = Signal(unsigned(self.weight_width))
        with m.If(en):
            m.d.sync += [ld_wr2.eq(ld_wr), ld_wrow2.eq(ld_wrow)]
        ld_rd_addr = Signal(ADDR_BITS)
        if out_regs:
            with m.If(en):
                m.d.sync += w_row_data.eq(wmem.rdata)
            m.d.comb += ld_rd_addr.eq(Mux(busy, ld_addr, self.host_addr))
        else:
            ld_addr_q = Signal(WA)
            with m.If(en):
                m.d.sync += ld_addr_q.eq(ld_addr)
            m.d.comb += [ld_rd_addr.eq(Mux(busy, ld_addr_q, self.host_addr)), w_row_data.eq(wmem.rdata)]
        m.d.comb += [
            wmem.addr.eq(ld_rd_addr),
            wmem.re.eq(~busy | en),
            array.w_in.eq(w_row_data),
            array.w_shift.eq(ld_wr2 & en),
            array.w_row.eq(ld_wrow2),
            array.w_bank.eq(0),
        ]

        # ---- issuer -------------------------------------------------------------------------------
        drain_slot = Signal()
        drain_room = Signal()
        d_more = Signal()  # rows of the drained block remain to request: d_req <= d_rows_m1
        if D == 1:
            # Registered: consecutive drain slots are at least pipeline_latency cycles apart here,
            # so a compare one cycle behind d_req is current whenever a slot could be issued.
            d_more_r = Signal()
            m.d.sync += d_more_r.eq(d_req <= d_rows_m1)
            m.d.comb += d_more.eq(d_req0 | d_more_r)
        else:
            m.d.comb += d_more.eq(d_req <= d_rows_m1)
        lane_ok = None
        if D == 1:
            # One entry: the next row is read while the head row's last lanes still leave, timed so
            # that (without output backpressure) it arrives as the head's last lane is taken. The
            # lanes never fall behind that: a slot is decided only in a cycle with the pipeline
            # enabled (drain_ok), when a lane is taken, and so is one in each of the enabled cycles
            # up to the capture (output backpressure, which holds the lanes, also clears en).
            # lane_ok: buf_lane >= early, as a register (buf_lane is far from the issuer); a lane
            # earlier than the slot, which is decided a cycle ahead (drain_ok)
            early = C - 2 - L
            lane_ok = Signal(init=int(early <= 0))
            d_free = d_inflight == 0
            if C - 1 - L <= 0:
                # A row's lanes fit in the pipeline latency (4x4): the next slot may be decided as
                # a row is captured, unless it is the block's last (then the drain state moves on).
                d_free = d_free | (en & meta[L].drain & ~d_cap_last)
            m.d.comb += drain_room.eq(d_free & ((q_count == 0) | lane_ok))
        else:
            m.d.comb += drain_room.eq(d_inflight + q_count < D)
        # The drain's conditions are registered (drain_ok, a cycle behind), so that the issuer's
        # decision is one LUT away from flip-flops. A stale "yes" is never wrong: the conditions
        # only turn false through a slot issued (hence ~d_issue) or a row captured (which needs a
        # slot in flight, and then they were false already). A stale "no" costs a cycle.
        # (Decided in enabled cycles only, see lane_ok: without stalls en is always set.)
        drain_ok = Signal()
        m.d.comb += drain_slot.eq(drain_ok & ~(ld_early & w_ready))
        can_start = Signal()
        prev_vec = Signal()  # the previous slot was a vector
        prev2_vec = Signal()  # the slot before it was
        # A one-row block would otherwise read its accumulator row (two cycles before the add, see
        # read_regs) before the previous pass has written it: keep two slots between such passes.
        # running and "the pass's bank is free" are registered, a cycle behind their terms: those
        # change at a pass's end (the next pass then waits at least two cycles for its weights),
        # at a pass's first vector (the pass then runs on i_in_pass) or when the drain frees a bank
        # (a pass waiting for that starts a cycle later).
        start_ok = Signal()
        m.d.sync += start_ok.eq(running & (~i_kt0 | ~acc_busy.bit_select(i_accbank, 1)))
        m.d.comb += can_start.eq(start_ok & w_ready & ~(one_row & (prev_vec | prev2_vec)))
        issue_vec = Signal()
        m.d.comb += issue_vec.eq(~drain_slot & (i_in_pass | can_start))
        m.d.comb += last_pending.eq((i_in_pass | can_start) & i_last)
        # The activation address (act_base + kt*M + mb*Mb + row) is a register, not an adder behind
        # i_row: it feeds the feature memory and, on the iCE40, Yosys' read-collision comparator.
        # It counts up with the vectors of a pass and is reloaded from the offsets whenever no pass
        # runs (they settle a cycle after a pass's end; the next pass waits at least two cycles).
        act_addr = Signal(FA)
        with m.If(en & busy & issue_vec):
            m.d.sync += act_addr.eq(act_addr + 1)
        with m.Elif(~i_in_pass):
            m.d.sync += act_addr.eq(cmd.act_base + i_kt_off + i_mb_off)

        m.d.comb += [
            slot.vec.eq(issue_vec),
            slot.drain.eq(drain_slot),
            slot.first.eq(i_kt0),
            slot.block_end.eq(last_kt & i_last),
            slot.accbank.eq(Mux(drain_slot, d_bank, i_accbank)),
            slot.row.eq(Mux(drain_slot, d_req, i_row)),
        ]
        with m.If(en):
            m.d.sync += [prev_vec.eq(issue_vec), prev2_vec.eq(prev_vec)]
        with m.If(en & busy):
            with m.If(drain_slot):
                m.d.sync += [d_req.eq(d_req + 1), d_req0.eq(0)]
            with m.If(issue_vec):
                m.d.sync += [i_in_pass.eq(1), i_row.eq(i_row + 1)]
                with m.If(i_row == 0):
                    m.d.sync += acc_busy.bit_select(i_accbank, 1).eq(1)
                with m.If(i_last):  # last vector of the pass
                    m.d.sync += [
                        i_in_pass.eq(0),
                        i_row.eq(0),
                        w_ready.eq(0),
                    ]
                    with m.If(last_kt):
                        m.d.sync += [i_kt.eq(0), i_kt0.eq(1), i_kt_off.eq(0), i_accbank.eq(~i_accbank)]
                        with m.If(last_nt):
                            m.d.sync += [i_nt.eq(0), i_mb_off.eq(i_mb_off + Mb)]
                            with m.If(last_mb):
                                m.d.sync += running.eq(0)
                        with m.Else():
                            m.d.sync += i_nt.eq(i_nt + 1)
                    with m.Else():
                        m.d.sync += [i_kt.eq(i_kt + 1), i_kt0.eq(0), i_kt_off.eq(i_kt_off + cmd.m)]
        # i_last (i_row == i_rows_m1) as a register: its next value from the increment decision and
        # compares of registered values only, so the issuer's pass-end test starts at a flip-flop.
        # i_rows_m1 moves a cycle after a pass's last vector (a new block) and the flag follows a
        # cycle later, before the next pass's first vector (it waits at least two cycles for its
        # weights); the same after a command start.
        m.d.sync += i_last.eq(
            Mux(en & busy & issue_vec, Mux(i_last, i_rows_m1 == 0, i_row + 1 == i_rows_m1), i_row == i_rows_m1)
        )
        with m.If(w_ready_set):  # after the issuer's clear: a new tile's readiness wins
            m.d.sync += w_ready.eq(1)
        # The activation vector of a slot issued in cycle t enters the array in cycle t + 2: from a
        # register after the feature memory (its block RAM output then drives one register, not
        # the array rows' broadcast), or read a cycle late from a registered address.
        a_vec = Signal(unsigned(self.feature_width))
        if out_regs:
            with m.If(en):
                m.d.sync += a_vec.eq(f_rd.data)
            m.d.comb += f_rd.addr.eq(Mux(busy, act_addr, self.host_addr))
        else:
            act_addr_q = Signal(FA)
            with m.If(en):
                m.d.sync += act_addr_q.eq(act_addr)
            m.d.comb += [f_rd.addr.eq(Mux(busy, act_addr_q, self.host_addr)), a_vec.eq(f_rd.data)]
        m.d.comb += f_rd.en.eq(~busy | en)

        # ---- array --------------------------------------------------------------------------------
        m.d.comb += [
            array.en.eq(en),
            array.a_in.eq(a_vec),
            array.in_valid.eq(meta[2].vec),
            array.in_bank.eq(0),
        ]

        # ---- accumulator read-modify-write ----------------------------------------------------------
        # The row is read two cycles before the add into a register (out_regs: the adder starts
        # from a flip-flop, not from the block RAM's output), or one cycle before, straight. The
        # issuer keeps two slots between writes and reads of one row (one-row blocks, see prev2_vec).
        tap_r, tap_w = meta[L - 2] if out_regs else meta[L - 1], meta[L]
        m.d.comb += [
            amem.raddr.eq(Cat(tap_r.row, tap_r.accbank) if (Mb & (Mb - 1)) == 0 else tap_r.accbank * Mb + tap_r.row),
            amem.re.eq(en),
        ]
        acc_old = Signal(unsigned(self.acc_row_width))  # the accumulator row of tap_w
        if out_regs:
            with m.If(en):
                m.d.sync += acc_old.eq(amem.rdata)
        else:
            m.d.comb += acc_old.eq(amem.rdata)
        new_row = Signal(unsigned(self.acc_row_width))
        aw = cfg.acc_width
        for c in range(C):
            old = acc_old[c * aw : (c + 1) * aw].as_signed()
            add = array.out[c]
            m.d.comb += new_row[c * aw : (c + 1) * aw].eq(Mux(tap_w.first, add, old + add))
        m.d.comb += [
            amem.waddr.eq(Cat(tap_w.row, tap_w.accbank) if (Mb & (Mb - 1)) == 0 else tap_w.accbank * Mb + tap_w.row),
            amem.wdata.eq(new_row),
            amem.we.eq(en & tap_w.vec),
        ]
        with m.If(en & tap_w.vec & tap_w.block_end):
            m.d.sync += block_ready.bit_select(tap_w.accbank, 1).eq(1)

        # ---- drain: accumulator rows -> requantizer -> feature memory ---------------------------------
        # Rows in flight all belong to the drained block: the next block's first slot waits for
        # d_req to be reset by the capture of this block's last row, so d_* are still this block's.
        d_issue = Signal()
        capture = Signal()
        pop = Signal()  # the head row's last lane leaves this cycle
        m.d.comb += [d_issue.eq(en & drain_slot), capture.eq(en & tap_w.drain)]
        with m.If(en):
            m.d.sync += d_cap_last.eq(meta[L - 1].row == d_rows_m1)
        m.d.sync += drain_ok.eq(busy & d_todo & block_ready.bit_select(d_bank, 1) & d_more & drain_room & ~d_issue & en)
        with m.If(busy):
            m.d.sync += [d_inflight.eq(d_inflight + d_issue - capture), q_count.eq(q_count + capture - pop)]
        # the row's address (word offsets doubled in gate mode: two words per row)
        d_base = Signal(FA)
        m.d.sync += d_base.eq(cmd.out_base + ((d_nt_off + d_mb_off) << gate_cmd))
        d_waddr = Signal(FA)
        m.d.comb += d_waddr.eq(d_base + (tap_w.row << gate_cmd))
        wpos = Signal(range(2 * D))
        m.d.comb += wpos.eq(q_head + q_count)  # the free entry after the buffered rows (mod D)
        if D > 1:
            with m.If(pop):
                m.d.sync += q_head.eq(Mux(q_head == D - 1, 0, q_head + 1))
            with m.If(self.cmd.valid & self.cmd.ready):
                m.d.sync += q_head.eq(0)
        for i in range(D):
            with m.If(capture & ((wpos == i) | (wpos == i + D))):
                m.d.sync += [
                    q_data[i].eq(acc_old),
                    q_waddr[i].eq(d_waddr),
                    q_chan[i].eq(d_chan_off),
                    q_final[i].eq(d_last_block & d_cap_last),
                ]
        with m.If(capture):
            with m.If(d_cap_last):
                # every row of this block is read: its bank may take the block after next
                m.d.sync += [
                    acc_busy.bit_select(d_bank, 1).eq(0),
                    block_ready.bit_select(d_bank, 1).eq(0),
                    d_bank.eq(~d_bank),
                    d_req.eq(0),
                    d_req0.eq(1),
                ]
                with m.If(d_last_nt):
                    m.d.sync += [d_nt.eq(0), d_nt_off.eq(0), d_chan_off.eq(0), d_mb_off.eq(d_mb_off + Mb)]
                    with m.If(d_last_mb):
                        m.d.sync += d_todo.eq(0)
                with m.Else():
                    m.d.sync += [d_nt.eq(d_nt + 1), d_nt_off.eq(d_nt_off + cmd.m), d_chan_off.eq(d_chan_off + C)]

        # Lane l of the buffered row goes to the requantizer with channel chan + l. The channel
        # memory is read one cycle ahead, so a lane is presented from a one-entry stage.
        st_valid = Signal()
        st_acc = Signal(signed(aw))
        st_tag = Signal(len(rq.i_tag))
        take = Signal()  # move a lane from the buffer into the stage
        m.d.comb += take.eq(buf_valid & (~st_valid | rq.i_stream.ready))
        col = Signal(COW)  # output column of the lane
        chan_addr = Signal(CA)

        def at_head(entries):
            out = entries[0]
            for i in range(1, D):
                out = Mux(q_head == i, entries[i], out)
            return out

        head_lane = at_head([q[:aw] for q in q_data]).as_signed()
        head_waddr, head_col, head_final = at_head(q_waddr), at_head(q_chan), at_head(q_final)
        m.d.comb += [col.eq(head_col + buf_lane), chan_addr.eq(cmd.chan_base + col)]
        n_mask = Signal()  # lane is past N: its result is written as 0
        m.d.comb += n_mask.eq(col >= cmd.n)
        m.d.comb += [
            cmem.raddr.eq(Mux(busy, chan_addr, self.host_addr)),
            cmem.re.eq((~busy | take) & ~c_we),
            bmem.addr.eq(Mux(busy, chan_addr, self.host_addr)),
            bmem.re.eq(~busy | take),
        ]
        with m.If(rq.i_stream.ready):
            m.d.sync += st_valid.eq(0)
        with m.If(take):
            m.d.sync += [
                st_valid.eq(1),
                st_acc.eq(head_lane),
                st_tag.eq(Cat(head_waddr, n_mask, head_final & lane_last)),
                buf_lane.eq(buf_lane + 1),
                lane_last.eq(Mux(lane_last, int(C == 1), buf_lane == C - 2)),
            ]
            with m.If(lane_last):
                m.d.sync += buf_lane.eq(0)
            if lane_ok is not None:
                m.d.sync += lane_ok.eq(Mux(lane_last, int(early <= 0), buf_lane + 1 >= early))
        if lane_ok is not None:
            with m.If(self.cmd.valid & self.cmd.ready):
                m.d.sync += lane_ok.eq(int(early <= 0))
        m.d.comb += pop.eq(take & lane_last)
        # The head row shifts down by one lane per lane taken, so the lane sent is always its
        # lowest one: no C-way multiplexer. (A capture never goes to the head while it is being
        # taken from: the buffer then holds at least the head row, so the free entry is another.)
        for i in range(D):
            with m.If(take & ~pop & (q_head == i)):
                m.d.sync += q_data[i].eq(q_data[i] >> aw)
        m.d.comb += [
            rq.i_stream.valid.eq(st_valid),
            rq.i_stream.payload.acc.eq(st_acc),
            rq.i_stream.payload.bias.eq(chan_rdata.bias),
            rq.i_stream.payload.mult.eq(chan_rdata.mult),
            rq.i_stream.payload.shift.eq(chan_rdata.shift),
            rq.i_stream.payload.relu.eq(cmd.relu),
            rq.i_tag.eq(st_tag),
        ]
        if self.gate:
            m.d.comb += rq.i_stream.payload.gate.eq(cmd.gate)

        # Collector: assemble a row of int8 results and write it to the feature memory.
        word = Signal(unsigned(self.feature_width))
        o_waddr = rq.o_tag[:FA]
        o_mask = rq.o_tag[FA]
        o_final = rq.o_tag[FA + 1]
        o_lane = Signal(range(C))  # lane of the result leaving the requantizer
        with m.If(rq.o_stream.valid & rq.o_stream.ready):
            m.d.sync += o_lane.eq(Mux(o_lane == C - 1, 0, o_lane + 1))
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += o_lane.eq(0)
        value = Signal(signed(16))
        out_ready = Signal(init=1)  # the output backpressure hook, a cycle late (as en)
        m.d.sync += out_ready.eq(~self.out_stall)
        m.d.comb += [value.eq(Mux(o_mask, 0, rq.o_stream.payload)), rq.o_stream.ready.eq(out_ready)]
        full_word = Signal(unsigned(self.feature_width))
        byte_word = Signal(unsigned(self.feature_width))
        for c in range(C):
            m.d.comb += byte_word[c * 8 : (c + 1) * 8].eq(Mux(o_lane == c, value[:8], word[c * 8 : (c + 1) * 8]))
        # gate mode: int16 lanes, the first half of a row's lanes in one word, the second in the next
        half = C // 2
        gate_word = Signal(unsigned(self.feature_width))
        o_hi = Signal()  # lane in the second half of the row
        if half:
            m.d.comb += o_hi.eq(o_lane >= half)
            for p in range(half):
                at = (o_lane == p) | (o_lane == p + half)
                m.d.comb += gate_word[p * 16 : (p + 1) * 16].eq(Mux(at, value, word[p * 16 : (p + 1) * 16]))
        m.d.comb += full_word.eq(Mux(gate_cmd, gate_word, byte_word))
        o_take = Signal()
        m.d.comb += o_take.eq(rq.o_stream.valid & rq.o_stream.ready)
        with m.If(o_take):
            m.d.sync += word.eq(full_word)
        o_last = Signal()  # the lane that completes a word
        m.d.comb += o_last.eq((o_lane == C - 1) | (gate_cmd & (o_lane == half - 1)))
        m.d.comb += [
            f_wr.addr.eq(Mux(busy, o_waddr + (gate_cmd & o_hi), self.host_addr)),
            f_wr.data.eq(Mux(busy, full_word, self.host_wdata)),
            f_wr.en.eq(Mux(busy, o_take & o_last, self.host_we & (self.host_region == REGION_FEATURE))),
        ]
        m.d.comb += finish.eq(o_take & o_final)
        with m.If(finish):
            m.d.sync += [busy.eq(0), done_valid.eq(1)]

        # ---- host writes to weight and channel memories ----------------------------------------------
        host_params = Signal(ChannelParams)
        m.d.comb += [
            host_params.eq(self.host_wdata),
            wmem.wdata.eq(self.host_wdata),
            wmem.we.eq(~busy & self.host_we & (self.host_region == REGION_WEIGHT)),
            c_we.eq(~busy & self.host_we & (self.host_region == REGION_CHANNEL)),
            cmem.waddr.eq(self.host_addr),
            cmem.wdata.eq(Cat(host_params.mult, host_params.shift)),
            cmem.we.eq(c_we),
            bmem.wdata.eq(host_params.bias),
            bmem.we.eq(~busy & self.host_we & (self.host_region == REGION_CHANNEL)),
        ]
        return m
