"""cocotb regressions of the GEMM engine against the golden GEMM, and the cycle model against the RTL."""

import json

import numpy as np
import pytest

from hw.gemm import GemmEngine
from quant.config import NPUConfig
from quant.perf import DRAIN_BUFFER_ROWS, gemm_cycles
from sim.runner import run_cocotb, simulator_available

# One big-memory 8x8 configuration serves the random regression and the 256^3 utilization run.
CFG8 = NPUConfig(
    rows=8, cols=8, weight_bits=3, max_k=256, act_depth=16384, weight_depth=8192, chan_depth=256, m_block=128
)


def random_cases(cfg: NPUConfig, count: int, seed: int, max_m: int, max_k: int, max_n: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(count):
        case = {
            "m": int(rng.integers(1, max_m + 1)),
            "k": int(rng.integers(1, max_k + 1)),
            "n": int(rng.integers(1, max_n + 1)),
            "relu": bool(rng.integers(0, 2)),
            "seed": int(seed * 1000 + i),
            "data": ["random", "random", "extreme", "bias"][i % 4],
        }
        if i % 3 == 2:  # stalls are driven from Python every cycle: keep those cases small
            case.update(stall=0.15, out_stall=0.3, m=min(case["m"], 40))
        cases.append(case)
    return cases


def _run(
    cfg, cases, tmp_path, simulator="verilator", drain_rows=DRAIN_BUFFER_ROWS, host_read_latency=1, read_regs=None
):
    report = tmp_path / "report.json"
    key = {"config": cfg.to_dict()}
    if drain_rows != DRAIN_BUFFER_ROWS:
        key["drain"] = drain_rows
    if host_read_latency != 1:
        key["host_read_latency"] = host_read_latency
    if read_regs is not None:
        key["read_regs"] = read_regs
    params = {"config": cfg.to_dict(), "cases": cases, "report": str(report), "seed": 1}
    run_cocotb(
        "gemm",
        key,
        lambda: GemmEngine(cfg, drain_rows, host_read_latency=host_read_latency, read_regs=read_regs),
        "gemm_bench",
        simulator=simulator,
        bench_params={**params, "host_read_latency": host_read_latency},
    )
    return json.loads(report.read_text())


def _check_cycles(cfg, report, drain_rows=DRAIN_BUFFER_ROWS):
    checked = 0
    for r in report:
        assert r["errors"] == 0
        if not r.get("stall") and not r.get("out_stall"):
            assert r["cycles"] == gemm_cycles(cfg, r["m"], r["k"], r["n"], drain_rows=drain_rows).cycles, r
            checked += 1
    return checked


def test_gemm_8x8_random_shapes(tmp_path):
    # K and N mostly not multiples of 8, M across several accumulator blocks, every code of the
    # 3-bit weights, activations at -128/127, biases near the accumulator limits, ReLU, stalls.
    cases = random_cases(CFG8, 24, seed=8, max_m=300, max_k=70, max_n=40)
    cases += [
        dict(m=1, k=1, n=1, seed=1),
        dict(m=128, k=8, n=8, seed=2),
        dict(m=129, k=9, n=9, seed=3),
        dict(m=3, k=256, n=3, seed=4, data="extreme"),
        # heavy output backpressure alone (it also freezes the compute pipeline, so a drained row
        # must never reach the one-entry row buffer before its head row's lanes have left), a
        # drain-bound shape; and the compute stall alone, which lets the lanes run ahead
        dict(m=48, k=8, n=24, seed=5, out_stall=0.7),
        dict(m=40, k=16, n=16, seed=6, stall=0.6),
    ]
    report = _run(CFG8, cases, tmp_path)
    assert len(report) == len(cases)
    assert _check_cycles(CFG8, report) >= 15


def test_gemm_256_cubed_utilization(tmp_path):
    # The acceptance figure: useful MACs / (PEs x cycles) on a 256x256x256 GEMM, 8x8 array.
    report = _run(CFG8, [dict(m=256, k=256, n=256, seed=11)], tmp_path)
    r = report[0]
    model = gemm_cycles(CFG8, 256, 256, 256)
    assert r["errors"] == 0 and r["cycles"] == model.cycles
    util = 256**3 / (64 * r["cycles"])
    print(f"\n256x256x256 on 8x8: {r['cycles']} cycles, utilization {util:.1%}")
    assert util >= 0.85


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_gemm_other_weight_widths(tmp_path, bits):
    cfg = NPUConfig(
        rows=4, cols=4, weight_bits=bits, max_k=64, act_depth=2048, weight_depth=1024, chan_depth=64, m_block=16
    )
    report = _run(cfg, random_cases(cfg, 9, seed=bits, max_m=40, max_k=64, max_n=12), tmp_path)
    assert _check_cycles(cfg, report) >= 5


def test_gemm_two_row_drain_buffer(tmp_path):
    """The engine options (two drain row buffer entries, registered host reads): bit-exact, model exact."""
    cfg = NPUConfig(
        rows=4, cols=4, weight_bits=3, max_k=64, act_depth=2048, weight_depth=1024, chan_depth=64, m_block=16
    )
    # (and the registered host read port: the words come one cycle later)
    report = _run(
        cfg, random_cases(cfg, 9, seed=21, max_m=40, max_k=64, max_n=12), tmp_path, drain_rows=2, host_read_latency=2
    )
    assert _check_cycles(cfg, report, drain_rows=2) >= 5
    # on a 4x4 array drain-bound shapes are slower with one entry (a little) ...
    assert gemm_cycles(cfg, 40, 8, 12, drain_rows=1).cycles > gemm_cycles(cfg, 40, 8, 12, drain_rows=2).cycles
    # ... on 8x8 the row arrives as the head's last lane leaves, as fast as with two
    for shape in [(64, 64, 64), (128, 8, 8), (256, 16, 16)]:
        assert (
            gemm_cycles(NPUConfig(), *shape, drain_rows=1).cycles
            <= gemm_cycles(NPUConfig(), *shape, drain_rows=2).cycles
        )


@pytest.mark.parametrize("rows,read_regs", [(4, False), (2, True)])
def test_gemm_read_register_placement(tmp_path, rows, read_regs):
    """Registered read addresses (the iCE40's choice) give the same data in the same cycles as
    registered read data (simulation's and the ECP5's); and on a 2x2 array, where passes may
    follow two cycles apart, one-row blocks never read an accumulator row before its update."""
    cfg = NPUConfig(
        rows=rows, cols=rows, weight_bits=3, max_k=64, act_depth=1024, weight_depth=1024, chan_depth=64, m_block=8
    )
    cases = random_cases(cfg, 6, seed=30 + rows, max_m=20, max_k=24, max_n=10)
    cases += [dict(m=1, k=9, n=5, seed=40), dict(m=9, k=7, n=3, seed=41, data="extreme")]
    report = _run(cfg, cases, tmp_path, read_regs=read_regs)
    assert _check_cycles(cfg, report) >= 5


@pytest.mark.icarus
def test_gemm_icarus(tmp_path):
    if not simulator_available("icarus"):
        pytest.fail("Icarus Verilog (iverilog) is not installed; `make test` installs it when run as root")
    cfg = NPUConfig(rows=4, cols=4, weight_bits=3, max_k=64, act_depth=512, weight_depth=256, chan_depth=32, m_block=8)
    report = _run(cfg, random_cases(cfg, 5, seed=5, max_m=20, max_k=20, max_n=10), tmp_path, simulator="icarus")
    _check_cycles(cfg, report)


def test_engine_refuses_non_square():
    with pytest.raises(ValueError, match="square"):
        GemmEngine(NPUConfig(rows=4, cols=8))
