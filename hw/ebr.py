"""A simple dual-port RAM that maps straight onto iCE40 EBRs when reads never collide with writes.

Amaranth's ``Memory`` promises that a read of the address being written in the same cycle returns
the old word. The iCE40's SB_RAM40_4K leaves that case undefined, so Yosys wraps every such memory
in an emulation: a registered copy of the write port (the write happens a cycle late), a
comparator and a word-wide bypass multiplexer. For the engine's 176-bit accumulator memory that
is about 550 logic cells. A user that never reads the row it writes (the GEMM engine's
read-modify-write: ``quant.perf`` asserts it) needs none of it.

:class:`CollisionFreeRAM` has one behaviour on every path: ``rdata`` shows the word at the
``raddr`` of the last cycle with ``re`` high, and holds otherwise; a write takes effect at the
clock edge; a read of the word being written in the same cycle is not allowed. On an iCE40 platform
it instantiates SB_RAM40_4K blocks in their 256 x 16 mode; elsewhere (and in simulation) it is a
plain ``Memory``. :class:`EBRModel` is a simulation model of the primitive (as Yosys'
``cells_sim.v`` describes it), so a test can check the iCE40 path's wiring against the plain one.
"""

from __future__ import annotations

from amaranth.hdl import Cat, ClockSignal, Const, Instance, Module, Mux, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["CollisionFreeRAM", "EBRModel", "is_ice40", "read_port_no_rw_check"]

#: SB_RAM40_4K in its 256 x 16 mode (READ_MODE = WRITE_MODE = 0).
EBR_DEPTH, EBR_WIDTH = 256, 16


def is_ice40(platform) -> bool:
    """The platform is an iCE40 device (SB_RAM40_4K blocks)."""
    return platform is not None and str(getattr(platform, "device", "")).upper().startswith("ICE40")


class _RegisteredReadPort:
    """``addr``, ``en`` and ``data`` of a synchronous read port (see :func:`read_port_no_rw_check`)."""

    def __init__(self, m: Module, mem: Memory):
        port = mem.read_port(domain="comb")
        self.addr = Signal(len(port.addr))
        self.en = Signal(init=1)
        self.data = Signal(len(port.data), reset_less=True)  # (no reset, as a synchronous port's data)
        m.d.comb += port.addr.eq(self.addr)
        with m.If(self.en):
            m.d.sync += self.data.eq(port.data)


def read_port_no_rw_check(m: Module, mem: Memory, platform):
    """A synchronous read port of ``mem`` for a user that never uses the word it reads in a cycle
    that writes that word.

    On an iCE40 platform it is ``mem.read_port()``. Elsewhere it is an asynchronous read port and
    its register, with ``mem`` marked ``no_rw_check``: Yosys merges the two into the block RAM's
    synchronous port with the read-during-write case left undefined, and builds no emulation of
    it (a registered write port, an address comparator and a bypass multiplexer, which the ECP5's
    DP16KD would need as much as the iCE40's EBR). The same words and cycles in simulation.
    Returns an object with the ``addr``, ``en`` and ``data`` of a read port.
    """
    if is_ice40(platform):
        return mem.read_port()
    mem.attrs["no_rw_check"] = 1
    return _RegisteredReadPort(m, mem)


class EBRModel(wiring.Component):
    """Simulation model of one SB_RAM40_4K in 256 x 16 mode (``MASK`` bits low = write)."""

    def __init__(self):
        super().__init__(
            {
                "RADDR": In(11),
                "RE": In(1),
                "RCLKE": In(1),
                "RDATA": Out(16),
                "WADDR": In(11),
                "WE": In(1),
                "WCLKE": In(1),
                "MASK": In(16),
                "WDATA": In(16),
            }
        )

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = Memory(shape=unsigned(16), depth=EBR_DEPTH, init=[])
        rd, wr = mem.read_port(), mem.write_port(granularity=1)
        m.d.comb += [
            rd.addr.eq(self.RADDR[:8]),
            rd.en.eq(self.RE & self.RCLKE),
            self.RDATA.eq(rd.data),
            wr.addr.eq(self.WADDR[:8]),
            wr.data.eq(self.WDATA),
            wr.en.eq(~self.MASK & (self.WE & self.WCLKE).replicate(16)),
        ]
        return m


