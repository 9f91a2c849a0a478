"""hw/byteram.py: the iCE40 path (SB_RAM40_4K model, 512 x 8 mode) behaves like a plain memory."""

import random

import pytest
from amaranth.sim import Simulator

from hw.byteram import ByteRAM, ebr512x8_init


@pytest.mark.parametrize("depth", [37, 512, 1100])  # one block, a full block, three blocks
def test_model_path_matches_a_plain_memory(depth):
    rng = random.Random(depth)
    init = [rng.randrange(256) for _ in range(min(depth, 700))]
    dut = ByteRAM(depth, init, model=True)
    ref = init + [0] * (depth - len(init))

    async def tb(ctx):
        for step in range(1500):
            a = rng.randrange(depth)
            write = rng.random() < 0.4
            ctx.set(dut.addr, a)
            ctx.set(dut.we, write)
            v = rng.randrange(256)
            ctx.set(dut.wdata, v)
            await ctx.tick()
            if write:
                ref[a] = v
            else:
                assert ctx.get(dut.rdata) == ref[a], f"step {step}: byte {a}"
        ctx.set(dut.we, 0)
        for a in range(depth):  # every initial / written byte, in order
            ctx.set(dut.addr, a)
            await ctx.tick()
            assert ctx.get(dut.rdata) == ref[a]

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()


def test_init_packing():
    # byte a, bit b -> row a % 256, bit 2 b + a // 256 (cells_sim.v, 512 x 8 mode)
    words = ebr512x8_init({0: 0x01, 257: 0x80}.get(a, 0) for a in range(258))
    assert words[0] == (1 << 0) | (1 << (16 * 1 + 2 * 7 + 1))
    assert all(w == 0 for w in words[1:])
    with pytest.raises(ValueError):
        ebr512x8_init([0] * 513)
