"""The layer program the on-chip sequencer (hw/sequencer.py) runs, and its binary encoding.

A program is a list of instructions, each :data:`INSTR_WORDS` 32-bit words in the program memory
(word 0: opcode in bits 0..3, flags ``relu`` in bit 4 and ``gate`` in bit 5; words 1..5: two 16-bit
fields each, low half first). The sequencer runs them in order until ``END``; no host round trip
between layers.

=========  =======================================================================================
opcode     meaning (all addresses are feature/weight/channel memory word addresses)
=========  =======================================================================================
GEMM       one engine command: ``C = requant(A @ W + b)`` (fields of hw.gemm.GemmCommand);
           with the ``gate`` flag the results are int16 (SPEC §4's z), two words per row and N-tile
MAXPOOL2   2x2/2 max-pool, lane-wise: ``dst[ct*M' + p'] = max of the 4 source pixels``
           (``M = H*W`` source pixels, ``M' = (H/2)*(W/2)``, ``ct`` over channel tiles)
IM2COL3    3x3, stride 1, zero padding 1: ``dst[(tap*CT + ct)*M + p] = src[ct*M + p + offset(tap)]``
           or 0 outside the image (``tap = dy*3 + dx``); turns a feature map into a GEMM's A
ARGMAX     per row m of an M x N result: index of the largest lane (the first one on ties),
           written as byte ``m % lanes`` of word ``dst + m // lanes``
PWL_LOAD   ``count`` words from ``src``, each ``rows/4`` entries of 32 bits (value in bits 0..15,
           PWL-unit address in bits 16..31): write them into the gate unit's PWL tables
LSTM       a whole LSTM layer over ``steps`` time steps for ``m`` sequences (``hidden`` units):
           per step, copy ``x_t`` (``xt`` tiles at ``x_base + t*xt*m``) to ``act_base``, one
           gate-mode GEMM ``[x_t | h] @ [W; U] + b -> z`` at ``z_base``, then the gate unit over
           every (sequence, unit), writing h' into the ``h`` tiles at ``h_base = act_base + xt*m``
           (zeroed before step 0; cell state starts at 0); see docs/architecture.md
END        stop; the device reports done
=========  =======================================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Op", "Instr", "INSTR_WORDS", "encode_program", "decode_program"]

INSTR_WORDS = 6


class Op:
    END = 0
    GEMM = 1
    MAXPOOL2 = 2
    IM2COL3 = 3
    ARGMAX = 4
    PWL_LOAD = 5
    LSTM = 6
    NAMES = {0: "END", 1: "GEMM", 2: "MAXPOOL2", 3: "IM2COL3", 4: "ARGMAX", 5: "PWL_LOAD", 6: "LSTM"}


# The 16-bit fields of words 1..5, per opcode, in order (word 1 low, word 1 high, word 2 low, ...).
FIELDS: dict[int, tuple[str, ...]] = {
    Op.END: (),
    Op.GEMM: ("m", "n", "kt", "nt", "act_base", "out_base", "wgt_base", "chan_base"),
    Op.MAXPOOL2: ("src", "dst", "h", "w", "ct"),
    Op.IM2COL3: ("src", "dst", "h", "w", "ct"),
    Op.ARGMAX: ("src", "dst", "m", "n", "nt"),
    Op.PWL_LOAD: ("src", "count"),
    Op.LSTM: ("m", "hidden", "steps", "x_base", "act_base", "z_base", "wgt_base", "chan_base", "xt", "h_base"),
}


@dataclass(frozen=True)
class Instr:
    op: int
    args: dict[str, int] = field(default_factory=dict)
    relu: bool = False
    gate: bool = False

    def __post_init__(self):
        if self.op not in FIELDS:
            raise ValueError(f"unknown opcode {self.op}")
        names = FIELDS[self.op]
        missing = set(names) - set(self.args)
        extra = set(self.args) - set(names)
        if missing or extra:
            raise ValueError(f"{Op.NAMES[self.op]}: missing {sorted(missing)} / unknown {sorted(extra)} fields")
        for k, v in self.args.items():
            if not 0 <= int(v) < 1 << 16:
                raise ValueError(f"{Op.NAMES[self.op]}: field {k} = {v} does not fit 16 bits")
        if self.op == Op.MAXPOOL2 and (self.args["h"] % 2 or self.args["w"] % 2):
            raise ValueError("MAXPOOL2 needs an even height and width")
        if (self.relu or self.gate) and self.op != Op.GEMM:
            raise ValueError(f"{Op.NAMES[self.op]}: the relu and gate flags belong to GEMM")
        if self.relu and self.gate:
            raise ValueError("GEMM: a gate-mode GEMM has no ReLU")


def encode_program(instrs: list[Instr]) -> list[int]:
    """32-bit program words; an END is appended if the program lacks one."""
    if not instrs or instrs[-1].op != Op.END:
        instrs = list(instrs) + [Instr(Op.END)]
    words: list[int] = []
    for ins in instrs:
        w = [ins.op | (int(ins.relu) << 4) | (int(ins.gate) << 5)] + [0] * (INSTR_WORDS - 1)
        for i, name in enumerate(FIELDS[ins.op]):
            w[1 + i // 2] |= int(ins.args[name]) << (16 * (i % 2))
        words += w
    return words


def decode_program(words: list[int]) -> list[Instr]:
    if len(words) % INSTR_WORDS:
        raise ValueError(f"a program is a multiple of {INSTR_WORDS} words, got {len(words)}")
    out = []
    for j in range(0, len(words), INSTR_WORDS):
        w = words[j : j + INSTR_WORDS]
        op = w[0] & 0xF
        if op not in FIELDS:
            raise ValueError(f"instruction {j // INSTR_WORDS}: unknown opcode {op}")
        args = {name: (w[1 + i // 2] >> (16 * (i % 2))) & 0xFFFF for i, name in enumerate(FIELDS[op])}
        out.append(Instr(op, args, relu=bool((w[0] >> 4) & 1), gate=bool((w[0] >> 5) & 1)))
        if op == Op.END:
            break
    return out
