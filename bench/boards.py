"""Board builds of the default config: iCEBreaker and ULX3S-85F at their default clocks, and the
iCEBreaker with ``--freq auto``, against the estimator. Writes ``bench/results/boards.md``.

Run::

    PYTHONPATH=. python bench/boards.py            # about 10-15 min on 2 cores
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from quant.config import NPUConfig  # noqa: E402

RUNS = [("icebreaker", None), ("ulx3s-85f", None), ("icebreaker", "auto")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-auto", action="store_true", help="default clocks only")
    args = ap.parse_args(argv)
    from hw.build import BuildError, TimingError, build
    from hw.estimate import estimate

    cfg = NPUConfig()
    lines = [
        "# Board builds",
        "",
        "Reproduce: `PYTHONPATH=. python bench/boards.py` (or one build: "
        "`shiftnpu build --board icebreaker [--freq auto]`).",
        "",
        f"Design: the default config's {cfg.rows}x{cfg.cols} array of {cfg.weight_bits}-bit shift PEs behind the "
        "board's UART pins (pin harness: a shift register fed from RX, outputs XOR-reduced to TX), a PLL from "
        "the board oscillator, a heartbeat LED. *est.* is `shiftnpu estimate` (no synthesis) for the same "
        "config; Fmax is nextpnr's post-route figure.",
        "",
        "| board | freq | clock MHz (PLL) | Fmax MHz | timing | logic (est.) | FFs (est.) | BRAM | DSP | build s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for board, freq in RUNS:
        if freq == "auto" and args.no_auto:
            continue
        bdir = ROOT / "build" / "boards" / f"{board}_{freq or 'default'}"
        try:
            rep = build(cfg, board, freq, bdir)
        except TimingError as e:
            rep = e.report
        except BuildError as e:
            lines.append(f"| {board} | {freq or 'default'} | - | - | {e} | | | | | |")
            continue
        est = estimate(cfg, board)
        r = rep.resources
        secs = sum(1 for _ in rep.attempts)
        lines.append(
            f"| {board} | {freq or 'default'} | {rep.clock_mhz:.2f} | {rep.fmax:.1f} | "
            f"{'met' if rep.timing_met else 'NOT met'} | {r['logic'][0]}/{r['logic'][1]} ({est.logic}) | "
            f"{r['ffs'][0]} ({est.ffs}) | {r['bram'][0]} | {r['dsp'][0]} | {rep.seconds:.0f}"
            + (f" ({secs} builds)" if secs > 1 else "")
            + " |"
        )
        print(rep.text(), flush=True)
    lines.append("")
    out = ROOT / "bench" / "results" / "boards.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