class CollisionFreeRAM(wiring.Component):
    """``depth`` x ``width`` RAM with one read and one write port that never address one word at once.

    Parameters
    ----------
    width, depth : int
    model : bool
        Build the iCE40 path from :class:`EBRModel` on any platform (for simulation tests).

    Members
    -------
    raddr : In(range(depth))
    re : In(1)
        Read ``raddr``: ``rdata`` shows the word after the clock edge.
    rdata : Out(width)
        The last word read; held while ``re`` is low.
    waddr : In(range(depth))
    wdata : In(width)
    we : In(1)
        Write ``wdata`` at ``waddr`` at the clock edge (never at the ``raddr`` of a read).
    """

    def __init__(self, width: int, depth: int, *, model: bool = False):
        if width < 1 or depth < 1:
            raise ValueError(f"memory must have a positive width and depth, got {width} x {depth}")
        self.width, self.depth, self.model = width, depth, model
        #: initial words (a model preloaded at build time); plain-Memory path only
        self.init: tuple[int, ...] = ()
        aw = max(1, (depth - 1).bit_length())
        super().__init__(
            {"raddr": In(aw), "re": In(1), "rdata": Out(width), "waddr": In(aw), "wdata": In(width), "we": In(1)}
        )

    def elaborate(self, platform):
        m = Module()
        if not (self.model or is_ice40(platform)):
            # (no read-during-write emulation: on the 16x16 ECP5 NPU its address comparator was
            # on the critical path)
            m.submodules.mem = mem = Memory(shape=unsigned(self.width), depth=self.depth, init=list(self.init))
            rd, wr = read_port_no_rw_check(m, mem, platform), mem.write_port()
            m.d.comb += [
                rd.addr.eq(self.raddr),
                rd.en.eq(self.re),
                self.rdata.eq(rd.data),
                wr.addr.eq(self.waddr),
                wr.data.eq(self.wdata),
                wr.en.eq(self.we),
            ]
            return m
        if self.init:
            raise ValueError("initial contents of the iCE40 EBR primitives are not supported yet")
        cols = -(-self.width // EBR_WIDTH)
        rows = -(-self.depth // EBR_DEPTH)
        wdata = Cat(self.wdata, Const(0, cols * EBR_WIDTH - self.width))
        # which row of blocks the last read came from (the output multiplexer's select)
        rsel = Signal(range(rows)) if rows > 1 else Const(0, 1)
        if rows > 1:
            with m.If(self.re):
                m.d.sync += rsel.eq(self.raddr >> 8)
        outs = []
        for r in range(rows):
            row_out = Signal(cols * EBR_WIDTH, name=f"row{r}_rdata")
            outs.append(row_out)
            hit_r = (self.raddr >> 8) == r if rows > 1 else Const(1, 1)
            hit_w = (self.waddr >> 8) == r if rows > 1 else Const(1, 1)
            for c in range(cols):
                ports = {
                    "RADDR": Cat(self.raddr[:8], Const(0, 3)),
                    "RE": self.re & hit_r,
                    "RCLKE": Const(1, 1),
                    "WADDR": Cat(self.waddr[:8], Const(0, 3)),
                    "WE": self.we & hit_w,
                    "WCLKE": Const(1, 1),
                    "MASK": Const(0, 16),
                    "WDATA": wdata[c * EBR_WIDTH : (c + 1) * EBR_WIDTH],
                }
                rdata = row_out[c * EBR_WIDTH : (c + 1) * EBR_WIDTH]
                if self.model:
                    blk = EBRModel()
                    m.submodules[f"ebr_{r}_{c}"] = blk
                    m.d.comb += [getattr(blk, k).eq(v) for k, v in ports.items()]
                    m.d.comb += rdata.eq(blk.RDATA)
                else:
                    m.submodules[f"ebr_{r}_{c}"] = Instance(
                        "SB_RAM40_4K",
                        p_READ_MODE=0,
                        p_WRITE_MODE=0,
                        i_RCLK=ClockSignal("sync"),
                        i_WCLK=ClockSignal("sync"),
                        o_RDATA=rdata,
                        **{f"i_{k}": v for k, v in ports.items()},
                    )
        out = outs[0]
        for r in range(1, rows):
            out = Mux(rsel == r, outs[r], out)
        m.d.comb += self.rdata.eq(out[: self.width])
        return m
