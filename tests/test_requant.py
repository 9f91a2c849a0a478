"""amaranth.sim: the Requantizer against quant.fixed.requant, with stalls on both streams."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.requant import Requantizer
from quant.config import NPUConfig
from quant.fixed import requant


def _cases(cfg: NPUConfig, n: int, seed: int):
    rng = np.random.default_rng(seed)
    amax = 2 ** (cfg.acc_width - 1) - 1
    out = []
    # corners: extremes of every field, n = 0 and 63, half-way rounding points
    for acc in (-amax - 1, amax, 0, -1, 1):
        for bias in (-(2**31), 2**31 - 1, 0):
            for mult, shift in ((0, 0), (65535, 0), (65535, 63), (1, 1), (32768, 15), (40000, 30)):
                out.append((acc, bias, mult, shift, int(rng.integers(0, 2))))
    out += [(-3, 0, 1, 1, 0), (3, 0, 1, 1, 0), (-5, 0, 1, 1, 0), (255, 0, 1, 1, 0), (-257, 0, 1, 1, 1)]
    # results on either side of the saturation points and of the shifter's internal window (the
    # rounded value at +-127/128, +-255/256, +-511/512, +-1023/1024), for shifts across every stage
    for n in (0, 1, 2, 3, 7, 8, 15, 16, 17, 31, 32, 33, 47, 48, 49, 50, 51, 62, 63):
        for target in (126, 127, 128, 255, 256, 511, 512, 1023, 1024, 4096):
            for sgn in (1, -1):
                for d in (-1, 0, 1):
                    x = sgn * (target << n) + d * (1 << max(n - 1, 0))
                    for mult in (1, 3):
                        if abs(x) < 2**31:
                            out.append((0, x, mult, n, int(rng.integers(0, 2))))
                        if abs(x * mult) < 2**46:  # (acc + bias) * M reaching past 2**32
                            out.append((amax, x * mult // 65535 - amax, 65535, n, 0))
    for _ in range(n):
        out.append(
            (
                int(rng.integers(-amax - 1, amax + 1)),
                int(rng.integers(-(2**20), 2**20)),
                int(rng.integers(0, 2**16)),
                int(rng.integers(0, 40)),
                int(rng.integers(0, 2)),
            )
        )
    return out


@pytest.mark.parametrize("add_late", [False, True], ids=["sum-in-stage-2", "sum-in-stage-3"])
@pytest.mark.parametrize("gate_capable", [False, True], ids=["int8", "gate-capable"])
def test_requantizer_matches_golden(gate_capable, add_late):
    """Int8 results (with ReLU), and on a gate-capable unit also gate mode: int16, no ReLU (SPEC §4 z).
    Both places of the partial-product sum (the iCE40 and the ECP5 build) give the same results."""
    _golden_with_stalls(gate_capable, add_late)


@pytest.mark.parametrize("gate_capable", [False, True], ids=["int8", "gate-capable"])
def test_requantizer_without_bubble_collapse(gate_capable):
    """``collapse=False`` (the GEMM engine's): the stages advance with the output ready alone; the
    same results in the same order under the same random stalls on both streams."""
    _golden_with_stalls(gate_capable, None, collapse=False)


def _golden_with_stalls(gate_capable, add_late, collapse=True):
    cfg = NPUConfig()
    dut = Requantizer(cfg, gate=gate_capable, add_late=add_late, collapse=collapse)
    cases = _cases(cfg, 400, 1)
    if gate_capable:  # every case again in gate mode, plus results around the 16-bit limits
        more = [
            (0, sgn * (t << 5) + d * 16, 1, 5, 1) for t in (32767, 32768, 65536) for sgn in (1, -1) for d in (-1, 0, 1)
        ]
        cases = [c + (0,) for c in cases] + [c + (1,) for c in cases + more]
    else:
        cases = [c + (0,) for c in cases]
    expect = [
        requant(a, b, mlt, s, bits=16) if g else requant(a, b, mlt, s, relu=bool(r)) for a, b, mlt, s, r, g in cases
    ]
    got = []
    rnd = random.Random(3)

    async def producer(ctx):
        for acc, bias, mult, shift, relu, gate in cases:
            while rnd.random() < 0.3:  # idle cycles
                ctx.set(dut.i_stream.valid, 0)
                await ctx.tick()
            ctx.set(
                dut.i_stream.payload,
                {"acc": acc, "bias": bias, "mult": mult, "shift": shift, "relu": relu}
                | ({"gate": gate} if gate_capable else {}),
            )
            ctx.set(dut.i_stream.valid, 1)
            await ctx.tick().until(dut.i_stream.ready)
        ctx.set(dut.i_stream.valid, 0)

    async def consumer(ctx):
        while len(got) < len(cases):
            ready = int(rnd.random() < 0.6)  # backpressure
            ctx.set(dut.o_stream.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.o_stream.valid, dut.o_stream.payload)
            if ready and valid:
                got.append(payload)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    bad = [(c, g, e) for c, g, e in zip(cases, got, expect, strict=True) if g != e]
    assert not bad, f"{len(bad)} mismatches, first: {bad[:3]}"


@pytest.mark.parametrize("add_late", [False, True], ids=["sum-in-stage-2", "sum-in-stage-3"])
def test_requantizer_verilator(add_late):
    from sim.runner import run_cocotb

    cfg = NPUConfig()
    cases = _cases(cfg, 2000, 7)
    run_cocotb(
        "requant",
        {"config": cfg.to_dict(), "add_late": add_late},
        lambda: Requantizer(cfg, add_late=add_late),
        "requant_bench",
        bench_params={"config": cfg.to_dict(), "cases": cases},
    )
