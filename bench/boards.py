"""Whole-NPU board builds: per board the NPU configs that fit (and those that do not), Fmax, peak
MAC/s and the digits MLP latency, against the estimator. Writes ``bench/results/boards.md`` (and the
raw figures to ``bench/results/boards.json``, which it keeps between runs). The same builds
calibrate the estimator's whole-NPU model (hw/estimate.py ``NPU_MODEL``).

Run::

    PYTHONPATH=. python bench/boards.py --calibrate  # rebuild every run, refit and write NPU_MODEL
    PYTHONPATH=. python bench/boards.py              # every run, no refit (about 30 min on 2 cores)
    PYTHONPATH=. python bench/boards.py --only ulx3s-85f-npu8   # one run; the table keeps the others
    PYTHONPATH=. python bench/boards.py --fit        # refit NPU_MODEL from boards.json, no build
    PYTHONPATH=. python bench/boards.py --table      # only rewrite the table from boards.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from quant.config import NPUConfig  # noqa: E402

#: name -> (board, design, config fields over the board's default config, clock MHz). The UP5K's
#: default config has small memories (its 30 EBRs do not hold NPUConfig's: the feature memory
#: alone would take 16); the ULX3S' default is 16x16.
RUNS: dict[str, tuple[str, str, dict, float]] = {
    "icebreaker-npu8": ("icebreaker", "npu", {"rows": 8, "cols": 8, "chan_depth": 64, "weight_depth": 1024}, 40.0),
    "icebreaker-npu4": ("icebreaker", "npu", {"rows": 4, "cols": 4, "chan_depth": 64, "weight_depth": 1024}, 40.0),
    "ulx3s-85f-npu8": ("ulx3s-85f", "npu", {"rows": 8, "cols": 8}, 100.0),
    "ulx3s-85f-npu16": ("ulx3s-85f", "npu", {}, 100.0),
    "ulx3s-85f-npu4": ("ulx3s-85f", "npu", {"rows": 4, "cols": 4}, 100.0),
    # the iCEBreaker's build for the hidden-32 seq-digits LSTM (issue #5): memories for its weights and cells
    "icebreaker-npu4-lstm": (
        "icebreaker",
        "npu",
        {"rows": 4, "cols": 4, "chan_depth": 256, "weight_depth": 2048},
        40.0,
    ),
}


def run_config(name: str) -> NPUConfig:
    from hw.boards import get_board

    board, _, fields, _ = RUNS[name]
    return get_board(board).default_config(**fields)


def critical_path(tim: Path) -> list[str]:
    """The first clock's critical path in a nextpnr log: where it starts and ends, its delay, and the
    lines of our source it goes through (nextpnr's "Defined in"), in order."""
    import re

    if not tim.exists():
        return []
    lines = tim.read_text(errors="replace").splitlines()
    try:
        a = next(i for i, ln in enumerate(lines) if "Critical path report for clock" in ln)
    except StopIteration:
        return []
    block = []
    for ln in lines[a + 1 :]:
        if "Critical path report" in ln:
            break
        block.append(ln.split("Info:", 1)[-1].strip())
    sources = [ln.split("Source ", 1)[1] for ln in block if "Source " in ln]
    sinks = [ln.split("Sink ", 1)[1] for ln in block if ln.startswith("Sink ")]
    total = next((ln for ln in block if "ns logic" in ln), "")
    ours = []
    for ln in block:
        m = re.search(r"((?:hw|quant)/\w+\.py:\d+)", ln)
        if m and m.group(1) not in ours:
            ours.append(m.group(1))
    out = [f"from {sources[0]}" if sources else "", f"to   {sinks[-1]}" if sinks else "", total]
    return [ln for ln in out if ln] + ([f"via  {', '.join(ours)}"] if ours else [])


def digits_mlp_cycles(cfg: NPUConfig) -> int:
    """Engine cycles of the digits MLP (examples/digits_mlp_3bit.npu's layer shapes), batch 1, on
    ``cfg``'s array: the sum of its GEMMs by the exact cycle model (quant/perf.py)."""
    from quant.model import DenseLayer, NPUModel
    from quant.perf import gemm_cycles

    model = NPUModel.load(ROOT / "examples" / "digits_mlp_3bit.npu")
    total = 0
    for layer in model.layers:
        if isinstance(layer, DenseLayer):
            k, n = layer.codes.shape
            total += gemm_cycles(cfg, 1, k, n).cycles
    return total


def seq_lstm_cycles(cfg: NPUConfig) -> int | None:
    """Device cycles of one sequence of the seq-digits LSTM (examples/seq_digits_lstm_3bit.npu: 8 steps,
    hidden 32, dense 32 -> 10, argmax) at batch 1 on ``cfg`` by the exact cycle model
    (quant/lstm_perf.py); ``None`` when the model does not fit ``cfg``'s memories or array."""
    from quant.lstm_perf import program_cycles
    from quant.model import NPUModel
    from quant.npu_compile import compile_model
    from quant.retarget import retarget

    try:
        moved, _ = retarget(NPUModel.load(ROOT / "examples" / "seq_digits_lstm_3bit.npu"), cfg)
    except ValueError:
        return None
    return program_cycles(compile_model(moved, 1, cfg, prog_depth=cfg.prog_depth))


def measure(name: str) -> dict:
    """One run: a real board build when the estimator says it fits, else a harness synthesis that
    reports what nextpnr needed."""
    from hw.build import BuildError, TimingError, build
    from hw.estimate import estimate
    from quant.gate_map import lstm_supported

    board, design, fields, mhz = RUNS[name]
    cfg = run_config(name)
    est = estimate(cfg, board, design=design)
    out = {"board": board, "design": design, "config": cfg.to_dict(), "clock_mhz": mhz}
    out["lstm"] = design == "npu" and lstm_supported(cfg)  # NPU(rnn=True) has the LSTM path where supported
    out["estimate"] = est.as_resources() | {"blocks": est.blocks}
    t0 = time.monotonic()
    built = False
    if est.fits:
        try:
            rep = build(cfg, board, mhz, ROOT / "build" / "boards" / name, design=design, progress=False)
            built = True
        except TimingError as e:
            rep, built = e.report, True
        except BuildError as e:  # the estimate said it fits, nextpnr disagreed: measure it below
            print(f"build failed ({e}); measuring in the harness", flush=True)
    if built:
        out.update(fits=True, resources=rep.resources, fmax_mhz=rep.fmax, timing_met=rep.timing_met)
        out.update(synth_opts=rep.synth_opts, critical_path=critical_path(Path(rep.build_dir) / "top.tim"))
    else:
        from hw.boards import get_board
        from hw.build import DESIGNS, synth_options
        from hw.synth import synthesize

        factory = DESIGNS[design]()
        try:
            rep = synthesize(
                lambda: factory(cfg.replace(clk_hz=int(mhz * 1e6))),
                board,
                freq_mhz=mhz,
                build_dir=ROOT / "build" / "boards" / name,
                synth_opts=synth_options(get_board(board)) or None,
            )
        except BuildError as e:  # pragma: no cover - reported as is
            out.update(fits=False, error=str(e))
            return out
        keys = {"logic": rep.logic_key, "bram": "ICESTORM_RAM" if board == "icebreaker" else "DP16KD"}
        if board == "icebreaker":
            keys.update(spram="ICESTORM_SPRAM", dsp="ICESTORM_DSP")
        else:
            keys.update(dsp="MULT18X18D")
        resources = {k: rep.cells.get(v, (0, 0)) for k, v in keys.items()}
        rpt = ROOT / "build" / "boards" / name / "top.rpt"
        if board == "icebreaker" and rpt.exists():  # iCE40 packs FFs into LCs: count Yosys' (harness included)
            from hw.build import _yosys_ffs

            resources["ffs"] = (_yosys_ffs(rpt.read_text()), 5280)
        elif board != "icebreaker":
            resources["ffs"] = rep.cells.get("TRELLIS_FF", (0, 0))
        out["critical_path"] = critical_path(ROOT / "build" / "boards" / name / "top.tim")
        out.update(
            fits=rep.fits,
            resources=resources,
            fmax_mhz=rep.fmax,
            timing_met=False,
            error=rep.error,
        )
    out["seconds"] = round(time.monotonic() - t0)
    return out


NOTES = """
## Notes

* **Estimator**: `shiftnpu estimate` (hw/estimate.py) models the whole NPU block by block: the array
  (its own model, fitted on bench/results/area.json), a fixed part for the engine's control and
  requantizer, the sequencer, the host link and the LSTM gate unit (split by NPU_BLOCK_SHARES), a cost
  per accumulator bit of a row (`cols * acc_width`) in the engine, and every memory mapped as the RTL
  maps it (EBR/DP16KD by shape, the UP5K's SPRAMs for the engine's weights and biases, LUT RAM for
  ECP5 memories of at most 64 words). `python bench/boards.py --calibrate` rebuilds these runs and
  refits it (`--fit` refits from boards.json without building).
* **iCE40 runs** that the estimator says cannot fit are measured in hw.synth's pin harness (what
  nextpnr needed before it gave up placing), with Yosys `-dsp` like the board builds.
* **Yosys 0.70's abc9 crashes** on the 16x16 whole NPU (an assertion in ABC_OPS_REINTEGRATE, also
  with -noflatten); `shiftnpu build` then maps the LUTs with `abc -lut 4:7` (the old -noabc9 flow),
  noted in the report's `synth_opts`.
"""


def table(results: dict) -> str:
    lines = [
        "# Board builds of the whole NPU",
        "",
        "Reproduce: `PYTHONPATH=. python bench/boards.py` (one build: `shiftnpu build --board icebreaker "
        "[--freq auto] [--model m.npu]`; the estimate alone: `shiftnpu estimate --board ...`).",
        "",
        "Design: the whole NPU of hw/npu.py (UART + host interface + GEMM engine + sequencer + program "
        "memory) behind the board's USB-serial pins, a PLL and status LEDs (`shiftnpu build`); *array* rows "
        "are the systolic array alone in a pin harness. *est.* is `shiftnpu estimate` for the same config. "
        "Peak MAC/s = rows x cols x clock (the clock that closes, capped at Fmax). Digits MLP: engine cycles of the 64-64-10 MLP of "
        "examples/digits_mlp_3bit.npu at batch 1 by the exact cycle model (quant/perf.py), and that "
        "time at the clock. Seq-digits LSTM: device cycles of one sequence (8 steps, hidden 32, then the "
        "dense head) of examples/seq_digits_lstm_3bit.npu moved to the run's config (`shiftnpu retarget`), batch 1, "
        "by quant/lstm_perf.py; '-' where the build has no LSTM path or its memories do not hold the model.",
        "",
        "| run | board | design | array | memories | logic used (est.) | BRAM (est.) | clock MHz | Fmax MHz | "
        "timing | peak MMAC/s | digits MLP cycles (us) | seq-digits LSTM cycles (us) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    from hw.estimate import estimate

    for name, r in results.items():
        cfg = NPUConfig.from_dict(r["config"])
        mems = {"act_depth": "act", "weight_depth": "wgt", "chan_depth": "chan", "m_block": "m_block"}
        mem = ", ".join(f"{v} {getattr(cfg, k)}" for k, v in mems.items() if getattr(cfg, k) != getattr(NPUConfig, k))
        mem = mem or "default"
        res = r.get("resources", {})
        lg, br = res.get("logic", (0, 0)), res.get("bram", (0, 0))
        est = estimate(
            cfg, r["board"], design=r["design"], lstm=r.get("lstm")
        )  # today's model, not the one at build time
        fits = r.get("fits", False)
        timing = ("met" if r.get("timing_met") else "NOT met") if fits else "does not fit"
        fmax = r.get("fmax_mhz", 0.0)
        clock = r["clock_mhz"] if r.get("timing_met") else min(fmax, r["clock_mhz"])
        cyc = digits_mlp_cycles(cfg) if r["design"] == "npu" else None
        lat = f"{cyc} ({cyc / clock:.1f})" if cyc and fits and clock else (str(cyc) if cyc else "-")
        lcyc = seq_lstm_cycles(cfg) if r["design"] == "npu" and r.get("lstm") else None
        llat = f"{lcyc} ({lcyc / clock:.0f})" if lcyc and fits and clock else (str(lcyc) if lcyc else "-")
        lines.append(
            f"| {name} | {r['board']} | {r['design']} | {cfg.rows}x{cfg.cols} | {mem} | "
            f"{lg[0]}/{lg[1]} ({est.logic}) | {br[0]} ({est.bram}) | {r['clock_mhz']:g} | "
            f"{f'{fmax:.1f}' if fmax else '-'} | {timing} | {f'{cfg.pe_count * clock:.0f}' if fits else '-'} | {lat} | {llat} |"
        )
    lines.append(NOTES)
    for k, r in results.items():
        extra = [r[f] for f in ("note",) if r.get(f)]
        if r.get("synth_opts"):
            extra.append(f"Yosys synth options: `{r['synth_opts']}`")
        if extra:
            lines.append(f"* **{k}**: " + "; ".join(extra))
    lines.append("")
    paths = [(k, r["critical_path"]) for k, r in results.items() if r.get("critical_path")]
    if paths:
        lines.append("## Critical paths (nextpnr, first path of each placed build)\n")
        for k, p in paths:
            lines.append(f"**{k}**\n")
            lines += [f"    {ln}" for ln in p]
            lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=None, help=f"runs to build: {', '.join(RUNS)}")
    ap.add_argument("--table", action="store_true", help="no builds: rewrite the table from boards.json")
    ap.add_argument(
        "--calibrate",
        action="store_true",
        help="rebuild every run (or those of --only), then refit the estimator's NPU model and write it "
        "into hw/estimate.py",
    )
    ap.add_argument("--fit", action="store_true", help="no builds: refit the estimator's NPU model from boards.json")
    args = ap.parse_args(argv)
    store = ROOT / "bench" / "results" / "boards.json"
    results = json.loads(store.read_text()) if store.exists() else {}
    results = {k: v for k, v in results.items() if k in RUNS}  # runs no longer made are dropped
    if not (args.table or args.fit):
        for name in args.only or list(RUNS):
            if name not in RUNS:
                raise SystemExit(f"unknown run {name!r}; choose from {', '.join(RUNS)}")
            print(f"== {name}", flush=True)
            results[name] = measure(name)
            print(json.dumps(results[name]), flush=True)
            store.write_text(json.dumps(results, indent=1, sort_keys=True))
    store.write_text(json.dumps(results, indent=1, sort_keys=True))
    if args.calibrate or args.fit:
        from hw.estimate import estimate, fit_npu, write_npu_model

        model = fit_npu(store)
        write_npu_model(model)
        print("NPU_MODEL written to hw/estimate.py:", json.dumps(model), flush=True)
        for k, r in results.items():
            if r.get("resources", {}).get("logic"):
                est = estimate(NPUConfig.from_dict(r["config"]), r["board"], lstm=r.get("lstm")).logic
                used = r["resources"]["logic"][0]
                print(f"  {k:<20} estimate {est:>6}  measured {used:>6}  ({100 * (est - used) / used:+.1f} %)")
    md = table({k: results[k] for k in RUNS if k in results})
    (ROOT / "bench" / "results" / "boards.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
