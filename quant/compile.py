"""The compiler side of the GEMM engine: place GEMMs in the device memories, refuse what cannot run.

A layer reaches the engine as one GEMM ``C[M, N] = requant(A[M, K] @ W[K, N] + b)``. Before any
word is uploaded, :func:`plan_gemm` checks that

* the accumulator cannot overflow: the worst case of the actual weights (or, without weights,
  of any ``K``-long reduction of the configured code width) fits ``config.acc_width`` bits,
* A, C, the weight tiles and the channel parameters fit their memories at the given bases,
* every count fits the command fields,

and raises :class:`CompileError` naming the resource that is short. Nothing is silently truncated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import codes as wcodes
from .config import NPUConfig
from .model import accumulator_range as _codes_range
from .tiling import tiles

__all__ = ["CompileError", "GemmPlan", "plan_gemm", "worst_case_accumulator", "accumulator_range"]

_FIELD_MAX = (1 << 16) - 1


class CompileError(ValueError):
    """A layer does not fit the device (memory, accumulator range or command fields)."""


@dataclass(frozen=True)
class GemmPlan:
    """Where one GEMM lives on the device and the command that runs it."""

    m: int
    k: int
    n: int
    kt: int
    nt: int
    act_base: int
    out_base: int
    wgt_base: int
    chan_base: int
    relu: bool

    @property
    def act_words(self) -> int:
        return self.kt * self.m

    @property
    def out_words(self) -> int:
        return self.nt * self.m

    def weight_words(self, config: NPUConfig) -> int:
        return self.kt * self.nt * config.rows

    def command(self) -> dict[str, int]:
        """The engine's ``GemmCommand`` fields."""
        return {
            "m": self.m,
            "kt": self.kt,
            "nt": self.nt,
            "n": self.n,
            "act_base": self.act_base,
            "out_base": self.out_base,
            "wgt_base": self.wgt_base,
            "chan_base": self.chan_base,
            "relu": int(self.relu),
        }


def accumulator_range(config: NPUConfig, k: int, w_codes=None) -> tuple[int, int]:
    """Exact lowest and highest sum an output can reach over int8 inputs (:func:`quant.model.accumulator_range`);
    without weights, any ``k``-long reduction of the configured code width: ``±k * 128 * max|w|``."""
    if w_codes is None:
        return -k * config.max_abs_product, k * config.max_abs_product
    w = np.asarray(w_codes)
    if w.ndim != 2 or w.shape[0] != k:
        raise CompileError(f"weights must be K x N = {k} x N, got shape {w.shape}")
    wcodes.decode(w, config.weight_bits)  # range check
    return _codes_range(w, config.weight_bits)


def worst_case_accumulator(config: NPUConfig, k: int, w_codes=None) -> int:
    """Largest |sum| one output can reach (the larger end of :func:`accumulator_range`)."""
    lo, hi = accumulator_range(config, k, w_codes)
    return max(-lo, hi)


def plan_gemm(
    config: NPUConfig,
    m: int,
    k: int,
    n: int,
    *,
    act_base: int = 0,
    out_base: int | None = None,
    wgt_base: int = 0,
    chan_base: int = 0,
    relu: bool = False,
    w_codes=None,
    what: str = "GEMM",
) -> GemmPlan:
    """Check one GEMM against ``config`` and place it; ``out_base`` defaults to right after A."""
    for name, v in (("M", m), ("K", k), ("N", n)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise CompileError(f"{what}: {name} must be a positive integer, got {v!r}")
    R, C = config.rows, config.cols
    kt, nt = tiles(k, R), tiles(n, C)
    if out_base is None:
        out_base = act_base + kt * m
    plan = GemmPlan(int(m), int(k), int(n), kt, nt, act_base, out_base, wgt_base, chan_base, bool(relu))

    lo, hi = accumulator_range(config, k, w_codes)
    a_lo, a_hi = -(1 << (config.acc_width - 1)), (1 << (config.acc_width - 1)) - 1
    if lo < a_lo or hi > a_hi:
        worst = lo if lo < a_lo else hi
        raise CompileError(
            f"{what}: accumulator overflow: a {k}-term reduction can reach {worst}, but the "
            f"{config.acc_width}-bit accumulator holds [{a_lo}, {a_hi}] (raise max_k, now {config.max_k})"
        )
    for name, v in (("M", m), ("N", n), ("K tiles", kt), ("N tiles", nt)):
        if v > _FIELD_MAX:
            raise CompileError(f"{what}: {name} = {v} exceeds the engine's 16-bit command field")

    def region(label: str, base: int, words: int, depth: int, mem: str) -> None:
        if base < 0 or base + words > depth:
            raise CompileError(
                f"{what}: {label} would take words {base}..{base + words - 1} of the {mem}, which has {depth} "
                f"({words} words needed)"
            )

    region("A", act_base, plan.act_words, config.act_depth, "feature memory")
    region("C", out_base, plan.out_words, config.act_depth, "feature memory")
    if act_base < out_base + plan.out_words and out_base < act_base + plan.act_words:
        raise CompileError(f"{what}: the result region overlaps the input region in the feature memory")
    region("the weight tiles", wgt_base, plan.weight_words(config), config.weight_depth, "weight memory")
    region("the channel parameters", chan_base, n, config.chan_depth, "channel memory")
    return plan
