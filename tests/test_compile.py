import numpy as np
import pytest

from quant.codes import encode
from quant.compile import CompileError, plan_gemm, worst_case_accumulator
from quant.config import NPUConfig

CFG = NPUConfig(rows=8, cols=8, weight_bits=3, max_k=64, act_depth=512, weight_depth=1024, chan_depth=256)


def test_plan_places_result_after_input():
    p = plan_gemm(CFG, 32, 64, 10)
    assert (p.kt, p.nt, p.act_words, p.out_words, p.out_base) == (8, 2, 256, 64, 256)
    assert p.command()["kt"] == 8 and p.weight_words(CFG) == 8 * 2 * 8


def test_refuses_accumulator_overflow_by_config():
    with pytest.raises(CompileError, match="accumulator overflow"):
        plan_gemm(CFG, 1, 10_000, 8)


def test_actual_weights_can_allow_long_reductions():
    k = 200  # beyond max_k, but with all-±1 weights the worst case is small
    w = encode(np.ones((k, 8)), 3)
    assert worst_case_accumulator(CFG, k, w) == 128 * k
    plan_gemm(CFG, 1, k, 8, w_codes=w)
    with pytest.raises(CompileError, match="accumulator overflow"):
        plan_gemm(CFG, 1, 400, 8, w_codes=encode(np.full((400, 8), 8.0), 3))


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(m=400, k=64, n=8), "feature memory"),
        (dict(m=8, k=8, n=300), "channel memory"),
        (dict(m=2, k=512, n=64, w_codes=np.zeros((512, 64), dtype=int)), "weight memory"),
        (dict(m=8, k=8, n=8, act_base=0, out_base=4), "overlaps"),
        (dict(m=0, k=8, n=8), "positive"),
    ],
)
def test_refusals_name_the_resource(kw, match):
    with pytest.raises(CompileError, match=match):
        plan_gemm(CFG, **kw)
