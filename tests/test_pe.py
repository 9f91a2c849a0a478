"""amaranth.sim: both PEs over every weight code of every width, extreme activations and partial sums."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.pe import IntMacPE, ShiftPE, make_pe
from quant.codes import all_codes, decode
from quant.config import NPUConfig

ACTS = [-128, -127, -1, 0, 1, 2, 63, 127]


def run_pe(cfg: NPUConfig, psum_width: int | None = None):
    dut = make_pe(cfg, psum_width=psum_width)
    wb = cfg.weight_bits
    codes = all_codes(wb)
    values = decode(codes, wb)
    rng = np.random.default_rng(wb)
    lim = 2 ** (len(dut.psum_in) - 1) - 1  # the whole psum_in range
    if psum_width is not None:
        lim -= cfg.max_abs_product  # same width in and out: the largest inputs that cannot wrap
    assert 2 ** (len(dut.psum_out) - 1) - 1 >= lim + cfg.max_abs_product  # output never wraps
    mismatches = []

    async def bench(ctx):
        for i, code in enumerate(codes):
            other = int(codes[(i * 7 + 3) % len(codes)])
            # shift `code` into bank 0 and `other` into bank 1
            for bank, c in ((0, code), (1, other)):
                ctx.set(dut.w_in, [int(c), int(c)])
                ctx.set(dut.w_bank, bank)
                ctx.set(dut.w_shift, 1)
                await ctx.tick()
            ctx.set(dut.w_shift, 0)
            assert [int(x) for x in ctx.get(dut.w_out)] == [int(code), int(other)]
            # pipeline: the activation of cycle j meets the partial sum of cycle j + 1
            pending = None
            for j, a in enumerate(ACTS + [None]):
                psum = int(rng.choice([-lim, lim, 0, int(rng.integers(-lim, lim))]))
                ctx.set(dut.psum_in, psum)
                if a is not None:
                    bank = j % 2
                    ctx.set(dut.a_in, a)
                    ctx.set(dut.bank_in, bank)
                ctx.set(dut.en, 1)
                await ctx.tick()
                if pending is not None:
                    pa, pbank = pending
                    w = int(values[i] if pbank == 0 else values[list(codes).index(other)])
                    got = ctx.get(dut.psum_out)
                    if got != psum + pa * w:
                        mismatches.append((int(code), pa, pbank, psum, got, psum + pa * w))
                if a is not None:
                    pending = (a, bank)
            # a stall holds every compute register
            held = ctx.get(dut.psum_out)
            ctx.set(dut.en, 0)
            ctx.set(dut.psum_in, 12345)
            await ctx.tick()
            assert ctx.get(dut.psum_out) == held

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return mismatches


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_pe_every_code(bits):
    cfg = NPUConfig(weight_bits=bits, max_k=64)
    assert run_pe(cfg) == []


@pytest.mark.parametrize("bits", [3, 8])
def test_pe_forced_psum_width(bits):
    """``psum_width`` (for same-adder area comparisons) widens both partial sums, results unchanged."""
    cfg = NPUConfig(weight_bits=bits, max_k=64)
    pe = make_pe(cfg, psum_width=26)
    assert len(pe.psum_in) == len(pe.psum_out) == 26
    assert run_pe(cfg, psum_width=26) == []


def test_pe_psum_width_too_narrow():
    cfg = NPUConfig(weight_bits=8, max_k=64)
    with pytest.raises(ValueError, match="psum_width"):
        make_pe(cfg, row=7, psum_width=cfg.partial_sum_width(8) - 1)


def test_pe_flavour_checks():
    with pytest.raises(ValueError):
        ShiftPE(NPUConfig(weight_bits=8))
    with pytest.raises(ValueError):
        IntMacPE(NPUConfig(weight_bits=3))
    with pytest.raises(TypeError):
        ShiftPE({"weight_bits": 3})
