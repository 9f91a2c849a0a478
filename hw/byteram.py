"""A byte-wide RAM with one shared address for reads and writes, straight onto iCE40 EBRs.

Amaranth's ``Memory`` defines what a read of the word being written returns; the iCE40's
SB_RAM40_4K does not, so Yosys wraps every such memory in an emulation (a delayed copy of the
write port, or a bypass multiplexer for a transparent port: 20 to 50 logic cells per memory). The
host link never uses the data read in a cycle that writes, so :class:`ByteRAM` instantiates the
blocks in their 512 x 8 mode directly, initial contents included, and needs none of it.

Behaviour on every path: ``rdata`` shows the byte at the ``addr`` of the previous cycle; a write
(``we``) takes effect at the clock edge; ``rdata`` after a cycle that wrote is undefined. On an
iCE40 platform (or with ``model=True``) the blocks are SB_RAM40_4K (``model=True``: an Amaranth
model of the primitive as Yosys' ``cells_sim.v`` describes it, so a simulation checks the wiring and
the packing of the initial contents); elsewhere it is a plain ``Memory``.
"""

from __future__ import annotations

from amaranth.hdl import Cat, ClockSignal, Const, Instance, Module, Mux, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .ebr import is_ice40

__all__ = ["ByteRAM", "EBR512x8Model", "ebr512x8_init"]

#: SB_RAM40_4K in its 512 x 8 mode (READ_MODE = WRITE_MODE = 1)
BLOCK_BYTES = 512


def ebr512x8_init(data) -> list[int]:
    """The 16 ``INIT_n`` parameters (256 bits each) of one 512 x 8 block holding ``data`` (<= 512 bytes).

    The block stores 256 rows of 16 bits; byte address ``a`` is row ``a % 256``, and bit ``b`` of
    the byte sits at bit ``2 b + a // 256`` of its row (``cells_sim.v``, mode 1).
    """
    data = list(data)
    if len(data) > BLOCK_BYTES:
        raise ValueError(f"one block holds {BLOCK_BYTES} bytes, got {len(data)}")
    rows = [0] * 256
    for a, v in enumerate(data):
        for b in range(8):
            if (v >> b) & 1:
                rows[a % 256] |= 1 << (2 * b + a // 256)
    return [sum(rows[16 * k + i] << (16 * i) for i in range(16)) for k in range(16)]


class EBR512x8Model(wiring.Component):
    """Simulation model of one SB_RAM40_4K with READ_MODE = WRITE_MODE = 1 (``cells_sim.v``)."""

    def __init__(self, init=()):
        self._init = ebr512x8_init(init)
        super().__init__(
            {
                "RADDR": In(11),
                "RDATA": Out(16),
                "WADDR": In(11),
                "WCLKE": In(1),
                "WDATA": In(16),
            }
        )

    def elaborate(self, platform):
        m = Module()
        rows = [(self._init[r // 16] >> (16 * (r % 16))) & 0xFFFF for r in range(256)]
        m.submodules.mem = mem = Memory(shape=unsigned(16), depth=256, init=rows)
        rd, wr = mem.read_port(), mem.write_port(granularity=1)
        hi_w, hi_r = self.WADDR[8], self.RADDR[8]
        wdata = Cat(*[self.WDATA[2 * (k // 2)] for k in range(16)])  # each even bit on both halves
        wmask = Cat(*[hi_w if k & 1 else ~hi_w for k in range(16)])  # WADDR[8] picks the odd or even bits
        rmask_hi = Signal()
        m.d.sync += rmask_hi.eq(hi_r)
        m.d.comb += [
            rd.addr.eq(self.RADDR[:8]),
            wr.addr.eq(self.WADDR[:8]),
            wr.data.eq(wdata),
            wr.en.eq(Mux(self.WCLKE, wmask, 0)),
        ]
        # RDATA[2k] is the selected half of bits 2k, 2k+1; the odd outputs read 0
        m.d.comb += self.RDATA.eq(
            Cat(*[Mux(rmask_hi, rd.data[k + 1], rd.data[k]) if k % 2 == 0 else Const(0, 1) for k in range(16)])
        )
        return m


class ByteRAM(wiring.Component):
    """``depth`` x 8 RAM, one address for reads and writes, optional initial contents.

    Members
    -------
    addr : In(range(depth))
    rdata : Out(8)
        The byte at the previous cycle's ``addr`` (undefined after a cycle with ``we``).
    wdata : In(8)
    we : In(1)
    """

    def __init__(self, depth: int, init=(), *, model: bool = False):
        if depth < 1 or len(init) > depth:
            raise ValueError(f"a ByteRAM needs a positive depth holding its {len(init)} initial bytes, got {depth}")
        self.depth, self.init, self.model = depth, list(init), model
        super().__init__({"addr": In(max(1, (depth - 1).bit_length())), "rdata": Out(8), "wdata": In(8), "we": In(1)})

    def elaborate(self, platform):
        m = Module()
        if not (self.model or is_ice40(platform)):
            m.submodules.mem = mem = Memory(shape=8, depth=self.depth, init=self.init)
            wr = mem.write_port()
            rd = mem.read_port(transparent_for=(wr,))
            m.d.comb += [
                wr.addr.eq(self.addr),
                rd.addr.eq(self.addr),
                wr.data.eq(self.wdata),
                wr.en.eq(self.we),
                self.rdata.eq(rd.data),
            ]
            return m
        n = -(-self.depth // BLOCK_BYTES)
        addr = Cat(self.addr, Const(0, 9 * n + 9))  # wide enough for any slice below
        blk = addr[9:] if n > 1 else Const(0, 1)
        rsel = Signal(range(n)) if n > 1 else Const(0, 1)
        if n > 1:
            m.d.sync += rsel.eq(blk)
        wdata = Cat(*[Cat(self.wdata[k], Const(0, 1)) for k in range(8)])  # byte bit b on WDATA[2b]
        outs = []
        for k in range(n):
            part = self.init[k * BLOCK_BYTES : (k + 1) * BLOCK_BYTES]
            raddr = Cat(addr[:9], Const(0, 2))
            wclke = self.we & (blk == k) if n > 1 else self.we
            rdata = Signal(16, name=f"rdata{k}")
            outs.append(Cat(*[rdata[2 * b] for b in range(8)]))
            if self.model:
                m.submodules[f"ebr{k}"] = e = EBR512x8Model(part)
                m.d.comb += [e.RADDR.eq(raddr), e.WADDR.eq(raddr), e.WCLKE.eq(wclke), e.WDATA.eq(wdata)]
                m.d.comb += rdata.eq(e.RDATA)
            else:
                init = ebr512x8_init(part)
                m.submodules[f"ebr{k}"] = Instance(
                    "SB_RAM40_4K",
                    p_READ_MODE=1,
                    p_WRITE_MODE=1,
                    **{f"p_INIT_{i:X}": Const(v, 256) for i, v in enumerate(init)},
                    i_RCLK=ClockSignal("sync"),
                    i_RCLKE=Const(1, 1),
                    i_RE=Const(1, 1),
                    i_RADDR=raddr,
                    i_WCLK=ClockSignal("sync"),
                    i_WCLKE=wclke,
                    i_WE=Const(1, 1),
                    i_WADDR=raddr,
                    i_MASK=Const(0, 16),
                    i_WDATA=wdata,
                    o_RDATA=rdata,
                )
        out = outs[0]
        for k in range(1, n):
            out = Mux(rsel == k, outs[k], out)
        m.d.comb += self.rdata.eq(out)
        return m
