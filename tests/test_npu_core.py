"""cocotb: NPUCore (engine + sequencer) runs MLP and CNN layer programs like the DeviceModel."""

import numpy as np

from hw.npu import NPUCore
from quant.codes import encode
from quant.compile import plan_gemm
from quant.config import NPUConfig
from quant.device_model import DeviceModel
from quant.fixed import quantize_multiplier
from quant.program import Instr, Op, encode_program
from quant.tiling import channel_words, feature_words, tiles, weight_words
from sim.runner import run_cocotb

CFG = NPUConfig(rows=8, cols=8, weight_bits=3, max_k=256, act_depth=2048, weight_depth=1024, chan_depth=128, m_block=64)


def _layer(rng, k, n, cfg=CFG):
    w = encode(rng.normal(0, 2, size=(k, n)), cfg.weight_bits)
    bias = rng.integers(-2000, 2000, size=n)
    mn = [quantize_multiplier(s) for s in np.exp(rng.uniform(np.log(2e-3), np.log(2e-2), size=n))]
    return w, bias, [x[0] for x in mn], [x[1] for x in mn]


def mlp_scenario(seed, batch=20, dims=(20, 24, 10)):
    rng = np.random.default_rng(seed)
    X = rng.integers(-128, 128, size=(batch, dims[0]))
    feature = feature_words(X, CFG.rows)
    weights, chans, prog = [], [], []
    act = 0
    for i, (k, n) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        w, b, mult, shift = _layer(rng, k, n)
        plan = plan_gemm(
            CFG,
            batch,
            k,
            n,
            act_base=act,
            wgt_base=len(weights),
            chan_base=len(chans),
            relu=i < len(dims) - 2,
            w_codes=w,
        )
        weights += weight_words(w, CFG)
        chans += channel_words(b, mult, shift)
        prog.append(Instr(Op.GEMM, {k2: v for k2, v in plan.command().items() if k2 != "relu"}, relu=plan.relu))
        act = plan.out_base
    nt = tiles(dims[-1], CFG.cols)
    prog.append(Instr(Op.ARGMAX, {"src": act, "dst": act + nt * batch, "m": batch, "n": dims[-1], "nt": nt}))
    return {
        "name": f"mlp{seed}",
        "images": {"feature": feature, "weight": weights, "channel": chans, "program": encode_program(prog)},
        "check_words": act + nt * batch + tiles(batch, CFG.rows),
    }


def cnn_scenario(seed):
    """8x8x1 image -> (host im2col) conv3x3x8 + ReLU -> maxpool -> im2col -> conv3x3x8 + ReLU -> maxpool
    -> dense 32->10 -> argmax, all on chip after the first im2col."""
    rng = np.random.default_rng(seed)
    img = rng.integers(-128, 128, size=(8, 8))
    pad = np.pad(img, 1)
    A0 = np.array([[pad[y + dy, x + dx] for dy in range(3) for dx in range(3)] for y in range(8) for x in range(8)])
    feature = feature_words(A0, CFG.rows)  # 64 pixels x 9 taps -> 2 K-tiles -> 128 words
    weights, chans, prog = [], [], []
    addr = len(feature)

    def gemm(act, m, k, n, relu):
        nonlocal addr
        w, b, mult, shift = _layer(rng, k, n)
        plan = plan_gemm(
            CFG, m, k, n, act_base=act, out_base=addr, wgt_base=len(weights), chan_base=len(chans), relu=relu, w_codes=w
        )
        weights.extend(weight_words(w, CFG))
        chans.extend(channel_words(b, mult, shift))
        prog.append(Instr(Op.GEMM, {k2: v for k2, v in plan.command().items() if k2 != "relu"}, relu=relu))
        out = addr
        addr += plan.out_words
        return out

    c1 = gemm(0, 64, 9, 8, True)
    p1 = addr
    prog.append(Instr(Op.MAXPOOL2, {"src": c1, "dst": p1, "h": 8, "w": 8, "ct": 1}))
    addr += 16
    col = addr
    prog.append(Instr(Op.IM2COL3, {"src": p1, "dst": col, "h": 4, "w": 4, "ct": 1}))
    addr += 9 * 16
    c2 = gemm(col, 16, 72, 8, True)
    p2 = addr
    prog.append(Instr(Op.MAXPOOL2, {"src": c2, "dst": p2, "h": 4, "w": 4, "ct": 1}))
    addr += 4
    logits = gemm(p2, 1, 32, 10, False)
    prog.append(Instr(Op.ARGMAX, {"src": logits, "dst": addr, "m": 1, "n": 10, "nt": 2}))
    addr += 1
    return {
        "name": f"cnn{seed}",
        "images": {"feature": feature, "weight": weights, "channel": chans, "program": encode_program(prog)},
        "check_words": addr,
    }


def test_device_model_argmax_and_pool_are_sane():
    m = DeviceModel(CFG)
    sc = mlp_scenario(3, batch=5)
    for name, words in sc["images"].items():
        getattr(m, name)[: len(words)] = words
    m.run()
    idx_word = m.feature[sc["check_words"] - 1]
    idx = [(idx_word >> (8 * i)) & 0xFF for i in range(5)]
    assert all(0 <= i < 10 for i in idx)


def run_npu_core(cfg: NPUConfig, prog_depth: int, scenarios: list[dict]) -> None:
    """Run ``scenarios`` on ``NPUCore(cfg, prog_depth)`` under Verilator (sim/benches/npu_bench.py)."""
    run_cocotb(
        "npucore",
        {"config": cfg.to_dict(), "prog_depth": prog_depth},
        lambda: NPUCore(cfg, prog_depth),
        "npu_bench",
        bench_params={"config": cfg.to_dict(), "prog_depth": prog_depth, "scenarios": scenarios},
    )


def test_npu_core_programs():
    scenarios = [mlp_scenario(1), mlp_scenario(2, batch=70, dims=(64, 40, 10)), cnn_scenario(3), cnn_scenario(4)]
    run_npu_core(CFG, 256, scenarios)
