"""Pre-synthesis estimate of what a config needs on a board: logic, flip-flops, DSPs, memory, Fmax.

Pure Python (no Amaranth, no tools), so it answers in well under a second and ``shiftnpu build``
can refuse a config that cannot fit before Yosys runs.

The model follows the structure of the generated design and is calibrated on measurements
(``bench/area.py``, ``bench/results/area.json``):

* **Flip-flops** are counted structurally: per PE two weight banks, the product-term register
  and the partial sum of its row; the input skew and valid delay lines; the pin harness' input shift register and output
  registers. This matches Yosys' count to within a few flip-flops.
* **LUT4s per PE** are a line in the partial-sum width, fitted per family and PE flavour on the
  single-PE Yosys runs.
* **Device logic** (iCE40 logic cells, ECP5 LUT4s as nextpnr counts them) is
  ``alpha * LUTs + beta * FFs`` per family, fitted on the whole-array nextpnr runs: on iCE40 a
  flip-flop without a LUT in front of it costs a logic cell of its own, on ECP5 it costs no LUT.
* **Fmax** is the slowest measured array of that family and PE flavour (a floor, not a model).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from quant.config import NPUConfig
from quant.perf import ROWS_PER_STAGE, array_latency
from quant.tiling import CHANNEL_WORD_BITS

from .boards import Board, get_board

__all__ = ["Estimate", "estimate", "count_ffs", "pe_luts", "memory_blocks", "calibrate", "MODEL"]

#: (depth, width) shapes of one block RAM: iCE40 SB_RAM40_4K and ECP5 DP16KD.
_BRAM_SHAPES = {
    "ice40": [(256, 16), (512, 8), (1024, 4), (2048, 2)],
    "ecp5": [(512, 36), (1024, 18), (2048, 9), (4096, 4), (8192, 2), (16384, 1)],
}
#: The UP5K's SB_SPRAM256KA: 16K words of 16 bits.
_SPRAM_SHAPE = (16384, 16)


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def memory_blocks(depth: int, width: int, family: str, kind: str = "bram") -> int:
    """Blocks of block RAM (or ``kind="spram"``) that hold ``depth`` words of ``width`` bits."""
    shapes = [_SPRAM_SHAPE] if kind == "spram" else _BRAM_SHAPES[family]
    return min(_ceil(depth, d) * _ceil(width, w) for d, w in shapes)


#: Calibration (see :func:`calibrate` and bench/results/area.json).
#: pe_lut[family][pe kind] = (a, b): LUT4s of one PE = a + b * partial-sum width.
#: logic[family] = (alpha, beta): device logic = alpha * LUT4s + beta * FFs.
#: fmax[family][pe kind]: MHz, the slowest array measured (whole array in the pin harness).
MODEL: dict = {
    "pe_lut": {
        "ice40": {2: (14.0, 1.0), 3: (28.9, 0.84), 4: (50.1, 0.57), 8: (187.0, 1.0)},
        "ecp5": {2: (13.0, 1.0), 3: (37.0, 1.0), 4: (43.0, 1.0), 8: (10.0, 1.0)},
    },
    "logic": {"ice40": (0.528, 0.921), "ecp5": (0.973, -0.341)},
    "fmax": {"ice40": {"shift": 63.0, "int8": 33.0}, "ecp5": {"shift": 122.0, "int8": 85.0}},
}


def _row_widths(config: NPUConfig) -> list[int]:
    return [config.partial_sum_width(r + 1) for r in range(config.rows)]


def count_ffs(config: NPUConfig, *, harness: bool = True) -> int:
    """Flip-flops of the systolic array (and the pin harness around it), counted structurally."""
    R, C, wb = config.rows, config.cols, config.weight_bits
    # product-term register: a shifted 8-bit activation never needs the top bit of the product
    # width (it repeats the sign; Yosys merges the two flip-flops) but the shift PE registers a
    # carry-in beside it; the int8 product uses every bit and its carry-in is constant.
    per_pe_fixed = 2 * wb + config.product_width
    ffs = 0
    G = ROWS_PER_STAGE
    for r, w in enumerate(_row_widths(config)):
        # activations are broadcast along a row (no pass-through); the partial sum is registered
        # once per group of G rows
        ffs += C * (per_pe_fixed + (w if r % G == G - 1 or r == R - 1 else 0))
    ffs += 9 * sum(r // G for r in range(R))  # input skew (activation and bank tag); no output deskew
    ffs += array_latency(config)  # valid delay line
    if harness:
        ffs += 5 + 8 * R + wb * C  # input shift register: every input bit
        ffs += config.array_sum_width * C + 2  # registered outputs, out_valid and the XOR
    return ffs


def pe_luts(config: NPUConfig, family: str) -> float:
    """LUT4s of every PE of the array (Yosys level; ECP5 carry cells count as two LUT4s)."""
    a, b = MODEL["pe_lut"][family][config.weight_bits]
    return config.cols * sum(a + b * w for w in _row_widths(config))


@dataclass
class Estimate:
    """Estimated use of one board's resources by one config."""

    board: str
    device: str
    config: NPUConfig
    logic: int
    ffs: int
    dsp: int
    bram: int
    spram: int
    fmax_mhz: float
    available: dict[str, int] = field(default_factory=dict)
    #: NPU buffer -> (bits, memory kind, blocks) it will need: weights in SPRAM on the UP5K,
    #: everything else in block RAM (EBR on iCE40, DP16KD on ECP5)
    buffers: dict[str, tuple[int, str, int]] = field(default_factory=dict)
    available_memory: dict[str, int] = field(default_factory=dict)

    def as_resources(self) -> dict[str, int]:
        d = {"logic": self.logic, "ffs": self.ffs, "bram": self.bram, "dsp": self.dsp}
        if "spram" in self.available:
            d["spram"] = self.spram
        return d

    @property
    def over(self) -> list[str]:
        """Resources the config needs more of than the device has."""
        return [k for k, v in self.as_resources().items() if v > self.available.get(k, 0)]

    @property
    def fits(self) -> bool:
        return not self.over

    def text(self) -> str:
        cfg = self.config
        lines = [
            f"estimate for {self.board} ({self.device}): {cfg.rows}x{cfg.cols} array, "
            f"{cfg.weight_bits}-bit weights ({cfg.pe_kind} PE), in the pin harness",
            f"  {'resource':<8} {'needs':>7} {'has':>7} {'util':>6}",
        ]
        for k, v in self.as_resources().items():
            have = self.available.get(k, 0)
            pct = f"{100 * v / have:.0f}%" if have else ("-" if not v else "n/a")
            flag = "   <-- does not fit" if v > have else ""
            lines.append(f"  {k:<8} {v:>7} {have:>7} {pct:>6}{flag}")
        lines.append(f"  Fmax     about {self.fmax_mhz:.0f} MHz (floor of the measured arrays)")
        if self.buffers:
            lines.append("  NPU buffers (not in this array-only build; where the NPU will place them):")
            for k, (bits, kind, n) in self.buffers.items():
                lines.append(f"    {k:<12} {bits / 1024:>5.0f} kbit -> {n} {kind} (of {self.available_memory[kind]})")
        lines.append(f"  {'fits' if self.fits else 'DOES NOT FIT: ' + ', '.join(self.over)}")
        return "\n".join(lines)


