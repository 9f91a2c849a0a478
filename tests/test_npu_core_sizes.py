"""NPUCore and its sequencer at other array sizes: the memory port follows the config (8 * rows bits).

A 4x4 NPUCore runs the adversarial programs of tests/test_review_sequencer.py (GEMM chains, ARGMAX,
MAXPOOL2 / IM2COL3 with several channel tiles) bit-exact with quant.device_model; a 16x16 sequencer
(128-bit feature words) runs MAXPOOL2 / IM2COL3 / ARGMAX in amaranth.sim against the same model with a
behavioural feature memory; a 16x16 NPUCore elaborates and runs the review programs in cocotb.
"""

import numpy as np
from amaranth.back import rtlil
from amaranth.sim import Simulator

from hw.npu import NPUCore
from hw.sequencer import Sequencer
from quant.config import NPUConfig
from quant.device_model import DeviceModel
from quant.program import Instr, Op, encode_program
from quant.tiling import feature_words, tiles
from sim.runner import run_cocotb
from tests.test_review_sequencer import scenarios

CFG4 = NPUConfig(rows=4, cols=4, weight_bits=3, max_k=64, act_depth=1024, weight_depth=512, chan_depth=64, m_block=6)
CFG16 = NPUConfig(rows=16, cols=16)


def test_npu_core_4x4_programs():
    run_cocotb(
        "npucore",
        {"config": CFG4.to_dict(), "prog_depth": 256},
        lambda: NPUCore(CFG4, 256),
        "review_npu_bench",
        bench_params={"config": CFG4.to_dict(), "prog_depth": 256, "scenarios": scenarios(CFG4)},
    )


def test_16x16_elaborates_with_wide_ports():
    seq = Sequencer(CFG16)
    assert seq.mem_rdata.shape().width == seq.mem_wdata.shape().width == 128
    rtlil.convert(seq)
    core = NPUCore(CFG16, 64)
    assert core.port_width == 128
    rtlil.convert(core)


def _data_movement_program(cfg, rng):
    """MAXPOOL2 + IM2COL3 over a 2-tile map and its odd-sized pooled map, then ARGMAX over 2 N-tiles.

    Returns (feature words, program words, feature words used)."""
    L = cfg.rows
    h, w, ct = 6, 4, 2
    X = rng.integers(-128, 128, size=(h * w, ct * L))
    feature = feature_words(X, L)
    pool = len(feature)
    col = pool + ct * (h // 2) * (w // 2)
    col2 = col + 9 * ct * h * w
    am_src = col2 + 9 * ct * (h // 2) * (w // 2)
    m, n = 5, L + 3
    nt = tiles(n, L)
    feature += [0] * (am_src - len(feature)) + feature_words(rng.integers(-128, 128, size=(m, n)), L)
    am_dst = am_src + nt * m
    prog = [
        Instr(Op.MAXPOOL2, {"src": 0, "dst": pool, "h": h, "w": w, "ct": ct}),
        Instr(Op.IM2COL3, {"src": 0, "dst": col, "h": h, "w": w, "ct": ct}),
        Instr(Op.IM2COL3, {"src": pool, "dst": col2, "h": h // 2, "w": w // 2, "ct": ct}),
        Instr(Op.ARGMAX, {"src": am_src, "dst": am_dst, "m": m, "n": n, "nt": nt}),
        Instr(Op.END, {}),
    ]
    return feature, encode_program(prog), am_dst + tiles(m, L)


def test_sequencer_16x16_data_movement_matches_model():
    cfg = CFG16
    feature, prog, used = _data_movement_program(cfg, np.random.default_rng(16))
    model = DeviceModel(cfg)
    model.feature[: len(feature)] = feature
    model.program[: len(prog)] = prog
    model.run()

    dut = Sequencer(cfg, rnn=False)
    mem = list(feature) + [0] * (used - len(feature))
    result = {}

    async def tb(ctx):
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for _ in range(20_000):
            # behavioural memories: the word at the address of the cycle before (feature and program)
            addr, we, wdata, paddr = (ctx.get(s) for s in (dut.mem_addr, dut.mem_we, dut.mem_wdata, dut.prog_addr))
            await ctx.tick()
            if we:
                mem[addr] = wdata
            ctx.set(dut.mem_rdata, mem[addr] if addr < len(mem) else 0)
            ctx.set(dut.prog_data, prog[paddr] if paddr < len(prog) else 0)
            if ctx.get(dut.done):
                result["error"] = ctx.get(dut.error)
                return
        raise AssertionError("the sequencer did not finish")

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert result["error"] == 0
    bad = [i for i in range(used) if mem[i] != model.feature[i]]
    assert not bad, f"{len(bad)} feature words differ, first at {bad[:5]}"


def test_npu_core_16x16_programs():
    """The 16x16 NPUCore (256 PEs, 128-bit feature words, 48-bit weight rows) on the same programs."""
    cfg = CFG16
    run_cocotb(
        "npucore",
        {"config": cfg.to_dict(), "prog_depth": 256},
        lambda: NPUCore(cfg, 256),
        "review_npu_bench",
        bench_params={"config": cfg.to_dict(), "prog_depth": 256, "scenarios": scenarios(cfg)},
    )
