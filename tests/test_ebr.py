"""amaranth.sim: CollisionFreeRAM's iCE40 path (through a model of SB_RAM40_4K) behaves like the plain path."""

import random

import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator

from hw.ebr import CollisionFreeRAM, is_ice40


def _trace(dut: CollisionFreeRAM, ops):
    """rdata after each of ``ops`` = (raddr, re, waddr, wdata, we)."""
    out = []

    async def bench(ctx):
        for raddr, re, waddr, wdata, we in ops:
            ctx.set(dut.raddr, raddr)
            ctx.set(dut.re, re)
            ctx.set(dut.waddr, waddr)
            ctx.set(dut.wdata, wdata)
            ctx.set(dut.we, we)
            await ctx.tick()
            out.append(ctx.get(dut.rdata))

    top = Module()
    top.submodules.dut = dut
    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return out


@pytest.mark.parametrize("width,depth", [(176, 256), (22, 600), (16, 40)])
def test_ice40_path_matches_plain_memory(width, depth):
    rnd = random.Random(width * depth)
    ops = [(0, 0, a, rnd.getrandbits(width), 1) for a in range(depth)]  # fill
    for _ in range(500):
        raddr, waddr = rnd.randrange(depth), rnd.randrange(depth)
        re, we = int(rnd.random() < 0.7), int(rnd.random() < 0.5)
        if re and we and raddr == waddr:
            we = 0  # the one thing a user must not do
        ops.append((raddr, re, waddr, rnd.getrandbits(width), we))
    plain = _trace(CollisionFreeRAM(width, depth), ops)
    ice40 = _trace(CollisionFreeRAM(width, depth, model=True), ops)
    mem, last, ref = [0] * depth, 0, []
    for raddr, re, waddr, wdata, we in ops:
        if re:
            last = mem[raddr]
        if we:
            mem[waddr] = wdata
        ref.append(last)
    assert plain == ref
    assert ice40 == ref


def test_device_switch():
    class P:
        device = "iCE40UP5K"

    class Q:
        device = "LFE5U-85F"

    assert is_ice40(P()) and not is_ice40(Q()) and not is_ice40(None)
    with pytest.raises(ValueError, match="width"):
        CollisionFreeRAM(8, 0)


def test_plain_path_leaves_read_during_write_undefined_for_yosys():
    """Off the iCE40 the memory is marked no_rw_check and read through an asynchronous port and a
    register (Yosys merges them into the block RAM's port without a read-during-write emulation)."""
    from amaranth.back import rtlil

    text = rtlil.convert(CollisionFreeRAM(22, 256), name="top")
    assert "attribute \\no_rw_check 1" in text
    assert "parameter \\CLK_ENABLE 0" in text  # the $memrd_v2 is asynchronous
