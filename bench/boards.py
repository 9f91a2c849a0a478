"""Whole-NPU board builds: per board the NPU configs that fit (and the default one that does not),
Fmax, peak MAC/s and the digits MLP latency, against the estimator. Writes ``bench/results/boards.md``
(and the raw figures to ``bench/results/boards.json``, which it keeps between runs).

Run::

    PYTHONPATH=. python bench/boards.py              # every run (about 30 min on 2 cores)
    PYTHONPATH=. python bench/boards.py --only ulx3s-85f-npu8   # one run; the table keeps the others
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

#: name -> (board, design, config fields, clock MHz). The UP5K's 30 EBRs do not hold the default
#: memories (feature 1024 x 8 lanes alone takes 16), so its runs shrink them.
SMALL_MEM = {"act_depth": 256, "weight_depth": 256, "chan_depth": 64, "m_block": 32, "prog_depth": 128}
RUNS: dict[str, tuple[str, str, dict, float]] = {
    "icebreaker-npu8": ("icebreaker", "npu", {}, 40.0),
    "icebreaker-npu8-smallmem": ("icebreaker", "npu", dict(SMALL_MEM), 40.0),
    "icebreaker-npu4-smallmem": ("icebreaker", "npu", dict(SMALL_MEM, rows=4, cols=4), 40.0),
    "icebreaker-npu2-smallmem": ("icebreaker", "npu", dict(SMALL_MEM, rows=2, cols=2), 40.0),
    "ulx3s-85f-npu8": ("ulx3s-85f", "npu", {}, 100.0),
}


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


def measure(name: str) -> dict:
    """One run: a real board build when the estimator says it fits, else a harness synthesis that
    reports what nextpnr needed."""
    from hw.build import BuildError, TimingError, build
    from hw.estimate import estimate

    board, design, fields, mhz = RUNS[name]
    cfg = NPUConfig(**fields)
    est = estimate(cfg, board, design=design)
    out = {"board": board, "design": design, "config": cfg.to_dict(), "clock_mhz": mhz}
    out["estimate"] = est.as_resources() | {"blocks": est.blocks}
    t0 = time.monotonic()
    built = False
    if est.fits:
        try:
            rep = build(cfg, board, mhz, ROOT / "build" / "boards" / name, design=design)
            built = True
        except TimingError as e:
            rep, built = e.report, True
        except BuildError as e:  # the estimate said it fits, nextpnr disagreed: measure it below
            print(f"build failed ({e}); measuring in the harness", flush=True)
    if built:
        out.update(fits=True, resources=rep.resources, fmax_mhz=rep.fmax, timing_met=rep.timing_met)
    else:
        from hw.build import DESIGNS
        from hw.synth import synthesize

        factory = DESIGNS[design]()
        try:
            rep = synthesize(
                lambda: factory(cfg.replace(clk_hz=int(mhz * 1e6))),
                board,
                freq_mhz=mhz,
                build_dir=ROOT / "build" / "boards" / name,
            )
        except BuildError as e:  # pragma: no cover - reported as is
            out.update(fits=False, error=str(e))
            return out
        keys = {"logic": rep.logic_key, "bram": "ICESTORM_RAM" if board == "icebreaker" else "DP16KD"}
        out.update(
            fits=rep.fits,
            resources={k: rep.cells.get(v, (0, 0)) for k, v in keys.items()},
            fmax_mhz=rep.fmax,
            timing_met=False,
            error=rep.error,
        )
    out["seconds"] = round(time.monotonic() - t0)
    return out


NOTES = """
## What limits the whole NPU today (measured on this branch)

* **iCEBreaker (UP5K, 5280 LC, 30 EBR): no array size fits yet.** The parts that do not scale with
  the array already exceed the device: the engine's control and requantizer (about 1.9k LC; its
  33x16 multiplier is LUTs), the sequencer (about 2.5k LC: its im2col/pool address arithmetic has
  multipliers) and the host link (about 1.4k LC). 2x2 with small memories needs 7.2k LC; 8x8 with
  the default memories 13.0k LC and 43 EBR (the feature memory alone takes 16, the accumulator 11).