def estimate(config: NPUConfig, board: str | Board) -> Estimate:
    """Logic, FFs, DSPs, memory and Fmax of ``config``'s array on ``board``, without synthesis."""
    b = board if isinstance(board, Board) else get_board(board)
    dev = b.resources
    fam = dev.family
    ffs = count_ffs(config)
    luts = pe_luts(config, fam) + ffs / 8  # the output XOR tree: about one LUT4 per three bits
    alpha, beta = MODEL["logic"][fam]
    logic = int(round(alpha * luts + beta * ffs))
    # Yosys maps the int8 multiplier to MULT18X18D on ECP5; Amaranth's iCE40 flow does not use
    # the UP5K's SB_MAC16 (no -dsp), so there the multiplier is logic.
    dsp = config.pe_count if (config.pe_kind == "int8" and fam == "ecp5") else 0
    available = {"logic": dev.logic, "ffs": dev.ffs, "bram": dev.bram, "dsp": dev.dsp}
    if dev.spram:
        available["spram"] = dev.spram
    buffers = {}
    # The NPU's memories (hw/npu.py): the host-visible regions plus the engine's accumulator.
    for name, depth, width in (
        ("weights", config.weight_depth, config.cols * config.weight_bits),
        ("activations", config.act_depth, config.rows * NPUConfig.ACT_BITS),
        ("channel params", config.chan_depth, CHANNEL_WORD_BITS),
        ("program", config.prog_depth, 32),
        ("accumulator", 2 * config.m_block, config.cols * config.acc_width),
    ):
        kind = "spram" if (name == "weights" and dev.spram) else "bram"
        buffers[name] = (depth * width, kind, memory_blocks(depth, width, fam, kind))
    return Estimate(
        board=b.name,
        device=dev.name,
        config=config,
        logic=logic,
        ffs=ffs,
        dsp=dsp,
        bram=0,
        spram=0,
        fmax_mhz=MODEL["fmax"][fam][config.pe_kind],
        available=available,
        buffers=buffers,
        available_memory={"bram": dev.bram, "spram": dev.spram},
    )


