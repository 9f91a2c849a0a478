"""A single-port RAM that uses the iCE40UP's SPRAM blocks where it can, and a plain Memory elsewhere.

The iCE40UP5K has four SB_SPRAM256KA blocks (16K x 16 bits each) beside its 30 EBRs. A memory
that is only ever read *or* written in a cycle (the engine's weight memory: written by the host
while idle, read by the weight loader while busy) can live in them and leave the dual-port EBRs
to memories that need two ports.

:class:`SinglePortRAM` behaves alike on every path: ``rdata`` shows the word at the ``addr``
of the last cycle with ``re`` high and ``we`` low, and holds while neither happens. After a write
it is undefined on the SB_SPRAM256KA (Yosys' ``cells_sim.v`` and the board-form simulation,
sim/board_form.py, make it garbage), so a user reads again after writing.
On an iCE40UP platform with ``spram=True`` it instantiates ``ceil(width / 16)`` SB_SPRAM256KA
side by side; otherwise (simulation, other devices) it is an Amaranth ``Memory`` with a read
port enabled by ``re & ~we``. :class:`SPRAMModel` is a simulation model of the primitive (as
Yosys' ``cells_sim.v`` describes it), so a test can check the SPRAM path's wiring against the
plain one.
"""

from __future__ import annotations

from amaranth.hdl import Cat, ClockSignal, Const, Instance, Module, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .ebr import read_port_no_rw_check

__all__ = ["SinglePortRAM", "SPRAMModel", "SPRAM_DEPTH", "SPRAM_WIDTH", "spram_blocks", "has_spram"]

SPRAM_DEPTH = 16384
SPRAM_WIDTH = 16


def spram_blocks(width: int) -> int:
    """SB_SPRAM256KA blocks a ``width``-bit memory takes."""
    return -(-width // SPRAM_WIDTH)


def has_spram(platform) -> bool:
    """The platform is an iCE40UP (UltraPlus) device, which has SB_SPRAM256KA blocks."""
    return platform is not None and str(getattr(platform, "device", "")).upper().startswith("ICE40UP")


class SPRAMModel(wiring.Component):
    """Simulation model of one SB_SPRAM256KA (read when CHIPSELECT & ~WREN, nibble-masked write).

    Only the first ``depth`` words exist (the model of a 16K-word block need not be that deep).
    """

    def __init__(self, depth: int = SPRAM_DEPTH):
        self.depth = depth
        super().__init__(
            {
                "ADDRESS": In(14),
                "DATAIN": In(16),
                "MASKWREN": In(4),
                "WREN": In(1),
                "CHIPSELECT": In(1),
                "DATAOUT": Out(16),
            }
        )

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = Memory(shape=unsigned(16), depth=self.depth, init=[])
        rd = mem.read_port()
        wr = mem.write_port(granularity=4)
        m.d.comb += [
            rd.addr.eq(self.ADDRESS),
            rd.en.eq(self.CHIPSELECT & ~self.WREN),
            self.DATAOUT.eq(rd.data),
            wr.addr.eq(self.ADDRESS),
            wr.data.eq(self.DATAIN),
            wr.en.eq(self.MASKWREN & (self.CHIPSELECT & self.WREN).replicate(4)),
        ]
        return m


class SinglePortRAM(wiring.Component):
    """``depth`` x ``width`` single-port RAM: SPRAM on iCE40UP when ``spram``, else a Memory.

    Parameters
    ----------
    width, depth : int
        Word width and number of words.
    spram : bool
        Use SB_SPRAM256KA blocks when the platform has them (the caller keeps count of the four).
    model : bool
        Build the SPRAM path from :class:`SPRAMModel` instead of the primitive, on any platform
        (for simulation tests of that path).

    Members
    -------
    addr : In(range(depth))
    wdata : In(width)
    we : In(1)
        Write ``wdata`` at ``addr`` at the clock edge.
    re : In(1)
        Read ``addr``: ``rdata`` shows the word after the clock edge (ignored while ``we``).
    rdata : Out(width)
        The last word read; held while no read happens.
    """

    def __init__(self, width: int, depth: int, *, spram: bool = True, model: bool = False):
        if width < 1 or depth < 1:
            raise ValueError(f"memory must have a positive width and depth, got {width} x {depth}")
        self.width, self.depth = width, depth
        self.spram, self.model = spram, model
        #: initial words (a model preloaded at build time); plain-Memory path only
        self.init: tuple[int, ...] = ()
        super().__init__(
            {
                "addr": In(max(1, (depth - 1).bit_length())),
                "wdata": In(width),
                "we": In(1),
                "re": In(1),
                "rdata": Out(width),
            }
        )

    def uses_spram(self, platform) -> bool:
        """Whether :meth:`elaborate` builds SPRAM blocks on ``platform``."""
        return self.depth <= SPRAM_DEPTH and (self.model or (self.spram and has_spram(platform)))

    def elaborate(self, platform):
        m = Module()
        if not self.uses_spram(platform):
            m.submodules.mem = mem = Memory(shape=unsigned(self.width), depth=self.depth, init=list(self.init))
            # a write does not read: no read-during-write emulation needed (hw/ebr.py; off the
            # iCE40, where the memories were left as they were measured)
            rd, wr = read_port_no_rw_check(m, mem, platform), mem.write_port()
            m.d.comb += [
                rd.addr.eq(self.addr),
                rd.en.eq(self.re & ~self.we),
                self.rdata.eq(rd.data),
                wr.addr.eq(self.addr),
                wr.data.eq(self.wdata),
                wr.en.eq(self.we),
            ]
            return m
        if self.init:
            raise ValueError("SPRAM cannot be initialized by the bitstream: its contents must be written at run time")
        n = spram_blocks(self.width)
        wdata = Cat(self.wdata, Const(0, n * SPRAM_WIDTH - self.width))
        rdata = Signal(n * SPRAM_WIDTH)
        addr = Signal(14)
        cs = Signal()
        m.d.comb += [addr.eq(self.addr), cs.eq(self.re | self.we), self.rdata.eq(rdata[: self.width])]
        for k in range(n):
            port = {
                "ADDRESS": addr,
                "DATAIN": wdata[k * SPRAM_WIDTH : (k + 1) * SPRAM_WIDTH],
                "MASKWREN": Const(0xF, 4),
                "WREN": self.we,
                "CHIPSELECT": cs,
                "DATAOUT": rdata[k * SPRAM_WIDTH : (k + 1) * SPRAM_WIDTH],
            }
            if self.model:
                blk = SPRAMModel(self.depth)
                m.submodules[f"spram{k}"] = blk
                m.d.comb += [getattr(blk, name).eq(v) for name, v in port.items() if name != "DATAOUT"]
                m.d.comb += port["DATAOUT"].eq(blk.DATAOUT)
            else:
                m.submodules[f"spram{k}"] = Instance(
                    "SB_SPRAM256KA",
                    i_ADDRESS=port["ADDRESS"],
                    i_DATAIN=port["DATAIN"],
                    i_MASKWREN=port["MASKWREN"],
                    i_WREN=port["WREN"],
                    i_CHIPSELECT=port["CHIPSELECT"],
                    i_CLOCK=ClockSignal("sync"),
                    i_STANDBY=Const(0, 1),
                    i_SLEEP=Const(0, 1),
                    i_POWEROFF=Const(1, 1),
                    o_DATAOUT=port["DATAOUT"],
                )
        return m
