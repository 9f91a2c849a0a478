"""A word-level model of the NPU's memories and program execution (the sequencer's golden model).

It holds the same memories as the device (feature, weight, channel, program; as Python ints) and
executes a layer program (quant/program.py) on them with the integer golden arithmetic. A
regression compares the RTL's memories with this model's after the same program; the driver can
also run a model "on" it to check a program without hardware.
"""

from __future__ import annotations

import numpy as np

from . import codes as wcodes
from .config import NPUConfig
from .fixed import requant
from .program import INSTR_WORDS, Instr, Op, decode_program

__all__ = ["DeviceModel"]


def _lanes_of(word: int, lanes: int) -> np.ndarray:
    b = np.array([(word >> (8 * i)) & 0xFF for i in range(lanes)], dtype=np.int64)
    return np.where(b >= 128, b - 256, b)


def _word_of(values) -> int:
    w = 0
    for i, v in enumerate(values):
        w |= (int(v) & 0xFF) << (8 * i)
    return w


class DeviceModel:
    """Memories and program execution of one NPU instance."""

    def __init__(self, config: NPUConfig, prog_depth: int = 256):
        self.config = config
        self.feature = [0] * config.act_depth
        self.weight = [0] * config.weight_depth
        self.channel = [0] * config.chan_depth
        self.program = [0] * prog_depth

    def run(self) -> list[Instr]:
        """Execute the program in program memory until END; returns the instructions executed."""
        done = []
        pc = 0
        while True:
            if pc + INSTR_WORDS > len(self.program):
                raise ValueError("program runs past the end of the program memory without END")
            ins = decode_program(self.program[pc : pc + INSTR_WORDS])[0]
            pc += INSTR_WORDS
            done.append(ins)
            if ins.op == Op.END:
                return done
            getattr(self, f"_op_{Op.NAMES[ins.op].lower()}")(ins)

    # -- operations --------------------------------------------------------------------------------

    def _op_gemm(self, ins: Instr) -> None:
        a, cfg = ins.args, self.config
        R, C, b = cfg.rows, cfg.cols, cfg.weight_bits
        M, KT, NT, N = a["m"], a["kt"], a["nt"], a["n"]
        if 0 in (M, KT, NT, N):
            return  # the sequencer skips an empty GEMM
        A = np.zeros((M, KT * R), dtype=np.int64)
        for kt in range(KT):
            for m in range(M):
                A[m, kt * R : (kt + 1) * R] = _lanes_of(self.feature[a["act_base"] + kt * M + m], R)
        W = np.zeros((KT * R, NT * C), dtype=np.int64)
        for nt in range(NT):
            for kt in range(KT):
                for r in range(R):
                    word = self.weight[a["wgt_base"] + (nt * KT + kt) * R + r]
                    W[kt * R + r, nt * C : (nt + 1) * C] = wcodes.unpack([word], b, C * b, C)
        acc = A @ wcodes.decode(W, b)
        chans = [self.channel[a["chan_base"] + j] for j in range(NT * C)]
        bias = np.array([((w & 0xFFFFFFFF) ^ 0x80000000) - 0x80000000 for w in chans], dtype=np.int64)
        mult = np.array([(w >> 32) & 0xFFFF for w in chans], dtype=np.int64)
        shift = np.array([(w >> 48) & 0x3F for w in chans], dtype=np.int64)
        y = requant(acc, bias, mult, shift, relu=ins.relu)
        y[:, N:] = 0
        for nt in range(NT):
            for m in range(M):
                self.feature[a["out_base"] + nt * M + m] = _word_of(y[m, nt * C : (nt + 1) * C])

    def _op_maxpool2(self, ins: Instr) -> None:
        a, lanes = ins.args, self.config.rows
        H, W, CT = a["h"], a["w"], a["ct"]
        npix, opix = H * W, (H // 2) * (W // 2)
        for ct in range(CT):
            for y in range(H // 2):
                for x in range(W // 2):
                    base = a["src"] + ct * npix + 2 * y * W + 2 * x
                    vals = [_lanes_of(self.feature[base + d], lanes) for d in (0, 1, W, W + 1)]
                    self.feature[a["dst"] + ct * opix + y * (W // 2) + x] = _word_of(np.max(vals, axis=0))

    def _op_im2col3(self, ins: Instr) -> None:
        a = ins.args
        H, W, CT = a["h"], a["w"], a["ct"]
        npix = H * W
        out = a["dst"]
        for tap in range(9):
            dy, dx = divmod(tap, 3)
            for ct in range(CT):
                for y in range(H):
                    for x in range(W):
                        sy, sx = y + dy - 1, x + dx - 1
                        inside = 0 <= sy < H and 0 <= sx < W
                        self.feature[out] = self.feature[a["src"] + ct * npix + sy * W + sx] if inside else 0
                        out += 1

    def _op_argmax(self, ins: Instr) -> None:
        a, lanes = ins.args, self.config.rows
        M, N, NT = a["m"], a["n"], a["nt"]
        idx = []
        for m in range(M):
            row = np.concatenate([_lanes_of(self.feature[a["src"] + nt * M + m], lanes) for nt in range(NT)])[:N]
            idx.append(int(np.argmax(row)))  # numpy returns the first maximum, as the RTL does
        for j in range(0, M, lanes):
            self.feature[a["dst"] + j // lanes] = _word_of(idx[j : j + lanes])