* **ULX3S-85F: 8x8 at 40.8 MHz** (41.7 MHz in the pin harness). The critical path is in hw/sequencer.py: `i_tap` -> the IM2COL3
  address `src + ct_off + sy * w + sx` (a MULT18X18D and two carry chains, combinational) ->
  NPUCore's host/sequencer address mux -> the engine's feature-memory address (about 24 ns). A
  registered `mem_addr` in the sequencer would remove it. 16x16 does not elaborate: the sequencer's
  memory port and the engine's host port are 64 bits wide (8 int8 lanes), so `rows` > 8 indexes past
  them (hw/sequencer.py POOL_ACC: "Cannot create a 0-width signed value").
* **The estimator** (`shiftnpu estimate`, hw/estimate.py) is calibrated on three of these runs
  (iCE40 8x8 and 4x4, ECP5 8x8: the engine's constant and per-accumulator-bit cost, the
  sequencer, the link); the iCE40 2x2 run checks it independently (6927 estimated, 7123 and
  7203 measured in the harness and on the board top: -3 %). Block RAM is counted by shape and
  matches every run.
* **The array alone** (bench/results/area.md, `shiftnpu build --design array`): 8x8 at 60 MHz on the
  iCEBreaker (4367 LC), 16x16 at 124.8 MHz on the ULX3S (11318 LUT4): the array is not what
  limits either board.
* **The host link** (hw/hostif.py + hw/uart.py, alone behind its UART, pin harness): 1614 LC
  including about 200 LC of harness, Fmax 47.9 MHz on the UP5K (before this change: 3497 LC,
  24.2 MHz); 1376 LUT4 and 113.1 MHz on the ECP5-85F; error counters and USER registers in block RAM, one CRC for both directions, the
  request checks registered stage by stage, a one-hot FSM.
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
        "time at the clock.",
        "",
        "| run | board | design | array | memories | logic used (est.) | BRAM (est.) | clock MHz | Fmax MHz | "
        "timing | peak MMAC/s | digits MLP cycles (us) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    from hw.estimate import estimate

    for name, r in results.items():
        cfg = NPUConfig.from_dict(r["config"])
        mem = "default" if cfg.act_depth == NPUConfig.act_depth else f"act {cfg.act_depth}, wgt {cfg.weight_depth}"
        res = r.get("resources", {})
        lg, br = res.get("logic", (0, 0)), res.get("bram", (0, 0))
        est = estimate(cfg, r["board"], design=r["design"])  # today's model, not the one at build time
        fits = r.get("fits", False)
        timing = ("met" if r.get("timing_met") else "NOT met") if fits else "does not fit"
        fmax = r.get("fmax_mhz", 0.0)
        clock = r["clock_mhz"] if r.get("timing_met") else min(fmax, r["clock_mhz"])
        cyc = digits_mlp_cycles(cfg) if r["design"] == "npu" else None
        lat = f"{cyc} ({cyc / clock:.1f})" if cyc and fits and clock else (str(cyc) if cyc else "-")
        lines.append(
            f"| {name} | {r['board']} | {r['design']} | {cfg.rows}x{cfg.cols} | {mem} | "
            f"{lg[0]}/{lg[1]} ({est.logic}) | {br[0]} ({est.bram}) | {r['clock_mhz']:g} | "
            f"{f'{fmax:.1f}' if fmax else '-'} | {timing} | {f'{cfg.pe_count * clock:.0f}' if fits else '-'} | {lat} |"
        )
    lines.append(NOTES)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=None, help=f"runs to build: {', '.join(RUNS)}")
    ap.add_argument("--table", action="store_true", help="no builds: rewrite the table from boards.json")
    args = ap.parse_args(argv)
    store = ROOT / "bench" / "results" / "boards.json"
    results = json.loads(store.read_text()) if store.exists() else {}
    if not args.table:
        for name in args.only or list(RUNS):
            if name not in RUNS:
                raise SystemExit(f"unknown run {name!r}; choose from {', '.join(RUNS)}")
            print(f"== {name}", flush=True)
            results[name] = measure(name)
            print(json.dumps(results[name]), flush=True)
            store.write_text(json.dumps(results, indent=1, sort_keys=True))
    md = table({k: results[k] for k in RUNS if k in results})
    (ROOT / "bench" / "results" / "boards.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
