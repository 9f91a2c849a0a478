"""Review: adversarial NPUCore programs (sequencer ops and GEMM edge shapes) against the DeviceModel.

Reuses tests/test_npu_core.py's CFG and design name, so the Verilator build is shared with that test.
"""

import numpy as np
import pytest

from hw.npu import NPUCore
from quant.compile import plan_gemm
from quant.config import NPUConfig
from quant.device_model import DeviceModel
from quant.program import INSTR_WORDS, Instr, Op, encode_program
from quant.tiling import channel_words, feature_words, tiles, weight_words
from sim.runner import run_cocotb
from tests.test_npu_core import CFG, _layer

L = CFG.rows


def _images(feature, prog, weights=(), chans=()):
    return {"feature": list(feature), "weight": list(weights), "channel": list(chans), "program": encode_program(prog)}


def argmax_scenario(seed, m, n, mode, cfg=CFG):
    """ARGMAX over an M x N matrix with ties, all-negative rows, -128 and several N-tiles."""
    L = cfg.rows
    rng = np.random.default_rng(seed)
    if mode == "ties":
        X = rng.integers(-3, 3, size=(m, n))  # many ties
    elif mode == "negative":
        X = rng.integers(-128, 0, size=(m, n))
        X[::3] = -128  # whole rows at the minimum: index 0
    else:
        X = rng.integers(-128, 128, size=(m, n))
        X[:, -1] = 127  # the maximum in the last valid lane, after padding lanes of the earlier tiles
        X[::2, 0] = 127  # tie between first and last lane on even rows
    nt = tiles(n, L)
    feature = feature_words(X, L)
    # junk in the padding lanes past N must be ignored
    for t in range(nt):
        for r in range(m):
            w = feature[t * m + r]
            for lane in range(L):
                if t * L + lane >= n:
                    w |= 0x7F << (8 * lane)
            feature[t * m + r] = w
    dst = len(feature)
    prog = [Instr(Op.ARGMAX, {"src": 0, "dst": dst, "m": m, "n": n, "nt": nt})]
    # a second ARGMAX right after, over a sub-range of columns (N not a multiple of 8, one tile)
    n2 = min(n, 5)
    prog.append(Instr(Op.ARGMAX, {"src": 0, "dst": dst + tiles(m, L), "m": m, "n": n2, "nt": 1}))
    return {
        "name": f"argmax_{mode}_{m}x{n}",
        "images": _images(feature, prog),
        "check_words": dst + 2 * tiles(m, L),
    }


