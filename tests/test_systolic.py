"""cocotb: the bare SystolicArray against numpy on random matrix pairs, with stalls and bubbles."""

import pytest

from hw.systolic import SystolicArray
from quant.config import NPUConfig
from sim.runner import run_cocotb, simulator_available


def _run(rows, cols, bits, simulator, pairs, seed):
    cfg = NPUConfig(rows=rows, cols=cols, weight_bits=bits, max_k=max(rows, 64))
    params = {"config": cfg.to_dict(), "pairs": pairs, "seed": seed}
    run_cocotb(
        "systolic",
        {"config": cfg.to_dict()},
        lambda: SystolicArray(cfg),
        "systolic_bench",
        simulator=simulator,
        bench_params=params,
    )


# 2- and 4-bit codes go through the same array in tests/test_gemm.py; every code of every width
# through one PE in tests/test_pe.py.
@pytest.mark.parametrize("rows,cols,bits", [(4, 4, 3), (8, 8, 3), (8, 8, 8), (4, 8, 4)])
def test_array_verilator(rows, cols, bits):
    _run(rows, cols, bits, "verilator", pairs=200, seed=rows * 10 + bits)


@pytest.mark.icarus
def test_array_icarus():
    if not simulator_available("icarus"):
        pytest.fail("Icarus Verilog (iverilog) is not installed; run `make test` as root or apt-get install iverilog")
    _run(4, 4, 3, "icarus", pairs=200, seed=44)
