"""GEMM engine utilization over shapes, from the exact cycle model (quant/perf.py).

The cycle model equals the RTL cycle count (tests/test_gemm.py checks it on every regression case
and on the 256^3 GEMM in Verilator), so this table needs no simulation. Writes
bench/results/gemm.md.

    .venv/bin/python bench/gemm_util.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from quant.config import NPUConfig  # noqa: E402
from quant.perf import gemm_cycles  # noqa: E402

SHAPES = [(256, 256, 256), (128, 576, 64), (64, 64, 64), (16, 64, 32), (16, 32, 10), (64, 9, 8), (1, 256, 256)]


def main() -> None:
    rows = []
    t0 = time.monotonic()
    for size in (4, 8, 16):
        cfg = NPUConfig(rows=size, cols=size, max_k=4096, m_block=128)
        for m, k, n in SHAPES:
            t = gemm_cycles(cfg, m, k, n)
            rows.append((f"{size}x{size}", m, k, n, t.cycles, t.utilization))
    lines = [
        "# GEMM engine utilization (cycle model == RTL)",
        "",
        "Useful MACs / (PEs x cycles), command acceptance to last result written; 3-bit weights,",
        "`m_block = 128`. Reproduce: `.venv/bin/python bench/gemm_util.py`.",
        "",
        "| array | M | K | N | cycles | utilization |",
        "|---|---:|---:|---:|---:|---:|",
    ] + [f"| {a} | {m} | {k} | {n} | {c:,} | {u:.1%} |" for a, m, k, n, c, u in rows]
    lines += [
        "",
        "Small-K shapes are bound by the drain (at most two accumulator rows in flight or buffered",
        f"ahead of the shared requantizer); large GEMMs keep the array busy. Model run time: {time.monotonic() - t0:.1f} s.",
    ]
    out = Path(__file__).resolve().parent / "results" / "gemm.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
