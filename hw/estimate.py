"""Pre-synthesis estimate of what a config needs on a board: logic, flip-flops, DSPs, memory, Fmax.

No tools run (only Python arithmetic), so it answers in well under a second and ``shiftnpu build``
can refuse a config that cannot fit before Yosys runs. Two designs are modelled:

**The whole NPU** (``design="npu"``, hw/npu.py), block by block, calibrated on whole-NPU nextpnr
builds (``bench/boards.py``, ``bench/results/boards.json``; ``python bench/boards.py --calibrate``
rebuilds them and rewrites :data:`NPU_MODEL` below, ``--fit`` refits from the stored builds):

* the systolic array as below (without the harness);
* the engine, sequencer and host link (HostInterface + UART): a fitted constant per family (split
  between them by :data:`NPU_BLOCK_SHARES`) plus, in the engine, a fitted cost per accumulator bit
  of a row (``cols * acc_width``: the read-modify-write adders and the drain path grow with it);
* the LSTM gate unit (:data:`NPU_LSTM`, from its own builds) when the config has the LSTM path
  (square power-of-two arrays from 4x4);
* every NPU memory as the RTL maps it (:func:`npu_buffers`): the UP5K's SPRAMs for the engine's
  weights and biases, SB_RAM40_4K 256x16 primitives for the collision-free RAMs, block RAM by shape
  otherwise, LUT RAM for ECP5 memories of at most 64 words; so a config whose memories do not fit is
  refused with ``bram`` named as the short resource;
* the clock as the slowest placed build of the family (a floor, not a model).

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

from .boards import Board, get_board

__all__ = [
    "Estimate",
    "estimate",
    "largest_fitting_array",
    "fit_hint",
    "count_ffs",
    "pe_luts",
    "memory_blocks",
    "calibrate",
    "fit_npu",
    "write_npu_model",
    "MODEL",
    "NPU_MODEL",
    "NPU_BLOCK_SHARES",
    "NPU_LSTM",
]

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
    # The rest of the NPU: see NPU_MODEL (written by ``bench/boards.py --calibrate``).
}


#: Blocks of the whole NPU besides its array and the LSTM path, and their share of the NPU's fixed
#: logic (the part that grows neither with the array nor with the accumulator): from the blocks
#: built alone on the UP5K (GemmEngine minus its array, Sequencer(rnn=False), HostInterface + UART;
#: pin harness removed). Only the total is fitted (two whole-NPU builds per family cannot separate
#: the blocks); the shares split it for the report.
NPU_BLOCK_SHARES = {"engine": 0.40, "sequencer": 0.36, "link": 0.24}
#: The LSTM path (the gate unit, hw/rnn.py with hw/pwl.py, and the sequencer's LSTM states), which
#: the NPU has only when :func:`quant.gate_map.lstm_supported` (square power-of-two arrays from 4x4):
#: device logic per family (the gate unit built alone in the pin harness, 793 LC on the UP5K and 1197
#: LUT4 on the ECP5-85F, less about 190 of harness, plus about 150 for the sequencer's side), flip-flops (Yosys' count of the gate unit alone), DSPs (its two
#: 16 x 16 multipliers); its memories are in :func:`npu_buffers`.
NPU_LSTM = {"ice40": {"logic": 750, "ffs": 320, "dsp": 2}, "ecp5": {"logic": 1100, "ffs": 520, "dsp": 2}}

# BEGIN NPU CALIBRATION (written by `python bench/boards.py --calibrate` from bench/results/boards.json)
NPU_MODEL: dict = {
    "ice40": {
        "fixed": 3212.9,
        "per_acc_bit": 4.49,
        "ffs_fixed": 1649.6,
        "ffs_per_acc_bit": 0.37,
        "dsp": 2,
        "fmax": 38.0,
        "runs": ["icebreaker-npu4", "icebreaker-npu4-lstm", "icebreaker-npu8"],
        "fmax_measured": True,
    },
    "ecp5": {
        "fixed": 3068.3,
        "per_acc_bit": 8.27,
        "ffs_fixed": 2040.6,
        "ffs_per_acc_bit": 1.76,
        "dsp": 2,
        "fmax": 93.0,
        "runs": ["ulx3s-85f-npu16", "ulx3s-85f-npu4", "ulx3s-85f-npu8"],
        "fmax_measured": True,
    },
}
# END NPU CALIBRATION


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
        if self.design != "npu":
            note = "floor of the measured builds"
        elif NPU_MODEL[get_board(self.board).family].get("fmax_measured"):
            note = "the slowest placed whole-NPU build of this family"
        else:
            note = "a guess: no whole NPU of this family has placed yet"
        lines.append(f"  Fmax     about {self.fmax_mhz:.0f} MHz ({note})")
        if self.buffers:
            lines.append("  memories:")
            for k, (bits, kind, n) in self.buffers.items():
                lines.append(f"    {k:<15} {bits / 1024:>6.1f} kbit -> " + (f"{n} {kind}" if n else kind))
        lines.append(f"  {'fits' if self.fits else 'DOES NOT FIT: short of ' + ', '.join(self.over)}")
        return "\n".join(lines)


def npu_buffers(
    config: NPUConfig, family: str, spram: int = 0, lstm: bool | None = None
) -> dict[str, tuple[int, str, int]]:
    """The NPU's memories (hw/gemm.py, hw/npu.py, hw/rnn.py, hw/pwl.py, hw/hostif.py): name -> (bits,
    kind, blocks), kind ``bram`` (iCE40 EBR, ECP5 DP16KD), ``spram`` or ``lutram``.

    As the RTL maps them: the engine's weights and biases (single-ported) go to the SPRAMs while
    ``spram`` blocks are left (the UP5K's four), in that order; its accumulator and channel-scale
    memories are :class:`~hw.ebr.CollisionFreeRAM` (256 x 16 EBR primitives on iCE40); the PWL's
    knot levels are block RAM on iCE40 even when tiny. On ECP5 Yosys puts a memory of at most 64
    words in LUT RAM (DPR16X4).
    """
    from quant.gate_map import cell_depth, lstm_supported
    from quant.memmap import npu_memory_map

    from .hostif import link_memories

    N = config.pwl_pieces
    levels = N.bit_length() - 1
    tables = 3  # the LSTM gate unit's sigmoid, tanh and tanh of the cell
    # (name, depth, width, how): "mem" a Memory (Yosys picks the block shape), "cfr" a
    # CollisionFreeRAM, "single" a SinglePortRAM (SPRAM when left), "block" a Memory kept in block
    # RAM on iCE40 (ram_style)
    mems = [
        ("feature", config.act_depth, config.rows * NPUConfig.ACT_BITS, "mem"),
        ("weights", config.weight_depth, config.cols * config.weight_bits, "single"),
        ("bias", config.chan_depth, 32, "single"),
        ("channel scale", config.chan_depth, 22, "cfr"),
        ("accumulator", 2 * config.m_block, config.cols * config.acc_width, "cfr"),
        ("program", config.prog_depth, 32, "mem"),
    ]
    if lstm_supported(config) if lstm is None else lstm:
        mems.append(("gate cell state", cell_depth(config), 16, "mem"))
        mems += [(f"PWL knots {lvl}", tables << lvl, 16, "block") for lvl in range(levels)]
        mems += [(f"PWL {f}", tables * N, 16, "mem") for f in ("k", "k next", "y", "m")]
    # the host link: its staging buffer and one byte RAM (INFO reply, registers, error counters)
    mems += [(name, depth, width, "mem") for name, depth, width in link_memories(config, npu_memory_map(config))]
    out = {}
    left = spram
    for name, depth, width, how in mems:
        bits = depth * width
        if how == "single" and left and memory_blocks(depth, width, family, "spram") <= left:
            n = memory_blocks(depth, width, family, "spram")
            left -= n
            out[name] = (bits, "spram", n)
        elif family == "ecp5" and depth <= 64:
            out[name] = (bits, "lutram", 0)
        elif family == "ice40" and how == "cfr":
            out[name] = (bits, "bram", _ceil(depth, 256) * _ceil(width, 16))
        else:
            out[name] = (bits, "bram", memory_blocks(depth, width, family))
    return out


def npu_logic(config: NPUConfig, family: str, lstm: bool | None = None) -> dict[str, int]:
    """Device logic (iCE40 LCs or ECP5 LUT4s) of each NPU block: the array (its own model); the
    engine, sequencer and link: a fitted constant split by :data:`NPU_BLOCK_SHARES`, plus, in the
    engine, a fitted cost per accumulator bit of a row (``cols * acc_width``: its read-modify-write
    adders, drain and result path grow with it); the gate unit (:data:`NPU_LSTM`) when the config
    has the LSTM path."""
    from quant.gate_map import lstm_supported

    k = NPU_MODEL[family]
    alpha, beta = MODEL["logic"][family]
    out = {"array": int(round(alpha * pe_luts(config, family) + beta * count_ffs(config, harness=False)))}
    for name, share in NPU_BLOCK_SHARES.items():
        v = share * k["fixed"] + (k["per_acc_bit"] * config.cols * config.acc_width if name == "engine" else 0)
        out[name] = int(round(v))
    if lstm_supported(config) if lstm is None else lstm:
        out["gate unit"] = NPU_LSTM[family]["logic"]
    return out


def estimate(config: NPUConfig, board: str | Board, design: str = "npu", *, lstm: bool | None = None) -> Estimate:
    """Logic, FFs, DSPs, memory and Fmax of ``config`` on ``board``, without synthesis.

    ``design`` is ``"npu"`` (the whole NPU of hw/npu.py, what ``shiftnpu build`` builds) or
    ``"array"`` (the systolic array alone in the pin harness). ``lstm``: whether the NPU has the
    LSTM path (``None``: where :func:`quant.gate_map.lstm_supported`, as ``NPU(rnn=True)`` builds it;
    ``False`` for ``NPU(rnn=False)`` or a build from before a config had the path).
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
        bram, spram, dsp, fmax = 0, 0, pe_dsp, MODEL["fmax"][fam][config.pe_kind]
    else:
        k = NPU_MODEL[fam]
        blocks = npu_logic(config, fam, lstm)
        logic = sum(blocks.values())
        ffs = count_ffs(config, harness=False) + int(
            k["ffs_fixed"]
            + k["ffs_per_acc_bit"] * config.cols * config.acc_width
            + (NPU_LSTM[fam]["ffs"] if "gate unit" in blocks else 0)
        )
        buffers = npu_buffers(config, fam, dev.spram, lstm)
        bram = sum(n for _, kind, n in buffers.values() if kind == "bram")
        spram = sum(n for _, kind, n in buffers.values() if kind == "spram")
        dsp = pe_dsp + int(k["dsp"]) + (NPU_LSTM[fam]["dsp"] if "gate unit" in blocks else 0)
        fmax = min(MODEL["fmax"][fam][config.pe_kind], k["fmax"])
    return Estimate(
        board=b.name,
        device=dev.name,
        config=config,
        logic=logic,
        ffs=ffs,
        dsp=dsp,
        bram=bram,
        spram=spram,
        fmax_mhz=fmax,
        available=available,
        buffers=buffers,
        available_memory={"bram": dev.bram, "spram": dev.spram},
        design=design,
        blocks=blocks,
    )


def largest_fitting_array(
    config: NPUConfig, board: str | Board, design: str = "npu", *, lstm: bool | None = None
) -> NPUConfig | None:
    """The largest square power-of-two array smaller than ``config``'s that fits ``board``, with
    ``config``'s other fields (its memories, bit widths) unchanged; ``None`` when none does (the
    memories alone do not fit, say). What ``shiftnpu build``/``estimate`` suggest for a config that
    does not fit."""
    n = 1 << (max(config.rows, config.cols) - 1).bit_length()
    while n > 1:
        if n * n < config.rows * config.cols:
            try:
                smaller = config.replace(rows=n, cols=n)
            except ValueError:  # a size the generator does not build with these fields
                smaller = None
            if smaller is not None and estimate(smaller, board, design, lstm=lstm).fits:
                return smaller
        n //= 2
    return None


def fit_hint(config: NPUConfig, board: str | Board, design: str = "npu") -> str:
    """One line naming the largest array that fits (:func:`largest_fitting_array`), or why none does."""
    smaller = largest_fitting_array(config, board, design)
    if smaller is None:
        return "no smaller square array fits either with these memories (try smaller --act-depth/--weight-depth/...)"
    return (
        f"the largest square array that fits with these memories: {smaller.rows}x{smaller.cols} "
        f"(--rows {smaller.rows} --cols {smaller.cols})"
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


def fit_npu(boards_json: str | Path) -> dict:
    """Fit :data:`NPU_MODEL` to the whole-NPU builds in ``bench/results/boards.json`` (returns it).

    Per family, device logic minus the array's model and the LSTM path's (:data:`NPU_LSTM`) is a line
    in ``cols * acc_width`` (the fixed part and the engine's cost per accumulator bit), fitted by least squares (with one build, the
    slope is kept and the constant fitted); flip-flops likewise; DSPs are the most any build used
    beside the array; Fmax the slowest placed build (a floor; kept when no build of the family
    placed).
    """
    import numpy as np

    from quant.gate_map import lstm_supported

    runs = json.loads(Path(boards_json).read_text())
    families = {"icebreaker": "ice40", "ulx3s-85f": "ecp5"}
    model = json.loads(json.dumps(NPU_MODEL))
    for fam in ("ice40", "ecp5"):
        mine = {
            k: r
            for k, r in sorted(runs.items())
            if r["design"] == "npu" and r.get("resources", {}).get("logic") and families.get(r["board"]) == fam
        }
        if not mine:
            continue
        k = model[fam]
        pts, ffs_pts, dsp = [], [], 0
        fmax = [r["fmax_mhz"] for r in mine.values() if r.get("fits") and r.get("fmax_mhz")]
        for r in mine.values():
            cfg = NPUConfig.from_dict(r["config"])
            alpha, beta = MODEL["logic"][fam]
            array = alpha * pe_luts(cfg, fam) + beta * count_ffs(cfg, harness=False)
            # a run records whether it had the LSTM path (the 4x4 runs from before 4x4 had it do not)
            has_lstm = r.get("lstm", lstm_supported(cfg))
            lstm = NPU_LSTM[fam] if has_lstm else {"logic": 0, "ffs": 0, "dsp": 0}
            x = cfg.cols * cfg.acc_width
            pts.append((x, r["resources"]["logic"][0] - array - lstm["logic"]))
            if r["resources"].get("ffs"):
                ffs_pts.append((x, r["resources"]["ffs"][0] - count_ffs(cfg, harness=False) - lstm["ffs"]))
            if r["resources"].get("dsp"):
                pe_dsp = cfg.pe_count if (cfg.pe_kind == "int8" and fam == "ecp5") else 0
                dsp = max(dsp, r["resources"]["dsp"][0] - pe_dsp - lstm["dsp"])
        for key, slope, data in (("fixed", "per_acc_bit", pts), ("ffs_fixed", "ffs_per_acc_bit", ffs_pts)):
            if not data:
                continue
            xs, ys = np.array(data, float).T
            if len(set(xs)) >= 2:
                b, a = np.polyfit(xs, ys, 1)
                k[slope] = round(float(b), 2)
            k[key] = round(float(np.mean(ys - k[slope] * xs)), 1)
        k["dsp"] = int(dsp) if any(r["resources"].get("dsp") for r in mine.values()) else k["dsp"]
        k["fmax_measured"] = bool(fmax)
        if fmax:
            k["fmax"] = float(int(min(fmax)))
        k["runs"] = list(mine)
    return model


_CAL_BEGIN = "# BEGIN NPU CALIBRATION"
_CAL_END = "# END NPU CALIBRATION"


def write_npu_model(model: dict, path: str | Path | None = None) -> None:
    """Write ``model`` (from :func:`fit_npu`) into this file as :data:`NPU_MODEL` (between the
    calibration markers), and into the running module."""
    path = Path(__file__) if path is None else Path(path)
    text = path.read_text()
    a, b = text.index(_CAL_BEGIN), text.index(_CAL_END)
    head = text[a : text.index("\n", a) + 1]
    lines = ["NPU_MODEL: dict = {"]  # as ruff formats it, so the file stays formatted
    for fam, k in model.items():
        lines.append(f"    {json.dumps(fam)}: {{")
        lines += [f"        {json.dumps(key)}: {v if isinstance(v, bool) else json.dumps(v)}," for key, v in k.items()]
        lines.append("    },")
    body = "\n".join(lines) + "\n}\n"
    path.write_text(text[:a] + head + body + text[b:])
    NPU_MODEL.clear()
    NPU_MODEL.update(json.loads(json.dumps(model)))