def calibrate(area_json: str | Path) -> dict:
    """Refit :data:`MODEL` from ``bench/results/area.json`` (prints nothing; returns the new model).

    The per-PE lines come from the single-PE Yosys runs, the device coefficients from the
    whole-array nextpnr runs that fit their device.
    """
    import numpy as np

    data = json.loads(Path(area_json).read_text())
    model = json.loads(json.dumps(MODEL))  # deep copy with str keys
    pe_lut: dict = {"ice40": {}, "ecp5": {}}
    for wb in (2, 3, 4, 8):
        pts = [v for k, v in data["pe"].items() if k.startswith(f"{wb}_")]
        w = np.array([p["psum_width"]["bits"] for p in pts], float)
        ice = np.array([p["ice40"].get("SB_LUT4", 0) for p in pts], float)
        ecp = np.array([p["ecp5"].get("LUT4", 0) + 2 * p["ecp5"].get("CCU2C", 0) for p in pts], float)
        b_ice, a_ice = np.polyfit(w, ice, 1)
        pe_lut["ice40"][wb] = (round(float(a_ice), 1), round(float(b_ice), 2))
        # ECP5's ABC mapping of the small shift multiplexers is noisy (the 2-bit PE maps to 15 or
        # 67 LUT4s besides its adder depending on the width): one LUT4 per adder bit plus the best rest
        pe_lut["ecp5"][wb] = (round(float(np.min(ecp - w)), 1), 1.0)
    model["pe_lut"] = pe_lut
    for fam, board in (("ice40", "icebreaker"), ("ecp5", "ulx3s-85f")):
        rows, ys = [], []
        fmax: dict[str, float] = {}
        for a in data["arrays"].values():
            if a["board"] != board or a["synth_opts"] or not a["logic"]:
                continue
            cfg = NPUConfig(rows=a["n"], cols=a["n"], weight_bits=a["weight_bits"])
            ffs = count_ffs(cfg)
            a_, b_ = pe_lut[fam][cfg.weight_bits]
            luts = cfg.cols * sum(a_ + b_ * w for w in _row_widths(cfg)) + ffs / 8
            rows.append((luts, ffs))
            ys.append(a["logic"])
            if a["fits"]:
                fmax[cfg.pe_kind] = min(fmax.get(cfg.pe_kind, 1e9), a["fmax_mhz"])
        if len(rows) >= 2:
            coef, *_ = np.linalg.lstsq(np.array(rows, float), np.array(ys, float), rcond=None)
            model["logic"][fam] = (round(float(coef[0]), 3), round(float(coef[1]), 3))
        for kind, f in fmax.items():
            model["fmax"][fam][kind] = float(int(f))
    return model
