"""Review: the exact cycle model (quant/perf.py) against the RTL on edge shapes (M = 1, m_block +- 1, K = 1, ...).

Reuses the GEMM engine builds of tests/test_gemm.py (CFG8 and the 4x4 2-bit config with m_block 16).
"""

from quant.config import NPUConfig
from tests.test_gemm import CFG8, _check_cycles, _run

CFG4 = NPUConfig(rows=4, cols=4, weight_bits=2, max_k=64, act_depth=2048, weight_depth=1024, chan_depth=64, m_block=16)


def _edge_cases(cfg, ms, ks, ns):
    cases = []
    i = 0
    for m in ms:
        for k in ks:
            for n in ns:
                i += 1
                cases.append(dict(m=m, k=k, n=n, seed=900 + i, relu=bool(i % 2), data=["random", "extreme"][i % 2]))
    return cases


def test_cycle_model_edges_8x8(tmp_path):
    mb = CFG8.m_block
    cases = _edge_cases(CFG8, (1, 2, mb - 1, mb, mb + 1, 2 * mb + 1), (1, 8, 9, 17), (1, 9))
    report = _run(CFG8, cases, tmp_path)
    assert len(report) == len(cases)
    assert _check_cycles(CFG8, report) == len(cases)


def test_cycle_model_edges_4x4_mblock16(tmp_path):
    mb = CFG4.m_block
    cases = _edge_cases(CFG4, (1, 2, mb - 1, mb, mb + 1, 2 * mb, 3 * mb + 1), (1, 4, 5, 12), (1, 4, 5))
    report = _run(CFG4, cases, tmp_path)
    assert len(report) == len(cases)
    assert _check_cycles(CFG4, report) == len(cases)


CFG3 = NPUConfig(rows=3, cols=3, weight_bits=4, max_k=64, act_depth=1024, weight_depth=512, chan_depth=64, m_block=5)
CFG8_MB16 = NPUConfig(
    rows=8, cols=8, weight_bits=3, max_k=256, act_depth=2048, weight_depth=1024, chan_depth=64, m_block=16
)


def test_cycle_model_edges_3x3_mblock5(tmp_path):
    """Non-power-of-two array and an m_block shorter than the array latency."""
    mb = CFG3.m_block
    cases = _edge_cases(CFG3, (1, 2, mb - 1, mb, mb + 1, 2 * mb, 3 * mb + 2), (1, 3, 4, 10), (1, 3, 4, 7))
    report = _run(CFG3, cases, tmp_path)
    assert len(report) == len(cases)
    assert _check_cycles(CFG3, report) == len(cases)


def test_cycle_model_edges_8x8_mblock16(tmp_path):
    mb = CFG8_MB16.m_block
    cases = _edge_cases(CFG8_MB16, (1, mb - 1, mb, mb + 1, 2 * mb, 5 * mb + 3), (1, 8, 9, 40), (1, 8, 17))
    report = _run(CFG8_MB16, cases, tmp_path)
    assert len(report) == len(cases)
    assert _check_cycles(CFG8_MB16, report) == len(cases)