def pool_im2col_scenario(seed, h, w, ct, cfg=CFG):
    L = cfg.rows
    """MAXPOOL2 and IM2COL3 with several channel tiles and non-square maps."""
    rng = np.random.default_rng(seed)
    X = rng.integers(-128, 128, size=(h * w, ct * L))
    feature = feature_words(X, L)  # word ct*M + p, as the engine writes a C-channel map
    pool = len(feature)
    opix = (h // 2) * (w // 2)
    col = pool + ct * opix
    col2 = col + 9 * ct * h * w
    prog = [
        Instr(Op.MAXPOOL2, {"src": 0, "dst": pool, "h": h, "w": w, "ct": ct}),
        Instr(Op.IM2COL3, {"src": 0, "dst": col, "h": h, "w": w, "ct": ct}),
        Instr(Op.IM2COL3, {"src": pool, "dst": col2, "h": h // 2, "w": w // 2, "ct": ct}),
    ]
    return {
        "name": f"pool_im2col_{h}x{w}x{ct}",
        "images": _images(feature, prog),
        "check_words": col2 + 9 * ct * opix,
    }


def gemm_chain_scenario(seed, m, dims, cfg=CFG):
    L = cfg.rows
    """Chained GEMMs (N not a multiple of 8 feeding the next layer) with M around m_block, then ARGMAX."""
    rng = np.random.default_rng(seed)
    X = rng.integers(-128, 128, size=(m, dims[0]))
    feature = feature_words(X, L)
    weights, chans, prog = [], [], []
    act = 0
    for i, (k, n) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        w, b, mult, shift = _layer(rng, k, n, cfg)
        plan = plan_gemm(
            cfg, m, k, n, act_base=act, wgt_base=len(weights), chan_base=len(chans), relu=i % 2 == 0, w_codes=w
        )
        weights += weight_words(w, cfg)
        chans += channel_words(b, mult, shift)
        prog.append(Instr(Op.GEMM, {k2: v for k2, v in plan.command().items() if k2 != "relu"}, relu=plan.relu))
        act = plan.out_base
    nt = tiles(dims[-1], cfg.cols)
    prog.append(Instr(Op.ARGMAX, {"src": act, "dst": act + nt * m, "m": m, "n": dims[-1], "nt": nt}))
    return {
        "name": f"gemm_chain_m{m}_{'-'.join(map(str, dims))}",
        "images": _images(feature, prog, weights, chans),
        "check_words": act + nt * m + tiles(m, L),
    }


def bad_opcode_scenario():
    """An unknown opcode after a valid op: the sequencer must stop with done and error."""
    prog = encode_program([Instr(Op.MAXPOOL2, {"src": 0, "dst": 8, "h": 2, "w": 2, "ct": 1})])
    words = prog[:INSTR_WORDS] + [0x7] + [0] * (INSTR_WORDS - 1) + prog[INSTR_WORDS:]
    return {
        "name": "bad_opcode",
        "images": {"feature": list(range(1, 5)), "weight": [], "channel": [], "program": words},
        "expect_error": True,
        "check_words": 0,
    }


def scenarios(cfg=CFG):
    mb = cfg.m_block
    return [
        argmax_scenario(1, 13, 20, "ties", cfg),
        argmax_scenario(2, 9, 17, "negative", cfg),
        argmax_scenario(3, 17, 8, "random", cfg),
        argmax_scenario(4, 1, 1, "random", cfg),
        pool_im2col_scenario(5, 4, 6, 3, cfg),
        pool_im2col_scenario(6, 6, 2, 2, cfg),
        bad_opcode_scenario(),
        # after an error, a good program must run cleanly again (error cleared)
        gemm_chain_scenario(7, 1, (5, 13, 3), cfg),
        gemm_chain_scenario(8, mb, (20, 13, 11), cfg),
        gemm_chain_scenario(9, mb + 1, (9, 13, 10), cfg),
        gemm_chain_scenario(10, 2 * mb, (16, 7, 9), cfg),
        gemm_chain_scenario(11, max(1, mb - 1), (1, 1, 1), cfg),
    ]


def test_review_scenarios_model_sane():
    """The DeviceModel runs every scenario (guards the scenario builders themselves)."""
    for sc in scenarios():
        if sc.get("expect_error"):
            continue
        dm = DeviceModel(CFG)
        for name, words in sc["images"].items():
            getattr(dm, name)[: len(words)] = words
        dm.run()
        assert sc["check_words"] <= CFG.act_depth


def test_review_npu_core_adversarial():
    run_cocotb(
        "npucore",
        {"config": CFG.to_dict(), "prog_depth": 256},
        lambda: NPUCore(CFG, 256),
        "review_npu_bench",
        bench_params={"config": CFG.to_dict(), "prog_depth": 256, "scenarios": scenarios()},
    )


def zero_size_scenario(op, args):
    """A data-movement op with a zero extent: the DeviceModel does nothing; the RTL must finish too."""
    rng = np.random.default_rng(5)
    feature = [int(v) for v in rng.integers(0, 1 << 62, size=16)]
    prog = [Instr(op, args), Instr(Op.MAXPOOL2, {"src": 0, "dst": 16, "h": 2, "w": 2, "ct": 1})]
    return {
        "name": f"zero_{Op.NAMES[op]}",
        "images": _images(feature, prog),
        "check_words": 17,
        "max_cycles": 20_000,
    }


def test_review_zero_extent_ops_finish():
    run_cocotb(
        "npucore",
        {"config": CFG.to_dict(), "prog_depth": 256},
        lambda: NPUCore(CFG, 256),
        "review_npu_bench",
        bench_params={
            "config": CFG.to_dict(),
            "prog_depth": 256,
            "scenarios": [
                zero_size_scenario(Op.ARGMAX, {"src": 0, "dst": 20, "m": 0, "n": 4, "nt": 1}),
                zero_size_scenario(Op.MAXPOOL2, {"src": 0, "dst": 20, "h": 0, "w": 2, "ct": 1}),
                zero_size_scenario(Op.IM2COL3, {"src": 0, "dst": 20, "h": 2, "w": 2, "ct": 0}),
                zero_size_scenario(
                    Op.GEMM,
                    {"m": 0, "n": 4, "kt": 1, "nt": 1, "act_base": 0, "out_base": 20, "wgt_base": 0, "chan_base": 0},
                ),
            ],
        },
    )


CFG3 = NPUConfig(rows=3, cols=3, weight_bits=4, max_k=64, act_depth=1024, weight_depth=512, chan_depth=64, m_block=5)


def test_review_npu_core_3x3_mblock5():
    """A non-power-of-two lane count (ARGMAX slot = row % lanes, 24-bit words) and a tiny odd m_block."""
    run_cocotb(
        "npucore",
        {"config": CFG3.to_dict(), "prog_depth": 256},
        lambda: NPUCore(CFG3, 256),
        "review_npu_bench",
        bench_params={"config": CFG3.to_dict(), "prog_depth": 256, "scenarios": scenarios(CFG3)},
    )


def _run_sequencer(cfg, feature, prog, used, max_cycles=50_000, fetch_reg=None):
    """Sequencer(rnn=False) alone in amaranth.sim with behavioural feature and program memories.

    Returns (feature words, error flag, cycles reported)."""
    from amaranth.sim import Simulator

    from hw.sequencer import Sequencer

    dut = Sequencer(cfg, rnn=False, fetch_reg=fetch_reg)
    mem = list(feature) + [0] * (used - len(feature))
    result = {}

    async def tb(ctx):
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for _ in range(max_cycles):
            addr, we, wdata, paddr = (ctx.get(s) for s in (dut.mem_addr, dut.mem_we, dut.mem_wdata, dut.prog_addr))
            await ctx.tick()
            if we:
                mem[addr] = wdata
            ctx.set(dut.mem_rdata, mem[addr] if addr < len(mem) else 0)
            ctx.set(dut.prog_data, prog[paddr] if paddr < len(prog) else 0)
            if ctx.get(dut.done):
                result.update(error=ctx.get(dut.error), cycles=ctx.get(dut.cycles))
                return
        raise AssertionError("the sequencer did not finish")

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return mem, result["error"], result["cycles"]


@pytest.mark.parametrize("fetch_reg", [True, False], ids=["word-registered", "address-registered"])
def test_data_movement_cycles_and_results_8x8(fetch_reg):
    """MAXPOOL2 / IM2COL3 / ARGMAX on the 8x8 sequencer: the device model's words, and the documented
    body cycles (MAXPOOL2 7 per output pixel + 1, IM2COL3 4 per destination word, ARGMAX quant.lstm_perf),
    with either place of the fetch register (the ECP5's and the iCE40's)."""
    from quant.lstm_perf import INSTR_OVERHEAD, argmax_cycles

    cfg = NPUConfig()
    rng = np.random.default_rng(21)
    h, w, ct = 4, 6, 2
    feature = feature_words(rng.integers(-128, 128, size=(h * w, ct * L)), L)
    pool = len(feature)
    col = pool + ct * (h // 2) * (w // 2)
    am_src = col + 9 * ct * 3 * 2
    m, n = 5, 11
    feature += [0] * (am_src - len(feature)) + feature_words(rng.integers(-128, 128, size=(m, n)), L)
    am_dst = am_src + tiles(n, L) * m
    prog = [
        Instr(Op.MAXPOOL2, {"src": 0, "dst": pool, "h": h, "w": w, "ct": ct}),
        Instr(Op.IM2COL3, {"src": pool, "dst": col, "h": 3, "w": 2, "ct": ct}),  # odd height
        Instr(Op.ARGMAX, {"src": am_src, "dst": am_dst, "m": m, "n": n, "nt": tiles(n, L)}),
    ]
    words = encode_program(prog)
    used = am_dst + tiles(m, L)
    model = DeviceModel(cfg)
    model.feature[: len(feature)] = feature
    model.program[: len(words)] = words
    model.run()
    mem, error, cycles = _run_sequencer(cfg, feature, words, used, fetch_reg=fetch_reg)
    assert error == 0
    assert mem[:used] == model.feature[:used]
    body = 7 * ct * (h // 2) * (w // 2) + 1 + 4 * 9 * ct * 3 * 2 + argmax_cycles(cfg, m, n)
    assert cycles == 4 * INSTR_OVERHEAD + body  # three ops and END


def test_odd_maxpool_words_still_end():
    """MAXPOOL2 with an odd height or width (which quant.program refuses, so written as raw words)
    must still finish: the loops count to the size rounded down to even."""
    cfg = NPUConfig()
    for h, w in ((3, 4), (4, 5), (5, 3), (1, 4)):
        words = encode_program([Instr(Op.MAXPOOL2, {"src": 0, "dst": 64, "h": 4, "w": 4, "ct": 1})])
        words[2] = h | (w << 16)  # word 2: fields h (low) and w (high)
        _, error, _ = _run_sequencer(cfg, list(range(1, 33)), words, 128)
        assert error == 0
