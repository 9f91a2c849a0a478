"""Pre-synthesis estimate of what a config needs on a board: logic, flip-flops, DSPs, memory, Fmax.

No tools run (only Python arithmetic), so it answers in well under a second and ``shiftnpu build``
can refuse a config that cannot fit before Yosys runs. Two designs are modelled:

**The whole NPU** (``design="npu"``, hw/npu.py), block by block, calibrated on whole-NPU nextpnr
builds (``bench/boards.py``, ``bench/results/boards.json``):

* the systolic array as below (without the harness);
* the GEMM engine beside its array: a constant plus a cost per accumulator bit of a row
  (``cols * acc_width``: the read-modify-write adders and the drain path grow with it);
* the sequencer and the host link (HostInterface + UART) as constants per family;
* every NPU memory mapped to block RAM by its shape (:func:`npu_buffers`; on ECP5 a memory of at
  most 64 words goes to LUT RAM, as Yosys does), so a config whose memories do not fit is refused
  with ``bram`` named as the short resource;
* the clock as the slowest measured build of the family (a floor, not a model).

**The array alone** in the pin harness (``design="array"``), calibrated on ``bench/area.py``
(``bench/results/area.json``):

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
    # The rest of the NPU (calibrated on whole-NPU nextpnr builds, bench/boards.py): the GEMM
    # engine beside its array (accumulator read-modify-write, requantizer, drain, control) as a
    # constant plus a cost per accumulator bit of a row; the sequencer and the host link
    # (HostInterface + UART) as constants; flip-flops likewise; DSPs of the requantizer; the
    # slowest measured clock.
    "npu": {
        "ice40": {
            "engine_fixed": 1937.0,
            "engine_per_acc_bit": 18.8,
            "sequencer": 2537.0,
            "link": 1400.0,
            "ffs_fixed": 1727.0,
            "ffs_per_acc_bit": 7.6,
            "dsp": 0,
            "fmax": 20.0,
            "fmax_note": "a guess: no whole NPU has placed on the UP5K yet",
        },
        "ecp5": {
            "engine_fixed": 1530.0,
            "engine_per_acc_bit": 14.85,
            "sequencer": 1564.0,
            "link": 1340.0,
            "ffs_fixed": 1676.0,
            "ffs_per_acc_bit": 7.6,
            "dsp": 5,
            "fmax": 41.0,
            "fmax_note": "the 8x8 NPU's measured Fmax (sequencer address path)",
        },
    },
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
    design: str = "npu"
    #: device logic per block (the NPU's array, engine, sequencer and link)
    blocks: dict[str, int] = field(default_factory=dict)

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

    def shortfall(self) -> dict[str, int]:
        """Resource -> amount needed, for each resource the device has too little of."""
        d = self.as_resources()
        return {k: d[k] for k in self.over}

    def text(self) -> str:
        cfg = self.config
        what = "whole NPU" if self.design == "npu" else "array alone, in the pin harness"
        lines = [
            f"estimate for {self.board} ({self.device}): {cfg.rows}x{cfg.cols} array, "
            f"{cfg.weight_bits}-bit weights ({cfg.pe_kind} PE), {what}",
            f"  {'resource':<8} {'needs':>7} {'has':>7} {'util':>6}",
        ]
        for k, v in self.as_resources().items():
            have = self.available.get(k, 0)
            pct = f"{100 * v / have:.0f}%" if have else ("-" if not v else "n/a")
            flag = "   <-- does not fit" if v > have else ""
            lines.append(f"  {k:<8} {v:>7} {have:>7} {pct:>6}{flag}")
        if len(self.blocks) > 1:
            lines.append("  logic by block: " + ", ".join(f"{k} {v}" for k, v in self.blocks.items()))
        note = MODEL["npu"][get_board(self.board).family]["fmax_note"] if self.design == "npu" else None
        lines.append(f"  Fmax     about {self.fmax_mhz:.0f} MHz ({note or 'floor of the measured builds'})")
        if self.buffers:
            lines.append("  memories:")
            for k, (bits, kind, n) in self.buffers.items():
                lines.append(f"    {k:<15} {bits / 1024:>6.1f} kbit -> " + (f"{n} {kind}" if n else kind))
        lines.append(f"  {'fits' if self.fits else 'DOES NOT FIT: short of ' + ', '.join(self.over)}")
        return "\n".join(lines)


def npu_buffers(config: NPUConfig, family: str) -> dict[str, tuple[int, str, int]]:
    """The NPU's memories (hw/npu.py, hw/gemm.py, hw/hostif.py): name -> (bits, kind, blocks).

    Every NPU memory has a read and a write port on different addresses (host writes while the
    engine reads), so Yosys maps them all to block RAM, the UP5K's weights included (its SPRAMs are
    single-ported).
    """
    from quant.memmap import npu_memory_map

    from .hostif import info_payload

    info_len = len(info_payload(config, npu_memory_map(config), 0))
    out = {}
    for name, depth, width in (
        ("feature", config.act_depth, config.rows * NPUConfig.ACT_BITS),
        ("weights", config.weight_depth, config.cols * config.weight_bits),
        ("channel params", config.chan_depth, CHANNEL_WORD_BITS),
        ("program", config.prog_depth, 32),
        ("accumulator", 2 * config.m_block, config.cols * config.acc_width),
        ("link staging", config.max_payload, 8),
        ("link INFO ROM", info_len, 8),
        ("link registers", 32, 32),
    ):
        if family == "ecp5" and depth <= 64:  # Yosys puts a memory this shallow in LUT RAM (DPR16X4)
            out[name] = (depth * width, "lutram", 0)
        else:
            out[name] = (depth * width, "bram", memory_blocks(depth, width, family))
    return out


def npu_logic(config: NPUConfig, family: str) -> dict[str, int]:
    """Device logic (iCE40 LCs or ECP5 LUT4s) of each NPU block: array, engine, sequencer, link."""
    k = MODEL["npu"][family]
    array_ffs = count_ffs(config, harness=False)
    alpha, beta = MODEL["logic"][family]
    array = alpha * pe_luts(config, family) + beta * array_ffs
    engine = k["engine_fixed"] + k["engine_per_acc_bit"] * config.cols * config.acc_width
    return {
        "array": int(round(array)),
        "engine": int(round(engine)),
        "sequencer": int(k["sequencer"]),
        "link": int(k["link"]),
    }


def estimate(config: NPUConfig, board: str | Board, design: str = "npu") -> Estimate:
    """Logic, FFs, DSPs, memory and Fmax of ``config`` on ``board``, without synthesis.

    ``design`` is ``"npu"`` (the whole NPU of hw/npu.py, what ``shiftnpu build`` builds) or
    ``"array"`` (the systolic array alone in the pin harness).
    """
    if design not in ("npu", "array"):
        raise ValueError(f"unknown design {design!r} (npu or array)")
    b = board if isinstance(board, Board) else get_board(board)
    dev = b.resources
    fam = dev.family
    available = {"logic": dev.logic, "ffs": dev.ffs, "bram": dev.bram, "dsp": dev.dsp}
    if dev.spram:
        available["spram"] = dev.spram
    # Yosys maps the int8 multiplier to MULT18X18D on ECP5; Amaranth's iCE40 flow does not use
    # the UP5K's SB_MAC16 (no -dsp), so there the multiplier is logic.
    pe_dsp = config.pe_count if (config.pe_kind == "int8" and fam == "ecp5") else 0
    if design == "array":
        ffs = count_ffs(config)
        luts = pe_luts(config, fam) + ffs / 8  # the output XOR tree: about one LUT4 per three bits
        alpha, beta = MODEL["logic"][fam]
        logic = int(round(alpha * luts + beta * ffs))
        blocks: dict[str, int] = {"array": logic}
        buffers = {}
        bram, dsp, fmax = 0, pe_dsp, MODEL["fmax"][fam][config.pe_kind]
    else:
        k = MODEL["npu"][fam]
        blocks = npu_logic(config, fam)
        logic = sum(blocks.values())
        ffs = count_ffs(config, harness=False) + int(
            k["ffs_fixed"] + k["ffs_per_acc_bit"] * config.cols * config.acc_width
        )
        buffers = npu_buffers(config, fam)
        bram = sum(n for _, _, n in buffers.values())
        dsp = pe_dsp + int(k["dsp"])
        fmax = min(MODEL["fmax"][fam][config.pe_kind], k["fmax"])
    return Estimate(
        board=b.name,
        device=dev.name,
        config=config,
        logic=logic,
        ffs=ffs,
        dsp=dsp,
        bram=bram,
        spram=0,
        fmax_mhz=fmax,
        available=available,
        buffers=buffers,
        available_memory={"bram": dev.bram, "spram": dev.spram},
        design=design,
        blocks=blocks,
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
