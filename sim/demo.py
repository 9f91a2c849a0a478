"""``shiftnpu demo`` (foundation version): a random GEMM on the simulated array, then synthesis.

1. Random int8 activations times random 3-bit DenseShift weights, streamed through the 8x8
   SystolicArray under Verilator with double-buffered weight loading and random stalls; every
   output vector is compared with the integer golden result (numpy).
2. The same array, synthesized for the iCEBreaker (iCE40UP5K) through YoWASP: cells and Fmax.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

__all__ = ["main"]


def main(args: argparse.Namespace) -> int:
    from hw.synth import synthesize
    from hw.systolic import SystolicArray
    from quant.config import NPUConfig
    from sim.runner import SimulationError, run_cocotb

    cfg = NPUConfig()
    print(
        f"shiftnpu demo: {cfg.rows}x{cfg.cols} shift array, {cfg.weight_bits}-bit DenseShift weights, "
        f"{cfg.array_sum_width}-bit column sums"
    )
    print("[1/2] simulating random GEMM tiles under Verilator (first run compiles the model, ~20 s) ...", flush=True)
    with tempfile.TemporaryDirectory() as td:
        report = Path(td) / "report.json"
        params = {
            "config": cfg.to_dict(),
            "pairs": 50,
            "seed": args.seed,
            "stall": 0.1,
            "bubble": 0.1,
            "report": str(report),
        }
        t0 = time.monotonic()
        try:
            run_cocotb(
                "systolic", {"config": cfg.to_dict()}, lambda: SystolicArray(cfg), "systolic_bench", bench_params=params
            )
            ok = True
        except SimulationError as e:
            print(str(e)[-2000:])
            ok = False
        r = json.loads(report.read_text()) if report.exists() else None
    if r is None:
        print("FAIL: the simulation produced no report")
        return 1
    util = r["macs"] / (cfg.pe_count * r["cycles"])
    print(
        f"      {r['pairs']} weight tiles, {r['vectors']} activation vectors, {r['cycles']} cycles "
        f"(with 10% stalls and bubbles), PE utilization {util:.0%}, {time.monotonic() - t0:.1f} s"
    )
    print(
        f"      bit-exact match with the golden model: {'YES' if ok and r['mismatches'] == 0 else 'NO'} "
        f"({r['mismatches']} mismatching vectors)"
    )
    if not ok or r["mismatches"]:
        return 1
    if args.no_synth:
        return 0
    print("[2/2] synthesizing the array for iCEBreaker (iCE40UP5K) with YoWASP (first run ~2 min) ...", flush=True)
    rep = synthesize(lambda: SystolicArray(cfg), "icebreaker", freq_mhz=50, build_dir="build/demo-synth")
    print(f"      {rep.summary()}")
    print(
        f"      {rep.logic / cfg.pe_count:.1f} logic cells per PE (array incl. skew/deskew), "
        f"bitstream {rep.bitstream} ({rep.seconds:.0f} s)"
    )
    return 0
