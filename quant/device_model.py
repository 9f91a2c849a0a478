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
from .gate_map import cell_depth, entries_per_word, tables_from_entries
from .program import INSTR_WORDS, Instr, Op, decode_program
from .rnn import lstm_pointwise

__all__ = ["DeviceModel"]


def _lanes_of(word: int, lanes: int) -> np.ndarray:
    b = np.array([(word >> (8 * i)) & 0xFF for i in range(lanes)], dtype=np.int64)
    return np.where(b >= 128, b - 256, b)


def _word_of(values) -> int:
    w = 0
    for i, v in enumerate(values):
        w |= (int(v) & 0xFF) << (8 * i)
    return w


def _word16_of(values) -> int:
    w = 0
    for i, v in enumerate(values):
        w |= (int(v) & 0xFFFF) << (16 * i)
    return w


def _lanes16_of(word: int, lanes: int) -> np.ndarray:
    b = np.array([(word >> (16 * i)) & 0xFFFF for i in range(lanes)], dtype=np.int64)
    return np.where(b >= 1 << 15, b - (1 << 16), b)


class DeviceModel:
    """Memories and program execution of one NPU instance."""

    def __init__(self, config: NPUConfig, prog_depth: int = 256):
        self.config = config
        self.feature = [0] * config.act_depth
        self.weight = [0] * config.weight_depth
        self.channel = [0] * config.chan_depth
        self.program = [0] * prog_depth
        #: the gate unit: PWL address -> int16 entry (PWL_LOAD), cell state per (sequence * H + unit)
        self.pwl: dict[int, int] = {}
        self.cell = [0] * cell_depth(config)

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
        if ins.gate:  # int16 z, two words per row and N-tile
            y = requant(acc, bias, mult, shift, bits=16)
            y[:, N:] = 0
            h = C // 2
            for nt in range(NT):
                for m in range(M):
                    base = a["out_base"] + 2 * (nt * M + m)
                    self.feature[base] = _word16_of(y[m, nt * C : nt * C + h])
                    self.feature[base + 1] = _word16_of(y[m, nt * C + h : (nt + 1) * C])
            return
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

    def _op_pwl_load(self, ins: Instr) -> None:
        per = entries_per_word(self.config)
        for i in range(ins.args["count"]):
            word = self.feature[ins.args["src"] + i]
            for k in range(per):
                e = (word >> (32 * k)) & 0xFFFFFFFF
                self.pwl[e >> 16] = e & 0xFFFF

    def _op_lstm(self, ins: Instr) -> None:
        """A whole LSTM layer (see quant/program.py and docs/architecture.md), memory side effects included."""
        a, cfg = ins.args, self.config
        R, C = cfg.rows, cfg.cols
        M, H, T, XT = a["m"], a["hidden"], a["steps"], a["xt"]
        if 0 in (M, H, T):
            return
        if M * H > len(self.cell):
            raise ValueError(f"LSTM: {M} sequences x {H} units exceed the gate unit's {len(self.cell)} cells")
        HT, NT = -(-H // R), -(-4 * H // C)
        tables = tables_from_entries(cfg, self.pwl)
        for i in range(HT * M):  # h_0 = 0
            self.feature[a["h_base"] + i] = 0
        # a result row of an N-tile is two words of cols/2 int16 lanes: unit r of the tile is lanes
        # 4r .. 4r + 3 of the pair (one word holds cols/8 units from 8x8 on; at 4x4 a unit spans both)
        row_bits = 8 * C
        for t in range(T):
            for i in range(XT * M):  # x_t into the activation matrix
                self.feature[a["act_base"] + i] = self.feature[a["x_base"] + t * XT * M + i]
            gemm = {"m": M, "n": 4 * H, "kt": XT + HT, "nt": NT, "act_base": a["act_base"], "out_base": a["z_base"]}
            self._op_gemm(Instr(Op.GEMM, gemm | {"wgt_base": a["wgt_base"], "chan_base": a["chan_base"]}, gate=True))
            for m in range(M):
                z = np.zeros((4, H), dtype=np.int64)
                for j in range(H):
                    nt, r = divmod(j, C // 4)
                    base = a["z_base"] + 2 * (nt * M + m)
                    pair = self.feature[base] | self.feature[base + 1] << row_bits
                    z[:, j] = _lanes16_of(pair >> (64 * r), 4)
                c = np.array([0 if t == 0 else self.cell[m * H + j] for j in range(H)], dtype=np.int64)
                h, c2 = lstm_pointwise(z, c, tables, cfg.cell_frac_bits)
                self.cell[m * H : (m + 1) * H] = [int(v) for v in c2]
                for jt in range(HT):
                    self.feature[a["h_base"] + jt * M + m] = _word_of(h[jt * R : (jt + 1) * R])
