"""Gate-level runs: the NPU netlist Yosys makes for a board, driven through the host driver, bit-exact.

For each board (the iCEBreaker's default config; a 4x4 ULX3S-85F config) the NPU's byte-link top is
elaborated for the board's platform, synthesized by YoWASP Yosys as ``shiftnpu build`` does
(``synth_ice40 -dsp`` / ``synth_ecp5``, abc9 LUT mapping), simulated with Yosys' cell models under
Verilator (sim/gate_level.py) and served to the driver. Models (a random MLP at batch > 1, ARGMAX
ties / all-negative rows, the seq-digits LSTM retargeted to the config, a random LSTM at batch > 1)
run on it; outputs are compared with quant.golden, cycles with the exact cycle model. Writes
``bench/results/gate_level.md`` with what passed, the cycles and the times (synthesis, Verilator
build, each run), measured from a cold cache unless the cache is warm (the table says which). On
ECP5 the block RAMs and multipliers are simulated by our models (sim/cells: Yosys 0.70 ships none).

    PYTHONPATH=. python bench/gate_level.py                    # ~8 min on one core
    PYTHONPATH=. python bench/gate_level.py --boards icebreaker --mapper abc9 abc
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

#: config overrides per board: the ULX3S's default (16x16) made 4x4, with the iCEBreaker's 2048-word
#: weight memory so that the seq-digits LSTM fits
BOARDS = {"icebreaker": {}, "ulx3s-85f": {"rows": 4, "cols": 4, "weight_depth": 2048}}


def _cases(cfg, seqs: int):
    from quant.model import NPUModel
    from quant.npu_compile import largest_batch
    from quant.retarget import retarget
    from tests.model_factory import random_lstm, random_mlp
    from tests.test_npu_board_forms import _tie_mlp

    mlp = random_mlp(1, cfg, sizes=(64, 32, 10))
    x = np.random.default_rng(1).integers(-128, 128, size=(20, 64)).astype(np.int8)
    x[0], x[1], x[2] = -128, 127, 0
    yield "random MLP 64-32-10", mlp, x, min(largest_batch(mlp, cfg), 9)
    # _tie_mlp builds on the iCEBreaker config's model; rebuild it for this config
    import tests.test_npu_board_forms as bf

    saved, bf.CFG = bf.CFG, cfg
    try:
        ties = _tie_mlp(1, [-1500, -1500, 1500, 1500, 1200, -(2**30), -800, 1200, 2500, 2500])
    finally:
        bf.CFG = saved
    x = np.random.default_rng(5).integers(-128, 128, size=(14, 64)).astype(np.int8)
    yield "ARGMAX ties / all-negative rows", ties, x, 7
    from quant.digits import load_split

    lstm, batch = retarget(NPUModel.load("examples/seq_digits_lstm_3bit.npu"), cfg)
    split = load_split()
    yield f"seq-digits LSTM ({seqs} sequences)", lstm, lstm.input.quantize(split.x_test[:seqs]), batch
    rl = random_lstm(3, cfg, inputs=6, hidden=12, steps=4)
    x = np.random.default_rng(6).integers(-128, 128, size=(5, 4, 6)).astype(np.int8)
    yield "random LSTM 6-12, 4 steps", rl, x, largest_batch(rl, cfg)


def run_board(board: str, mapper: str, seqs: int) -> dict:
    from quant import golden
    from quant.lstm_perf import program_cycles
    from sim.gate_level import npu_netlist_dir, synthesize_netlist
    from sim.npu_device import FACTORY, board_config, npu_top, serve_params, simulated_npu
    from sw_driver.device import Device
    from sw_driver.npu import NPURunner

    cfg = board_config(board, **BOARDS[board])
    params = serve_params(cfg, board=board, netlist=True, mapper=mapper)
    ndir = npu_netlist_dir(cfg, board, mapper)
    warm = (ndir / "npu_netlist.v").exists(), (ndir / "verilator-fast" / "npu").exists()
    t0 = time.monotonic()
    synthesize_netlist("npu", {"factory": FACTORY, "params": params}, lambda: npu_top(params), board, mapper=mapper)
    t_synth = time.monotonic() - t0
    out = {"board": board, "cfg": cfg, "mapper": mapper, "synth_s": t_synth, "warm": warm, "runs": []}
    out["cells"] = (ndir / "stat.txt").read_text()
    t0 = time.monotonic()
    with simulated_npu(cfg, board=board, netlist=True, mapper=mapper, start_timeout=3600) as url:
        out["build_s"] = time.monotonic() - t0
        print(f"{board}: netlist {t_synth:.0f} s, Verilator build {out['build_s']:.0f} s", flush=True)
        for name, model, x, batch in _cases(cfg, seqs):
            t1 = time.monotonic()
            with Device(url, timeout=300.0) as dev:
                runner = NPURunner(dev, batch=batch)
                compiled = runner.load(model)
                r = runner.infer(x)
            trace = golden.forward(model, x, intermediates=True)
            logits = trace[-2][1].reshape(len(x), -1)
            n_runs = -(-len(x) // batch)
            ok_out = bool(np.array_equal(r.logits, logits) and np.array_equal(r.classes, trace[-1][1]))
            want = n_runs * program_cycles(compiled)
            row = {
                "case": name,
                "samples": len(x),
                "batch": batch,
                "bit_exact": ok_out,
                "mismatches": int((r.logits != logits).sum()),
                "cycles": int(r.cycles),
                "model_cycles": int(want),
                "seconds": time.monotonic() - t1,
            }
            out["runs"].append(row)
            print(
                f"  {name}: {'bit-exact' if ok_out else 'MISMATCH'}, cycles {r.cycles} (model {want}), "
                f"{row['seconds']:.0f} s",
                flush=True,
            )
    return out


def _cells_line(stat: str) -> str:
    cells = []
    for line in stat.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit() and parts[1][:1].isupper():
            cells.append(f"{parts[1]} {parts[0]}")
    return ", ".join(cells)


def write_md(results: list[dict], path: Path) -> None:
    lines = [
        "# Gate-level simulation: the synthesized NPU through the driver",
        "",
        "Generated by `bench/gate_level.py`. The NPU's byte-link top, elaborated for the board's platform, "
        "synthesized by YoWASP Yosys 0.70 with the board build's script (`synth_ice40 -dsp` on the iCEBreaker, "
        "`synth_ecp5` on the ULX3S; abc9 LUT mapping unless noted), written with `write_verilog -noattr` and "
        "simulated under Verilator with Yosys' cell models (on ECP5 our DP16KD and MULT18X18D models, sim/cells: "
        "Yosys 0.70's `ecp5/cells_sim.v` has no DP16KD behaviour and only a MULT18X18D blackbox). Each model "
        "goes through `sw_driver.NPURunner`; outputs compared with `quant.golden`, cycles with the exact cycle "
        "model (which the RTL simulations match). Times on the shared 2-core machine (other jobs running), "
        "one core for this bench.",
        "",
    ]
    for res in results:
        cfg = res["cfg"]
        warm = "cached netlist" if res["warm"][0] else "cold synthesis"
        warm += ", cached Verilator build" if res["warm"][1] else ", cold Verilator build"
        lines += [
            f"## {res['board']}: {cfg.rows}x{cfg.cols}, act {cfg.act_depth}, weight {cfg.weight_depth}, "
            f"{cfg.clk_hz / 1e6:.2f} MHz, mapper {res['mapper']}",
            "",
            f"Cells: {_cells_line(res['cells'])}.",
            "",
        ]
        lines += [
            f"Netlist {res['synth_s']:.0f} s, Verilator build {res['build_s']:.0f} s ({warm}).",
            "",
            "| case | samples | batch | outputs | cycles | cycle model | run s |",
            "|---|---:|---:|---|---:|---:|---:|",
        ]
        for r in res["runs"]:
            verdict = "bit-exact" if r["bit_exact"] else f"**MISMATCH** ({r['mismatches']} logits)"
            cyc = f"{r['cycles']}" if r["cycles"] == r["model_cycles"] else f"**{r['cycles']}**"
            lines.append(
                f"| {r['case']} | {r['samples']} | {r['batch']} | {verdict} | {cyc} | {r['model_cycles']} | "
                f"{r['seconds']:.0f} |"
            )
        total = res["synth_s"] + res["build_s"] + sum(r["seconds"] for r in res["runs"])
        lines += ["", f"Total {total:.0f} s.", ""]
    path.write_text("\n".join(lines))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--boards", nargs="+", default=list(BOARDS), choices=list(BOARDS))
    ap.add_argument("--mapper", nargs="+", default=["abc9"], choices=["abc9", "abc"], help="LUT mapper(s)")
    ap.add_argument("--seqs", type=int, default=4, help="seq-digits sequences per board (default 4)")
    ap.add_argument("-o", "--output", default=str(Path(__file__).parent / "results" / "gate_level.md"))
    args = ap.parse_args(argv)
    results = []
    for b in args.boards:
        for mapper in args.mapper:
            results.append(run_board(b, mapper, args.seqs))
    write_md(results, Path(args.output))
    print(f"wrote {args.output}")
    runs = [(r["board"], x) for r in results for x in r["runs"]]
    bad = [(b, x["case"]) for b, x in runs if not x["bit_exact"] or x["cycles"] != x["model_cycles"]]
    if bad:
        print(f"GATE-LEVEL MISMATCH: {bad}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
