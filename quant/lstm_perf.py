"""Cycle model of the NPU's LSTM path (the sequencer's ``PWL_LOAD`` and ``LSTM`` ops, hw/sequencer.py).

The sequencer's memory port is registered both ways, so a read's word arrives two cycles after the read
state and is usable from its own register one cycle later. Per time step the ``LSTM`` op copies ``x_t``
(four cycles a word), runs one gate-mode GEMM (its cycles from :func:`quant.perf.gemm_cycles`, plus the
hand-over), and then sends every (sequence, unit) through the one gate unit, :func:`unit_cycles` each: read
and register the z word (three cycles; four at 4x4, where a unit's gates are two words read back to
back), hand it over, then the gate unit's own ``cycles_per_unit``
(hw/rnn.py, ``z_in`` mode). The GEMM hand-over constant was
read off the RTL; the rest follows the state machines. :func:`program_cycles` adds up a compiled
LSTM model's program (PWL_LOAD, LSTM, dense GEMMs, ARGMAX, END); tests/test_npu_lstm_e2e.py holds
it equal to the cycle count the simulated device reports.
"""

from __future__ import annotations

from .config import NPUConfig
from .gate_map import entries_per_word, z_words_per_unit
from .perf import gemm_cycles
from .program import INSTR_WORDS
from .tiling import tiles

__all__ = [
    "pwl_latency",
    "unit_cycles",
    "pwl_load_cycles",
    "lstm_cycles",
    "gemm_op_cycles",
    "argmax_cycles",
    "program_cycles",
    "INSTR_OVERHEAD",
]

#: Cycles the sequencer spends on every instruction before its body: fetch (words + 2: the block
#: RAM and a register) and decode.
INSTR_OVERHEAD = INSTR_WORDS + 3

#: Sequencer cycles around one engine command: command hand-over and completion.
_GEMM_HANDOVER = 2

#: Sequencer cycles per feature word read before its word is there (registered memory port).
_READ = 2

#: Sequencer cycles before each (sequence, unit)'s hand-over to the gate unit: the z read and its register
#: (plus one cycle per further word of the unit: :func:`quant.gate_map.z_words_per_unit`).
_Z_READ = _READ + 1

#: Sequencer cycles per word of the LSTM op's x copy: read (2), register, write.
_COPY = _READ + 2


def pwl_latency(config: NPUConfig) -> int:
    """hw.pwl.PWLUnit.latency: register, log2(N) search stages, read, clamped offset, multiply, add and saturate."""
    return (config.pwl_pieces.bit_length() - 1) + 5


def unit_cycles(config: NPUConfig) -> int:
    """Cycles per (sequence, unit) of the LSTM op: z read and register (3, or 4 for the two words at 4x4)
    + hand-over + the gate unit's z_in cycles per unit."""
    L = pwl_latency(config)
    gate_unit = 1 + (L + 3) + 1 + L + 1 + 1  # hw.rnn.GateUnit(z_in=True).cycles_per_unit
    return _Z_READ + (z_words_per_unit(config) - 1) + gate_unit


def pwl_load_cycles(config: NPUConfig, words: int) -> int:
    """Body of ``PWL_LOAD`` over ``words`` feature words: read (2), latch, one write per entry."""
    return words * (_READ + 1 + entries_per_word(config))


def lstm_cycles(config: NPUConfig, m: int, inputs: int, hidden: int, steps: int) -> int:
    """Estimated body cycles of one ``LSTM`` op (``m`` sequences, not counting fetch and decode)."""
    R = config.rows
    XT, HT = tiles(inputs, R), tiles(hidden, R)
    gemm = gemm_cycles(config, m, (XT + HT) * R, 4 * hidden).cycles + _GEMM_HANDOVER
    per_step = _COPY * XT * m + gemm + m * hidden * unit_cycles(config)
    return 1 + 2 * HT * m + steps * per_step  # init, h zeroing (two cycles a word), the steps


def gemm_op_cycles(config: NPUConfig, m: int, k: int, n: int) -> int:
    """Body of a ``GEMM`` instruction: the engine's cycles plus the hand-over."""
    return gemm_cycles(config, m, k, n).cycles + _GEMM_HANDOVER


def argmax_cycles(config: NPUConfig, m: int, n: int, nt: int | None = None) -> int:
    """Body of ``ARGMAX`` over an ``m x n`` result: per row and N-tile read (2), latch, one cycle a lane; one emit.

    ``nt`` is the instruction's N-tile count, which the device scans (the compiler writes
    ``ceil(n / cols)``, the default).
    """
    nt = tiles(n, config.cols) if nt is None else nt
    return m * (nt * (_READ + 1 + config.cols) + 1)


def program_cycles(compiled) -> int:
    """Cycles of one run of a compiled model's program, from the instructions' fields (LSTM-path models).

    Raises ``ValueError`` for ops this model does not cover (MAXPOOL2, IM2COL3).
    """
    from .program import Op, decode_program

    cfg = compiled.config
    total = 0
    for ins in decode_program(compiled.program):
        a = ins.args
        total += INSTR_OVERHEAD
        if ins.op == Op.END:
            break
        if ins.op == Op.PWL_LOAD:
            total += pwl_load_cycles(cfg, a["count"])
        elif ins.op == Op.LSTM:
            total += lstm_cycles(cfg, a["m"], a["xt"] * cfg.rows, a["hidden"], a["steps"])
        elif ins.op == Op.GEMM:
            total += gemm_op_cycles(cfg, a["m"], a["kt"] * cfg.rows, a["n"])
        elif ins.op == Op.ARGMAX:
            total += argmax_cycles(cfg, a["m"], a["n"], a["nt"])
        else:
            raise ValueError(f"no cycle model for {Op.NAMES[ins.op]}")
    return total
