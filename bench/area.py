"""Area and Fmax of the shift PE against the int8-MAC PE, per PE and as whole arrays.

Two measurements:

* **One PE alone**, through Yosys only (seconds each, no pin harness): ``synth_ice40``,
  ``synth_ecp5`` (with and without DSPs) and a technology-independent ``synth; abc -g cmos;
  stat -tech cmos`` transistor estimate. The PE is the bottom row of an 8-row column (8 products),
  built at its natural partial-sum width and at common widths, so every flavour is compared with
  the same adder.
* **Whole arrays** (``SystolicArray`` inside :class:`hw.synth.PinHarness`), through Yosys and
  nextpnr on iCE40UP5K (iCEBreaker) and ECP5-85F (ULX3S): logic, FFs, DSPs, block RAM, Fmax.
  A design that does not fit reports nextpnr's utilisation.
* **The GEMM engine** (``GemmEngine``: array, memories, requantizer, control) and its
  requantizer alone on the iCE40UP5K at 40 MHz with ``synth_ice40 -dsp``.

Results are cached in ``bench/results/area.json`` (delete an entry, or pass ``--force``, to
measure again) and written to ``bench/results/area.md`` and ``bench/results/area.png``.

Run::

    PYTHONPATH=. python bench/area.py            # everything (about 30-40 min on 2 cores)
    PYTHONPATH=. python bench/area.py --pe-only  # the per-PE table only (about 3 min)
    PYTHONPATH=. python bench/area.py --engine-only  # the engine builds only (about 5 min)
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from quant.config import NPUConfig  # noqa: E402

RESULTS = ROOT / "bench" / "results"
CACHE = RESULTS / "area.json"

#: Weight widths compared: DenseShift 2/3/4-bit against the int8 baseline.
PE_BITS = (2, 3, 4, 8)
#: The PE measured alone sits at the bottom of an 8-row column.
PE_ROW = 7
#: Common partial-sum widths (besides each PE's own): the int8 PE's width at the bottom of an
#: 8-row column, and the int8 accumulator width for max_k = 1024.
COMMON_WIDTHS = (NPUConfig(weight_bits=8).partial_sum_width(PE_ROW + 1), NPUConfig(weight_bits=8).acc_width)
#: Transistors per flip-flop added to Yosys' estimate, which counts combinational cells only
#: (static master-slave DFF 16-20 T plus the enable mux). An assumption, stated in the report.
T_PER_FF = 24

#: Whole-array builds: (board, rows=cols, weight_bits, target MHz, extra synth options).
ARRAY_RUNS = [
    ("icebreaker", 4, 3, 50, ""),
    ("icebreaker", 4, 8, 50, ""),
    ("icebreaker", 8, 3, 50, ""),
    ("icebreaker", 8, 8, 50, ""),
    ("ulx3s-85f", 4, 3, 100, ""),
    ("ulx3s-85f", 4, 8, 100, ""),
    ("ulx3s-85f", 8, 3, 100, ""),
    ("ulx3s-85f", 8, 8, 100, ""),
    ("ulx3s-85f", 16, 3, 100, ""),
    ("ulx3s-85f", 16, 8, 100, ""),
    ("ulx3s-85f", 8, 8, 100, "-nodsp"),
    # (16x16 int8 with -nodsp would need about 80k of the 84k LUT4s: left out, placement takes too long)
]


# -- one PE through Yosys ------------------------------------------------------------------------

_STAT_RE = re.compile(r"^\s+(\d+)\s+(\$?[A-Za-z_][\w$]*)\s*$", re.M)
_TRANS_RE = re.compile(r"Estimated number of transistors:\s+(\d+)")

PE_FLOWS = {
    "ice40": "synth_ice40 -top pe",
    "ice40_dsp": "synth_ice40 -dsp -top pe",
    "ecp5": "synth_ecp5 -top pe",
    "ecp5_nodsp": "synth_ecp5 -nodsp -top pe",
    "cmos": "synth -top pe; abc -g cmos; opt_clean",
}


def _parse_stat(text: str) -> dict[str, int]:
    """Cell type -> count from one Yosys ``stat`` block."""
    cells: dict[str, int] = {}
    for n, name in _STAT_RE.findall(text):
        if name in ("wires", "bits", "ports", "cells", "memories", "processes"):
            continue
        cells[name] = cells.get(name, 0) + int(n)
    m = _TRANS_RE.search(text)
    if m:
        cells["transistors"] = int(m.group(1))
    return cells


def synth_pe(weight_bits: int, psum_width: int | None) -> dict[str, dict[str, int]]:
    """Cells of one PE for every flow of :data:`PE_FLOWS`."""
    from amaranth.back import verilog

    from hw.pe import make_pe
    from hw.synth import yowasp_env

    pe = make_pe(NPUConfig(weight_bits=weight_bits), PE_ROW, psum_width=psum_width)
    yosys = yowasp_env()["YOSYS"]
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "pe.v"
        src.write_text(verilog.convert(pe, name="pe"))
        for flow, script in PE_FLOWS.items():
            if weight_bits != 8 and flow in ("ice40_dsp", "ecp5_nodsp"):
                continue  # no multiplier to map: same as the plain flow
            stat = "stat -tech cmos" if flow == "cmos" else "stat"
            # YoWASP's sandbox sees the working directory only: relative paths
            subprocess.run(
                [yosys, "-q", "-p", f"read_verilog {src.name}; {script}; tee -q -o {flow}.log {stat}"],
                check=True,
                capture_output=True,
                cwd=tmp,
            )
            out[flow] = _parse_stat((Path(tmp) / f"{flow}.log").read_text())
    for flow in ("ice40_dsp", "ecp5_nodsp"):
        out.setdefault(flow, out[flow.split("_")[0]])
    out["psum_width"] = {"bits": psum_width or NPUConfig(weight_bits=weight_bits).partial_sum_width(PE_ROW + 1)}
    return out


def ecp5_luts(c: dict[str, int]) -> int:
    """LUT4s of an ECP5 netlist: plain LUTs plus two per carry cell (CCU2C)."""
    return c.get("LUT4", 0) + 2 * c.get("CCU2C", 0)


def ffs(c: dict[str, int]) -> int:
    return sum(n for k, n in c.items() if "DFF" in k or k == "TRELLIS_FF")


def pe_row(r: dict) -> dict[str, float]:
    """The figures of one PE measurement that the tables show."""
    ice, iced, ecp, ecpn, cmos = (r[k] for k in ("ice40", "ice40_dsp", "ecp5", "ecp5_nodsp", "cmos"))
    return {
        "psum": r["psum_width"]["bits"],
        "ice_lut": ice.get("SB_LUT4", 0),
        "ice_carry": ice.get("SB_CARRY", 0),
        "ice_ff": ffs(ice),
        "ice_dsp_lut": iced.get("SB_LUT4", 0),
        "ice_dsp": iced.get("SB_MAC16", 0),
        "ecp_lut": ecp5_luts(ecp),
        "ecp_dsp": ecp.get("MULT18X18D", 0),
        "ecp_nodsp_lut": ecp5_luts(ecpn),
        "ecp_ff": ffs(ecp),
        "cmos_t": cmos.get("transistors", 0),
        "cmos_ff": ffs(cmos),
        "cmos_total": cmos.get("transistors", 0) + T_PER_FF * ffs(cmos),
    }


# -- whole arrays through nextpnr ----------------------------------------------------------------


def synth_array(board: str, n: int, weight_bits: int, mhz: float, synth_opts: str) -> dict:
    from hw.synth import synthesize
    from hw.systolic import SystolicArray

    cfg = NPUConfig(rows=n, cols=n, weight_bits=weight_bits)
    tag = f"{board}_{n}x{n}_w{weight_bits}{synth_opts.replace(' ', '')}"
    bdir = ROOT / "build" / "area" / tag
    rep = synthesize(lambda: SystolicArray(cfg), board, freq_mhz=mhz, build_dir=bdir, synth_opts=synth_opts)
    rpt = (bdir / "top.rpt").read_text()
    top = rpt[rpt.rfind("=== top ===") :]
    yosys_cells = _parse_stat(top.split("=== design hierarchy ===")[0])
    return {
        "board": board,
        "n": n,
        "weight_bits": weight_bits,
        "synth_opts": synth_opts,
        "target_mhz": mhz,
        "device": rep.device,
        "cells": {k: list(v) for k, v in rep.cells.items()},
        "fmax_mhz": rep.fmax if rep.fits else None,
        "logic": rep.logic,
        "logic_percent": rep.logic_percent,
        "fits": rep.fits,
        "error": rep.error,
        "ffs": ffs(yosys_cells),
        "seconds": rep.seconds,
    }


#: Engine builds: (block, board, target MHz, synth options, drain row buffer entries).
ENGINE_RUNS = [
    ("engine", "icebreaker", 40, "-dsp", 2),
    ("engine", "icebreaker", 40, "-dsp", 1),
    ("requant", "icebreaker", 40, "-dsp", 2),
]

#: The engine before this generator's area work (commit 8368ad6: activations passed PE to PE
#: with an output deskew, a 50-bit rounding adder and barrel shifter in LUTs, every memory in
#: EBR), measured the same way: GemmEngine(NPUConfig()) in the pin harness, iCEBreaker, 40 MHz.
ENGINE_BEFORE = {
    "engine": "9708 LC (184 %), 37/30 EBR: does not fit",
    "requant": "2311 LC, 20.4 MHz without -dsp; 960 LC + 2 DSP, 19.8 MHz with -dsp",
}


def synth_engine(block: str, board: str, mhz: float, synth_opts: str, drain_rows: int) -> dict:
    from hw.gemm import GemmEngine
    from hw.requant import Requantizer
    from hw.synth import synthesize

    cfg = NPUConfig()
    tag = f"{block}_{board}_d{drain_rows}{synth_opts.replace(' ', '')}"
    bdir = ROOT / "build" / "area" / tag
    if block == "engine":

        def factory():
            return GemmEngine(cfg, drain_rows)
    else:

        def factory():
            return Requantizer(cfg, tag_width=15)

    rep = synthesize(factory, board, freq_mhz=mhz, build_dir=bdir, synth_opts=synth_opts)
    return {
        "block": block,
        "board": board,
        "synth_opts": synth_opts,
        "drain_rows": drain_rows,
        "target_mhz": mhz,
        "device": rep.device,
        "cells": {k: list(v) for k, v in rep.cells.items()},
        "fmax_mhz": rep.fmax if rep.fits else None,
        "logic": rep.logic,
        "logic_percent": rep.logic_percent,
        "fits": rep.fits,
        "error": rep.error,
        "seconds": rep.seconds,
    }


def _engine_section(cache: dict) -> list[str]:
    runs = cache.get("engine", {})
    if not runs:
        return []
    out = [
        "## The GEMM engine on the iCE40UP5K",
        "",
        "`GemmEngine(NPUConfig())` (8x8, 3-bit weights, 1024-word feature and weight memories, 256 channels, "
        "two 128-row accumulator banks) and its requantizer alone, in the pin harness, iCEBreaker, 40 MHz target, "
        "`synth_ice40 -dsp`. The harness itself costs about 350 LCs here (a 216-bit input shift register and "
        "the registered outputs). Before: " + "; ".join(f"{k}: {v}" for k, v in ENGINE_BEFORE.items()) + ".",
        "",
        "| block | drain rows | LC | util. | EBR | SPRAM | DSP | Fmax MHz (target) | result |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for _k, e in sorted(runs.items()):
        c = e["cells"]

        def used(name, c=c):
            return f"{c[name][0]}/{c[name][1]}" if name in c else "0"

        res = "fits, timing " + ("met" if (e["fmax_mhz"] or 0) >= e["target_mhz"] else "**not met**")
        if not e["fits"]:
            res = f"**does not fit** ({e['logic_percent']:.0f}% of the logic)"
        fm = f"{e['fmax_mhz']:.1f} ({e['target_mhz']})" if e["fmax_mhz"] else f"- ({e['target_mhz']})"
        out.append(
            f"| {e['block']} | {e['drain_rows'] if e['block'] == 'engine' else '-'} | {e['logic']} | "
            f"{e['logic_percent']:.0f}% | {used('ICESTORM_RAM')} | {used('ICESTORM_SPRAM')} | "
            f"{used('ICESTORM_DSP')} | {fm} | {res} |"
        )
    out += ["", 'Where the logic goes, and what was changed: docs/architecture.md, "Area and timing status".', ""]
    return out


# -- report --------------------------------------------------------------------------------------


def _kind(wb: int) -> str:
    return "int8 MAC" if wb == 8 else f"shift {wb}-bit"


def _cell(a: dict, name: str) -> int:
    return a["cells"].get(name, [0, 0])[0]


def _dsp_note(a: dict) -> str:
    used, avail = a["cells"].get("MULT18X18D", [0, 0])
    return f", {used}/{avail} DSPs" if used > avail else ""


def _summary(cache: dict) -> list[str]:
    """The figures the acceptance criteria ask for, picked out of the tables below."""
    out = ["## Summary", ""]
    pe = cache.get("pe", {})
    w = COMMON_WIDTHS[0]
    if f"3_{w}" in pe and f"8_{w}" in pe:
        s, i = pe_row(pe[f"3_{w}"]), pe_row(pe[f"8_{w}"])
        out.append(
            f"- One PE, 3-bit shift vs int8 MAC at the same {w}-bit partial sum, LUT-only: iCE40 {s['ice_lut']} vs "
            f"{i['ice_lut']} LUT4s ({s['ice_lut'] / i['ice_lut']:.0%}), ECP5 {s['ecp_lut']} vs {i['ecp_nodsp_lut']} "
            f"LUT4s ({s['ecp_lut'] / i['ecp_nodsp_lut']:.0%}); transistors incl. FFs {s['cmos_total']} vs "
            f"{i['cmos_total']} ({s['cmos_total'] / i['cmos_total']:.0%}). With its DSP, the int8 PE needs only "
            f"{i['ecp_lut']} LUT4s on ECP5 (plus one MULT18X18D each)."
        )
    arr = cache.get("arrays", {})

    def get(board, n, wb, opts=""):
        return arr.get(f"{board}_{n}_{wb}_{opts}")

    for board, name in (("icebreaker", "iCE40UP5K"), ("ulx3s-85f", "ECP5-85F")):
        for n in (4, 8, 16):
            s, i = get(board, n, 3), get(board, n, 8)
            if s and i and s["logic"] and i["logic"]:
                extra = ""
                nd = get(board, n, 8, "-nodsp")
                if nd:
                    extra = f"; int8 without DSPs {nd['logic']} ({s['logic'] / nd['logic']:.0%})"
                out.append(
                    f"- {name} {n}x{n} array: shift {s['logic']} vs int8 {i['logic']} logic "
                    f"({s['logic'] / i['logic']:.0%}{', int8 does not fit' if not i['fits'] else ''}"
                    f"{', int8 uses ' + str(_cell(i, 'MULT18X18D')) + ' DSPs' if _cell(i, 'MULT18X18D') else ''})"
                    f"{extra}; Fmax shift {s['fmax_mhz'] or 0:.0f} MHz, int8 "
                    f"{(str(round(i['fmax_mhz'])) + ' MHz') if i['fits'] else '-'}."
                )
    out += [
        "",
        "Notes:",
        "",
        "- Same generator, same interface, same adder: the int8 PE differs only in its product term. Its "
        "multiplier, built from LUTs, is what costs 4-5x the logic; with a DSP per PE (ECP5's default Yosys "
        "flow) the int8 array needs fewer LUT4s than the shift array, but it runs at about half the clock "
        "(the MULT18X18D sits in the product stage) and a 16x16 array needs 256 of the 85F's 156 DSPs.",
        "- On iCE40 a logic cell holds one LUT and one FF, so a register with no LUT in front of it (the "
        "weight banks, the input skew) costs a cell of its own, while the product-term and partial-sum "
        "registers share the cells of the LUTs that compute them. The array broadcasts each activation along "
        "its row and registers the partial sum every second row, which leaves little besides the LUTs.",
        "- ECP5 LUT counts of single PEs are noisy: ABC maps the small shift multiplexers through PFUMX/L6MUX "
        "differently from one width to the next (the 2-bit PE: 80 LUT4s at 13 bits, 41 at 26).",
        "- After the array's dataflow change (activations broadcast along rows, partial sums registered every "
        "second row) the shift arrays were re-measured; the int8 arrays were not yet: `python bench/area.py` "
        "measures whatever the cache lacks.",
        "- The transistor figure is a relative measure: Yosys' `abc -g cmos` counts combinational gates only; "
        f"the flip-flops (most of a PE at these widths) are added at an assumed {T_PER_FF} transistors each.",
        "",
    ]
    return out


def write_markdown(cache: dict, command: str) -> str:
    lines = ["# Area and Fmax: shift PE vs int8-MAC PE", ""]
    lines += [f"Reproduce: `{command}` (results cached in `bench/results/area.json`).", ""]
    lines += _summary(cache)
    lines += _engine_section(cache)
    lines += [
        "## One PE (Yosys only, no harness)",
        "",
        f"A PE at the bottom of an 8-row column (row {PE_ROW}, partial sum of {PE_ROW + 1} products): two weight banks, "
        "the product-term register and the partial-sum adder. "
        "`psum` is the partial-sum width; *natural* is what the generator builds for that row, the other widths are "
        "forced with `make_pe(..., psum_width=W)` so both flavours have the same adder. iCE40: `synth_ice40` "
        "(no DSP; `-dsp` in its own column), ECP5: `synth_ecp5` LUT4 count with each CCU2C carry cell counted as "
        "two LUT4s (DSP flow and `-nodsp` flow). CMOS: `synth; abc -g cmos; stat -tech cmos` gives "
        f"combinational transistors; flip-flops are added at {T_PER_FF} transistors each (an assumption: Yosys "
        "does not estimate them).",
        "",
        "| PE | psum | iCE40 LUT4 | iCE40 carry | FF | iCE40 -dsp: LUT4 + SB_MAC16 | ECP5 LUT4 (DSP flow) + MULT18 "
        "| ECP5 LUT4 -nodsp | CMOS comb. T | CMOS T incl. FFs |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    pe = cache.get("pe", {})
    ratios = []
    for wname in ["natural"] + [str(w) for w in COMMON_WIDTHS]:
        int8 = pe.get(f"8_{wname}")
        for wb in PE_BITS:
            r = pe.get(f"{wb}_{wname}")
            if not r:
                continue
            f = pe_row(r)
            lines.append(
                f"| {_kind(wb)} | {f['psum']}{' (natural)' if wname == 'natural' else ''} | {f['ice_lut']} | "
                f"{f['ice_carry']} | {f['ice_ff']} | {f['ice_dsp_lut']} + {f['ice_dsp']} | {f['ecp_lut']} + "
                f"{f['ecp_dsp']} | {f['ecp_nodsp_lut']} | {f['cmos_t']} | {f['cmos_total']} |"
            )
            if int8 and wb != 8 and wname != "natural":
                g = pe_row(int8)
                ratios.append(
                    (
                        wb,
                        f["psum"],
                        f["ice_lut"] / g["ice_lut"],
                        f["ecp_lut"] / g["ecp_nodsp_lut"],
                        f["cmos_total"] / g["cmos_total"],
                    )
                )
    if ratios:
        lines += [
            "",
            "Shift PE logic as a fraction of the int8-MAC PE at the same partial-sum width (LUT-only int8 "
            "build, i.e. no DSP on either device):",
            "",
            "| shift PE | psum | iCE40 LUT4 | ECP5 LUT4 | CMOS transistors incl. FFs |",
            "|---|---|---|---|---|",
        ]
        for wb, w, a, b, c in ratios:
            lines.append(f"| {wb}-bit | {w} | {a:.0%} | {b:.0%} | {c:.0%} |")

    arrays = sorted(
        cache.get("arrays", {}).values(), key=lambda a: (a["board"], a["synth_opts"], a["n"], a["weight_bits"])
    )
    if arrays:
        lines += [
            "",
            "## Whole arrays (Yosys + nextpnr, inside the pin harness)",
            "",
            "`SystolicArray` with its skew/deskew registers, wrapped in `hw.synth.PinHarness` (a shift register "
            "feeds every input from one pin, every output is registered and XOR-reduced to an LED), so the "
            "figures include that harness. Logic = iCE40 logic cells (ICESTORM_LC) or ECP5 LUT4s "
            "(TRELLIS_COMB); FFs from the Yosys netlist. Fmax is nextpnr's post-route estimate for a build "
            "aimed at the target clock (`--timing-allow-fail`, seed 1). *Marginal per PE* is the logic difference "
            "to the next smaller array divided by the extra PEs (harness and skew overheads mostly cancel).",
            "",
            "| device | array | PE | synth | logic | util. | logic/PE | marginal/PE | FFs | DSP | BRAM | Fmax MHz "
            "(target) | timing |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        prev = {}
        for a in arrays:
            key = (a["board"], a["weight_bits"], a["synth_opts"])
            n2 = a["n"] * a["n"]
            marginal = ""
            if key in prev and a["logic"] and prev[key]["logic"]:
                p = prev[key]
                marginal = f"{(a['logic'] - p['logic']) / (n2 - p['n'] ** 2):.1f}"
            prev[key] = a
            ice = a["board"] == "icebreaker"
            dsp = _cell(a, "ICESTORM_DSP" if ice else "MULT18X18D")
            bram = _cell(a, "ICESTORM_RAM" if ice else "DP16KD")
            if a["fits"]:
                fmax = f"{a['fmax_mhz']:.1f} ({a['target_mhz']:.0f})"
                timing = "met" if a["fmax_mhz"] >= a["target_mhz"] else "**not met**"
            else:
                fmax, timing = "-", f"**does not fit** ({a['logic_percent']:.0f}% of the logic{_dsp_note(a)})"
            lines.append(
                f"| {a['device']} | {a['n']}x{a['n']} | {_kind(a['weight_bits'])} | {a['synth_opts'] or 'default'} | "
                f"{a['logic']} | {a['logic_percent']:.0f}% | {a['logic'] / n2:.1f} | {marginal} | {a['ffs']} | {dsp} | "
                f"{bram} | {fmax} | {timing} |"
            )
    lines.append("")
    return "\n".join(lines)


def plot(cache: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    series: dict[tuple, list] = {}
    for a in cache.get("arrays", {}).values():
        series.setdefault((a["board"], a["weight_bits"], a["synth_opts"]), []).append(a)
    for (board, wb, opts), pts in sorted(series.items()):
        pts.sort(key=lambda a: a["n"])
        label = f"{'iCE40UP5K' if board == 'icebreaker' else 'ECP5-85F'} {_kind(wb)}{' ' + opts if opts else ''}"
        style = "-" if wb != 8 else "--"
        marker = "o" if board == "icebreaker" else "s"
        x = [a["n"] * a["n"] for a in pts]
        line = ax1.plot(x, [a["logic"] for a in pts], style, marker=marker, label=label)[0]
        for a in pts:
            if not a["fits"]:
                ax1.annotate("does not fit", (a["n"] ** 2, a["logic"]), fontsize=7, color=line.get_color())
        fit = [a for a in pts if a["fits"]]
        ax2.plot([a["n"] ** 2 for a in fit], [a["fmax_mhz"] for a in fit], style, marker=marker, label=label)
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xticks([16, 64, 256], ["4x4", "8x8", "16x16"])
        ax.set_xlabel("array size")
        ax.grid(True, alpha=0.3)
    ax1.set_yscale("log")
    ax1.set_ylabel("logic (iCE40 LCs / ECP5 LUT4s)")
    ax1.axhline(5280, color="grey", lw=0.8, ls=":")
    ax1.text(16, 5500, "UP5K: 5280 LCs", fontsize=7, color="grey")
    ax2.set_ylabel("Fmax (MHz, nextpnr)")
    ax2.legend(fontsize=7)
    ax1.set_title("Logic")
    ax2.set_title("Fmax")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pe-only", action="store_true", help="measure single PEs only, no array builds")
    ap.add_argument("--force", action="store_true", help="measure again even when cached")
    ap.add_argument("--report-only", action="store_true", help="rewrite area.md and area.png from the cache")
    ap.add_argument("--engine-only", action="store_true", help="measure the GEMM engine builds only")
    args = ap.parse_args(argv)
    from tqdm import tqdm

    RESULTS.mkdir(parents=True, exist_ok=True)
    cache = json.loads(CACHE.read_text()) if CACHE.exists() and not args.force else {}
    cache.setdefault("pe", {})
    cache.setdefault("arrays", {})
    cache.setdefault("engine", {})

    def save():
        CACHE.write_text(json.dumps(cache, indent=1, sort_keys=True))

    if not args.report_only:
        for block, board, mhz, opts, d in tqdm(ENGINE_RUNS, desc="engine (Yosys + nextpnr)"):
            key = f"{block}_{board}_{mhz}_{opts}_{d}"
            if key not in cache["engine"]:
                cache["engine"][key] = e = synth_engine(block, board, mhz, opts, d)
                save()
                tqdm.write(f"{key}: logic {e['logic']} ({e['logic_percent']:.0f}%), fmax {e['fmax_mhz']}")
    if not args.report_only and not args.engine_only:
        jobs = [(wb, w) for w in [None, *COMMON_WIDTHS] for wb in PE_BITS]
        for wb, w in tqdm(jobs, desc="single PEs (Yosys)"):
            key = f"{wb}_{w or 'natural'}"
            if key not in cache["pe"]:
                cache["pe"][key] = synth_pe(wb, w)
                save()
        if not args.pe_only:
            for board, n, wb, mhz, opts in tqdm(ARRAY_RUNS, desc="arrays (Yosys + nextpnr)"):
                key = f"{board}_{n}_{wb}_{opts}"
                if key in cache["arrays"]:
                    continue
                t0 = time.monotonic()
                a = synth_array(board, n, wb, mhz, opts)
                cache["arrays"][key] = a
                save()
                fm = f"{a['fmax_mhz']:.1f} MHz" if a["fits"] else "does not fit"
                tqdm.write(
                    f"{key}: logic {a['logic']} ({a['logic_percent']:.0f}%), {fm}, {time.monotonic() - t0:.0f} s"
                )
    cmd = "PYTHONPATH=. python bench/area.py"
    md = write_markdown(cache, cmd)
    (RESULTS / "area.md").write_text(md)
    if cache["arrays"]:
        plot(cache, RESULTS / "area.png")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
