"""The NPU core: GEMM engine + layer sequencer (with the LSTM gate unit) + program memory behind one memory port.

``NPUCore`` is what the host sees through the link (hw/hostif.py): numbered memory regions
(feature, weight, channel, program), a start pulse, and a status word. While the sequencer runs,
it owns the engine's memory port; otherwise the host does.
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out, connect

from quant.config import NPUConfig
from quant.memmap import npu_memory_map

from .ebr import EBR_DEPTH, CollisionFreeRAM, is_ice40
from .gemm import ADDR_BITS, REGION_FEATURE, GemmEngine
from .hostif import HostInterface
from .sequencer import Sequencer
from .uart import UARTRx, UARTTx

__all__ = ["NPU", "NPUCore", "REGION_PROGRAM", "STATUS_RUNNING", "STATUS_DONE", "STATUS_ERROR"]

REGION_PROGRAM = 3
STATUS_RUNNING, STATUS_DONE, STATUS_ERROR = 1, 2, 4


class NPUCore(wiring.Component):
    """Engine, sequencer and program memory.

    Members
    -------
    host_region, host_addr, host_wdata, host_we : In
        Host memory port (regions 0 feature, 1 weight, 2 channel, 3 program); ignored while running.
    host_rdata : Out(port_width)
        Word at the address presented ``host_read_latency`` cycles before.

    The host port is ``port_width = max(64, 8 * rows, cols * weight_bits)`` bits (a feature word
    holds one int8 per row; channel words are 64 bits).
    start : In(1)
        Run the program in the program memory.
    status : Out(3)
        running | done << 1 | error << 2.
    cycles : Out(32)
        Cycles of the last program run.

    Parameters
    ----------
    host_read_latency : int
        1 (the default) or 2: with 2 the block RAMs' read data (the engine's region multiplexer,
        the program memory) pass a register before ``host_rdata``, so that no host read path
        starts at a block-RAM output (ECP5: the DP16KD's 5.6 ns clock-to-output). The
        sequencer's own reads take the feature memory's output directly (the engine's
        ``feat_rdata``), with the same cycles either way.
    """

    def __init__(
        self, config: NPUConfig, prog_depth: int | None = None, *, rnn: bool = True, host_read_latency: int = 1
    ):
        if host_read_latency not in (1, 2):
            raise ValueError(f"host_read_latency must be 1 or 2 cycles, got {host_read_latency}")
        self.host_read_latency = host_read_latency
        self.config = config
        self.rnn = rnn
        self.prog_depth = config.prog_depth if prog_depth is None else prog_depth
        self.port_width = max(64, 8 * config.rows, config.cols * config.weight_bits)
        super().__init__(
            {
                "host_region": In(2),
                "host_addr": In(ADDR_BITS),
                "host_wdata": In(self.port_width),
                "host_we": In(1),
                "host_rdata": Out(self.port_width),
                "start": In(1),
                "status": Out(3),
                "cycles": Out(32),
            }
        )

    def elaborate(self, platform):
        m = Module()
        lat = self.host_read_latency
        m.submodules.engine = eng = GemmEngine(self.config, gate=self.rnn, host_read_latency=lat, feature_tap=True)
        m.submodules.seq = seq = Sequencer(self.config, rnn=self.rnn, prog_depth=self.prog_depth)
        if is_ice40(platform) and self.prog_depth <= EBR_DEPTH:
            # SB_RAM40_4K blocks without Yosys' read-during-write emulation (about 100 logic cells on
            # the UP5K): the read is off in a host write's cycle, the only one that could collide
            # (deeper: Yosys' mapping, which needs no read multiplexer across blocks)
            pmem = m.submodules.pmem = CollisionFreeRAM(32, self.prog_depth)
            p_rd = SimpleNamespace(addr=pmem.raddr, data=pmem.rdata)
            p_wr = SimpleNamespace(addr=pmem.waddr, data=pmem.wdata, en=pmem.we)
            m.d.comb += pmem.re.eq(~pmem.we)
        else:
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
            seq.mem_rdata.eq(eng.feat_rdata),
            # program memory: the sequencer's fetch while running, else the host
            p_rd.addr.eq(Mux(run, seq.prog_addr, self.host_addr)),
            seq.prog_data.eq(p_rd.data),
            p_wr.addr.eq(self.host_addr),
            p_wr.data.eq(self.host_wdata),
            p_wr.en.eq(~run & self.host_we & (self.host_region == REGION_PROGRAM)),
        ]
        sel_prog = Signal()
        m.d.sync += sel_prog.eq(self.host_region == REGION_PROGRAM)
        if lat == 2:
            prog_q, sel_prog_q = Signal(32), Signal()
            m.d.sync += [prog_q.eq(p_rd.data), sel_prog_q.eq(sel_prog)]
            m.d.comb += self.host_rdata.eq(Mux(sel_prog_q, prog_q, eng.host_rdata))
        else:
            m.d.comb += self.host_rdata.eq(Mux(sel_prog, p_rd.data, eng.host_rdata))
        return m


class NPU(wiring.Component):
    """The whole device: host link (UART or byte port) + :class:`NPUCore`.

    The host sees the memory map of :func:`quant.memmap.npu_memory_map` (feature, weight, channel,
    program), ``START`` runs the layer program, and the status register reads
    ``running | done << 1 | error << 2 | cycles << 3`` (cycles of the last run, saturating at
    ``2**29 - 1``).

    Members
    -------
    uart_rx : In(1), uart_tx : Out(1)
        Serial line (``uart=True``).
    rx : In(stream.Signature(8)), tx : Out(stream.Signature(8))
        Request and reply bytes (``uart=False``, for fast simulation).

    ``rnn=False`` leaves out the LSTM gate unit (its opcodes then stop with an error).
    """

    def __init__(self, config: NPUConfig, *, uart: bool = False, idle_timeout: int | None = None, rnn: bool = True):
        self.config = config
        self.rnn = rnn
        self.regions = npu_memory_map(config)
        self.uart = uart
        self.idle_timeout = idle_timeout
        if uart:
            ports = {"uart_rx": In(1, init=1), "uart_tx": Out(1, init=1)}
        else:
            ports = {"rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8))}
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        m.submodules.hostif = hostif = HostInterface(cfg, self.regions, idle_timeout=self.idle_timeout)
        # ECP5 (any platform but the iCE40, where a flip-flop costs a logic cell): the host's reads
        # are registered in the core (see NPUCore.host_read_latency); the link waits for rvalid.
        lat = 1 if is_ice40(platform) else 2
        m.submodules.core = core = NPUCore(cfg, rnn=self.rnn, host_read_latency=lat)
        if self.uart:
            m.submodules.uart_rx = urx = UARTRx(clk_hz=cfg.clk_hz, baud=cfg.baud)
            m.submodules.uart_tx = utx = UARTTx(clk_hz=cfg.clk_hz, baud=cfg.baud)
            m.d.comb += [urx.rx.eq(self.uart_rx), self.uart_tx.eq(utx.tx), hostif.framing_error.eq(urx.framing_error)]
            connect(m, urx.o_stream, hostif.i_stream)
            connect(m, hostif.o_stream, utx.i_stream)
        else:
            connect(m, wiring.flipped(self.rx), hostif.i_stream)
            connect(m, hostif.o_stream, wiring.flipped(self.tx))

        bus = hostif.bus
        m.d.comb += [
            bus.ready.eq(1),
            core.host_region.eq(bus.region),
            core.host_addr.eq(bus.addr),
            core.host_wdata.eq(bus.wdata),
            core.host_we.eq(bus.valid & bus.we),
            bus.rdata.eq(core.host_rdata),
            core.start.eq(hostif.start),
        ]
        rv = Signal(lat)  # rvalid: a read request's word is on core.host_rdata `lat` cycles later
        m.d.sync += rv.eq(Cat(bus.valid & ~bus.we, rv[:-1]))
        m.d.comb += bus.rvalid.eq(rv[-1])
        cycles = Signal(29)
        m.d.comb += cycles.eq(Mux(core.cycles >= (1 << 29) - 1, (1 << 29) - 1, core.cycles))
        m.d.comb += hostif.status.eq(core.status | (cycles << 3))
        return m
