"""amaranth.sim: the SPRAM path of SinglePortRAM (through a model of SB_SPRAM256KA) behaves like the plain path."""

import random

import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator

from hw.spram import SinglePortRAM, has_spram, spram_blocks


class _Platform:
    def __init__(self, device):
        self.device = device


def _trace(dut: SinglePortRAM, ops):
    """rdata after each of ``ops`` = (addr, wdata, we, re)."""
    out = []

    async def bench(ctx):
        for addr, wdata, we, re in ops:
            ctx.set(dut.addr, addr)
            ctx.set(dut.wdata, wdata)
            ctx.set(dut.we, we)
            ctx.set(dut.re, re)
            await ctx.tick()
            out.append(ctx.get(dut.rdata))

    top = Module()
    top.submodules.dut = dut
    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return out


@pytest.mark.parametrize("width", [16, 24, 32, 54])
def test_spram_path_matches_plain_memory(width):
    depth = 64
    rnd = random.Random(width)
    ops = [(a, rnd.getrandbits(width), 1, 0) for a in range(depth)]  # fill
    for _ in range(600):
        kind = rnd.random()
        ops.append((rnd.randrange(depth), rnd.getrandbits(width), int(kind < 0.3), int(kind > 0.2)))
    plain = _trace(SinglePortRAM(width, depth, spram=False), ops)
    spram = _trace(SinglePortRAM(width, depth, model=True), ops)
    # reference: a read (re and not we) shows the stored word after the edge; otherwise rdata holds
    mem, last, ref = [0] * depth, 0, []
    for addr, wdata, we, re in ops:
        if we:
            mem[addr] = wdata
        elif re:
            last = mem[addr]
        ref.append(last)
    assert plain == ref
    assert spram == ref


def test_spram_selection():
    assert has_spram(_Platform("iCE40UP5K")) and not has_spram(_Platform("LFE5U-85F")) and not has_spram(None)
    assert spram_blocks(24) == 2 and spram_blocks(32) == 2 and spram_blocks(33) == 3
    ram = SinglePortRAM(24, 1024)
    assert ram.uses_spram(_Platform("iCE40UP5K")) and not ram.uses_spram(_Platform("LFE5U-85F"))
    assert not SinglePortRAM(24, 1024, spram=False).uses_spram(_Platform("iCE40UP5K"))
    assert not SinglePortRAM(16, 20000).uses_spram(_Platform("iCE40UP5K"))  # deeper than a block
    with pytest.raises(ValueError, match="width"):
        SinglePortRAM(0, 4)
