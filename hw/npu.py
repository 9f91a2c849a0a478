"""The NPU core: GEMM engine + layer sequencer + program memory behind one memory port.

``NPUCore`` is what the host sees through the link (hw/hostif.py): numbered memory regions
(feature, weight, channel, program), a start pulse, and a status word. While the sequencer runs,
it owns the engine's memory port; otherwise the host does.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from quant.config import NPUConfig

from .gemm import ADDR_BITS, REGION_CHANNEL, REGION_FEATURE, REGION_WEIGHT, GemmEngine
from .sequencer import Sequencer

__all__ = ["NPUCore", "REGION_PROGRAM", "STATUS_RUNNING", "STATUS_DONE", "STATUS_ERROR"]

REGION_PROGRAM = 3
STATUS_RUNNING, STATUS_DONE, STATUS_ERROR = 1, 2, 4


class NPUCore(wiring.Component):
    """Engine, sequencer and program memory.

    Members
    -------
    host_region, host_addr, host_wdata, host_we : In
        Host memory port (regions 0 feature, 1 weight, 2 channel, 3 program); ignored while running.
    host_rdata : Out(64)
        Word at the address presented one cycle before.
    start : In(1)
        Run the program in the program memory.
    status : Out(3)
        running | done << 1 | error << 2.
    cycles : Out(32)
        Cycles of the last program run.
    """

    def __init__(self, config: NPUConfig, prog_depth: int = 256):
        self.config = config
        self.prog_depth = prog_depth
        super().__init__(
            {
                "host_region": In(2),
                "host_addr": In(ADDR_BITS),
                "host_wdata": In(64),
                "host_we": In(1),
                "host_rdata": Out(64),
                "start": In(1),
                "status": Out(3),
                "cycles": Out(32),
            }
        )

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = eng = GemmEngine(self.config)
        m.submodules.seq = seq = Sequencer(self.config)
        pmem = m.submodules.pmem = Memory(shape=unsigned(32), depth=self.prog_depth, init=[])
        p_rd, p_wr = pmem.read_port(), pmem.write_port()

        run = Signal()
        m.d.comb += run.eq(seq.running)
        wiring.connect(m, seq.cmd, eng.cmd)
        wiring.connect(m, eng.done, seq.gemm_done)
        m.d.comb += [
            seq.start.eq(self.start & ~run),
            self.status.eq(seq.running | (seq.done << 1) | (seq.error << 2)),
            self.cycles.eq(seq.cycles),
            # engine memory port: the sequencer while running, else the host
            eng.host_region.eq(Mux(run, REGION_FEATURE, self.host_region)),
            eng.host_addr.eq(Mux(run, seq.mem_addr, self.host_addr)),
            eng.host_wdata.eq(Mux(run, seq.mem_wdata, self.host_wdata)),
            eng.host_we.eq(Mux(run, seq.mem_we, self.host_we & (self.host_region != REGION_PROGRAM))),
            seq.mem_rdata.eq(eng.host_rdata),
            # program memory: the sequencer's fetch while running, else the host
            p_rd.addr.eq(Mux(run, seq.prog_addr, self.host_addr)),
            seq.prog_data.eq(p_rd.data),
            p_wr.addr.eq(self.host_addr),
            p_wr.data.eq(self.host_wdata),
            p_wr.en.eq(~run & self.host_we & (self.host_region == REGION_PROGRAM)),
        ]
        sel_prog = Signal()
        m.d.sync += sel_prog.eq(self.host_region == REGION_PROGRAM)
        m.d.comb += self.host_rdata.eq(Mux(sel_prog, p_rd.data, eng.host_rdata))
        _ = (REGION_WEIGHT, REGION_CHANNEL)
        return m
