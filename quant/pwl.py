"""Piecewise-linear activation tables (SPEC §5): data structure, exact evaluation and fitting.

A :class:`PWLTable` holds ``N`` pieces over an int16 input grid:

* knots ``k_0 < k_1 < ... < k_N`` (int16, any spacing SPEC §5 allows); the input is clamped to
  ``[k_0, k_N]``;
* on segment ``i`` (``k_i <= z < k_{i+1}``, the last one closed) the output is
  ``sat(y_i + rshift_round(m_i * (z - k_i), S), 16)`` with ``y_i``, ``m_i`` int16 and ``S`` the
  table-wide slope shift.

The output is Q0.15. The input format is Q(15-F).F: Q3.12 for the gates, the cell format (Q4.11 by
default) for ``tanh(c)``. The hardware PWL unit computes ``z - k_i`` as int16 (one 16 x 16 multiply),
so it takes only tables whose offsets fit (:meth:`PWLTable.check_hardware`; every table :func:`fit`
makes with two or more pieces does, and loading any other into the hardware is refused).

Fitting (:func:`fit`, :func:`fit_sigmoid`, :func:`fit_tanh`) is greedy recursive knot insertion on the
integer grid: start with the two end points, then repeatedly take the segment whose (optionally
histogram-weighted) integer error is largest and split it where the error of the chord through its
end points is largest, until there are ``N`` pieces. Every segment is fitted with integers: the
rounded chord slope and its two neighbours are tried, each with the offset ``y_i`` that centres the
error, and the one with the smallest maximum error is kept.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .fixed import rshift_round, sat

__all__ = [
    "PWLTable",
    "INT16_MIN",
    "INT16_MAX",
    "OUT_FRAC_BITS",
    "target",
    "fit",
    "fit_sigmoid",
    "fit_tanh",
    "error_stats",
    "MAX_SPAN",
    "hardware_span_limits",
]

INT16_MIN, INT16_MAX = -(1 << 15), (1 << 15) - 1
#: Longest segment (k_{i+1} - k_i) :func:`fit` makes: keeps z - k_i within int16 in every segment, so
#: m_i * (z - k_i) is one 16 x 16 multiply in the hardware (:meth:`PWLTable.check_hardware`).
MAX_SPAN = INT16_MAX


def hardware_span_limits(pieces: int) -> list[int]:
    """Longest span ``k_{i+1} - k_i`` of each segment that the hardware PWL unit evaluates exactly.

    The unit computes ``d = clamp(z, k_i, k_{i+1}) - k_i`` as int16. On a half-open segment
    (``k_i <= z < k_{i+1}``) ``d`` reaches ``span - 1``, so the span may be 2**15; on the last, closed
    one ``d`` reaches the span itself, so at most 2**15 - 1.
    """
    return [INT16_MAX + 1] * (pieces - 1) + [INT16_MAX]


#: The output of every table is Q0.15.
OUT_FRAC_BITS = 15

_FUNCS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "tanh": np.tanh,
}


def _is_int16(a: np.ndarray) -> bool:
    return bool(np.all(a >= INT16_MIN) and np.all(a <= INT16_MAX))


@dataclass(frozen=True, eq=False)
class PWLTable:
    """One PWL table: ``knots`` (N+1), ``y`` (N), ``m`` (N) as int64 arrays of int16 values, ``shift`` S.

    ``func`` and ``in_frac_bits`` record what the table approximates (informational; evaluation does
    not use them).
    """

    knots: np.ndarray
    y: np.ndarray
    m: np.ndarray
    shift: int
    func: str = ""
    in_frac_bits: int = 12

    def __post_init__(self) -> None:
        for name in ("knots", "y", "m"):
            a = np.asarray(getattr(self, name))
            if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
                raise ValueError(f"PWLTable.{name} must be a 1-D integer array")
            object.__setattr__(self, name, a.astype(np.int64))
        self.validate()

    @property
    def pieces(self) -> int:
        return len(self.y)

    def validate(self) -> None:
        """Raise ``ValueError`` unless the table is well formed (SPEC §5)."""
        n = len(self.y)
        if n < 1:
            raise ValueError("PWL table needs at least one piece")
        if len(self.knots) != n + 1 or len(self.m) != n:
            raise ValueError(
                f"PWL table with {n} pieces needs {n + 1} knots and {n} slopes, got {len(self.knots)} and {len(self.m)}"
            )
        for name in ("knots", "y", "m"):
            if not _is_int16(getattr(self, name)):
                raise ValueError(f"PWL table {name} must lie within int16")
        if np.any(np.diff(self.knots) <= 0):
            raise ValueError("PWL table knots must be strictly increasing")
        if not 0 <= int(self.shift) <= 30:
            raise ValueError(f"PWL table shift must be in [0, 30], got {self.shift}")

    def check_hardware(self) -> None:
        """Raise ``ValueError`` unless the hardware PWL unit evaluates this table exactly.

        SPEC §5 allows any int16 knots; the unit's offset ``z - k_i`` is int16, which bounds each
        segment's span (:func:`hardware_span_limits`). Tables from :func:`fit` always pass.
        """
        spans = np.diff(self.knots)
        for i, (span, lim) in enumerate(zip(spans, hardware_span_limits(self.pieces), strict=True)):
            if span > lim:
                raise ValueError(
                    f"PWL segment {i} spans {int(span)} inputs ({int(self.knots[i])} .. {int(self.knots[i + 1])}); "
                    f"the hardware PWL unit's int16 offset z - k_i allows at most {lim} there (split the segment)"
                )

    # -- evaluation (SPEC §5) --------------------------------------------------------------------

    def segment(self, z):
        """Clamped input and segment index: the number of knots ``k_1 .. k_{N-1}`` that are ``<= z``."""
        zc = np.clip(np.asarray(z, dtype=np.int64), self.knots[0], self.knots[-1])
        idx = np.searchsorted(self.knots[1:-1], zc, side="right")
        return zc, idx

    def __call__(self, z):
        """Evaluate exactly as the hardware does; accepts an int or an integer array."""
        scalar = np.isscalar(z) or np.ndim(z) == 0
        zc, i = self.segment(z)
        out = sat(self.y[i] + rshift_round(self.m[i] * (zc - self.knots[i]), int(self.shift)), 16)
        return int(out) if scalar else out

    evaluate = __call__

    # -- model file ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "knots": [int(v) for v in self.knots],
            "y": [int(v) for v in self.y],
            "m": [int(v) for v in self.m],
            "shift": int(self.shift),
            "func": self.func,
            "in_frac_bits": int(self.in_frac_bits),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PWLTable:
        try:
            return cls(
                knots=np.array(d["knots"], dtype=np.int64),
                y=np.array(d["y"], dtype=np.int64),
                m=np.array(d["m"], dtype=np.int64),
                shift=int(d["shift"]),
                func=str(d.get("func", "")),
                in_frac_bits=int(d.get("in_frac_bits", 12)),
            )
        except KeyError as e:
            raise ValueError(f"PWL table dict is missing {e.args[0]!r}") from None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PWLTable):
            return NotImplemented
        return (
            np.array_equal(self.knots, other.knots)
            and np.array_equal(self.y, other.y)
            and np.array_equal(self.m, other.m)
            and self.shift == other.shift
        )

    __hash__ = None  # type: ignore[assignment]


def target(func: str, in_frac_bits: int, z=None) -> np.ndarray:
    """The exact integer function a table approximates: ``sat(round_half_up(f(z / 2**F) * 2**15), 16)``.

    ``z`` defaults to the whole int16 grid.
    """
    if func not in _FUNCS:
        raise ValueError(f"unknown PWL function {func!r}; choose one of {', '.join(_FUNCS)}")
    if not 0 <= in_frac_bits <= 15:
        raise ValueError(f"in_frac_bits must be in [0, 15], got {in_frac_bits}")
    if z is None:
        z = np.arange(INT16_MIN, INT16_MAX + 1, dtype=np.int64)
    x = np.asarray(z, dtype=np.float64) / (1 << in_frac_bits)
    return sat(np.floor(_FUNCS[func](x) * (1 << OUT_FRAC_BITS) + 0.5).astype(np.int64), 16)


def _best_offset(e: np.ndarray, w: np.ndarray | None) -> int:
    """Integer offset y minimizing max(w * |e - y|) (plain minimax when ``w`` is None)."""
    lo, hi = int(e.min()), int(e.max())
    if w is None:
        return int(math.floor((lo + hi) / 2 + 0.5))
    # max(w |e - y|) is convex in y: ternary search on the integers
    while hi - lo > 2:
        a, b = lo + (hi - lo) // 3, hi - (hi - lo) // 3
        if np.max(w * np.abs(e - a)) <= np.max(w * np.abs(e - b)):
            hi = b
        else:
            lo = a
    return min(range(lo, hi + 1), key=lambda y: float(np.max(w * np.abs(e - y))))


def _fit_segment(zs: np.ndarray, ts: np.ndarray, shift: int, ws: np.ndarray | None = None) -> tuple[int, int, float]:
    """Integer (y, m) for one segment and its (weighted) max |error|; zs starts at the segment's knot.

    Slopes tried: the rounded chord slope (and, with weights, the weighted least-squares slope), each
    with its two integer neighbours; each with the best offset; the smallest error wins.
    """
    a = int(zs[0])
    d = zs - a
    slopes = [0.0]
    if len(zs) > 1:
        slopes = [(float(ts[-1]) - float(ts[0])) / float(zs[-1] - a)]
        if ws is not None:
            wsum = ws.sum()
            dm, tm = (ws * d).sum() / wsum, (ws * ts).sum() / wsum
            var = (ws * (d - dm) ** 2).sum()
            if var > 0:
                slopes.append(float((ws * (d - dm) * (ts - tm)).sum() / var))
    cands = set()
    for sl in slopes:
        m0 = int(math.floor(sl * (1 << shift) + 0.5))
        cands |= {min(max(m0 + dm, INT16_MIN), INT16_MAX) for dm in (-1, 0, 1)}
    best = None
    for m in sorted(cands):
        base = rshift_round(m * d, shift)
        e = ts - base
        y = min(max(_best_offset(e, ws), INT16_MIN), INT16_MAX)
        err = np.abs(ts - sat(y + base, 16))
        score = float(np.max(err if ws is None else err * ws))
        if best is None or score < best[2]:
            best = (y, m, score)
    return best


def fit(
    func: str,
    pieces: int,
    *,
    in_frac_bits: int = 12,
    shift: int = 11,
    hist: np.ndarray | None = None,
    lo: int = INT16_MIN,
    hi: int = INT16_MAX,
) -> PWLTable:
    """Fit a ``pieces``-piece table of ``func`` ("sigmoid" or "tanh") by greedy knot insertion.

    Parameters
    ----------
    func, in_frac_bits:
        The function and the input format Q(15-F).F.
    pieces:
        Number of pieces N (the table may have fewer if every segment is exact).
    shift:
        Table-wide slope shift S.
    hist:
        Optional counts of observed inputs, one per int16 value (length 65536, index ``z + 32768``).
        With it the fit is *adaptive*: a segment's error is weighted by ``hist / hist.max() + 1e-3``
        so knots go where the data lies while unobserved inputs still count a little.
    lo, hi:
        End knots ``k_0`` and ``k_N`` (the clamp range); the full int16 range by default.
    """
    if pieces < 1:
        raise ValueError(f"pieces must be >= 1, got {pieces}")
    if not INT16_MIN <= lo < hi <= INT16_MAX:
        raise ValueError(f"need int16 end knots lo < hi, got {lo}, {hi}")
    if not 0 <= shift <= 30:
        raise ValueError(f"shift must be in [0, 30], got {shift}")
    grid = np.arange(INT16_MIN, INT16_MAX + 1, dtype=np.int64)
    t_all = target(func, in_frac_bits, grid)
    weighted = hist is not None
    if hist is None:
        w_all = np.ones(len(grid))
    else:
        h = np.asarray(hist, dtype=np.float64)
        if h.shape != grid.shape or np.any(h < 0) or not np.isfinite(h).all():
            raise ValueError("hist must hold 65536 non-negative counts (index z + 32768)")
        w_all = h / h.max() + 1e-3 if h.max() > 0 else np.ones(len(grid))

    def dom(a: int, b: int, last: bool) -> slice:
        # evaluation domain of the segment [a, b): b itself only for the last segment
        return slice(a - INT16_MIN, b - INT16_MIN + (1 if last else 0))

    cache: dict[tuple[int, int, bool], tuple[float, int | None]] = {}

    def seg_score(a: int, b: int, last: bool) -> tuple[float, int | None]:
        if (a, b, last) not in cache:
            cache[(a, b, last)] = _seg_score(a, b, last)
        return cache[(a, b, last)]

    def _seg_score(a: int, b: int, last: bool) -> tuple[float, int | None]:
        s = dom(a, b, last)
        zs, ts, ws = grid[s], t_all[s], w_all[s]
        y, m, score = _fit_segment(zs, ts, shift, ws if weighted else None)
        err = np.abs(ts - sat(y + rshift_round(m * (zs - a), shift), 16))
        # split where the chord through the segment's end points is furthest from the target
        zz, tt = grid[a - INT16_MIN : b - INT16_MIN + 1], t_all[a - INT16_MIN : b - INT16_MIN + 1]
        if len(zz) < 3:
            return score, None
        chord = tt[0] + (tt[-1] - tt[0]) * (zz - a) / float(b - a)
        dev = np.abs(tt - chord) * w_all[a - INT16_MIN : b - INT16_MIN + 1]
        dev[0] = dev[-1] = -1.0
        p = int(zz[int(np.argmax(dev))])
        if dev.max() <= 0:  # straight: split where the fitted error is largest instead
            e2 = err * ws
            e2[0] = -1.0
            if len(e2) and e2.argmax() > 0 and zs[e2.argmax()] < b:
                p = int(zs[int(e2.argmax())])
            else:
                p = (a + b) // 2
        return score, p

    knots = [lo, hi]
    while len(knots) - 1 < pieces:
        scores = [seg_score(knots[i], knots[i + 1], i == len(knots) - 2) for i in range(len(knots) - 1)]
        order = sorted(range(len(scores)), key=lambda i: -scores[i][0])
        # a segment longer than MAX_SPAN must be split first, whatever its error
        too_long = [i for i in range(len(knots) - 1) if knots[i + 1] - knots[i] > MAX_SPAN]
        order = too_long + [i for i in order if i not in too_long]
        for i in order:
            score, p = scores[i]
            if p is not None and knots[i] < p < knots[i + 1]:
                break
        else:
            break
        if score <= 0 and not too_long:
            break
        if i in too_long and len(knots) == pieces:
            # the last knot splits a segment too long for the hardware: place it so that both halves
            # fit (a half-open segment may span 2**15, the last, closed one 2**15 - 1) when they can
            a, b = knots[i], knots[i + 1]
            left_max, right_max = a + INT16_MAX + 1, b - (INT16_MAX if i == len(knots) - 2 else INT16_MAX + 1)
            if right_max <= left_max:
                p = min(max(p, right_max), left_max)
        knots.insert(i + 1, p)

    ys, ms = [], []
    for i in range(len(knots) - 1):
        s = dom(knots[i], knots[i + 1], i == len(knots) - 2)
        y, m, _ = _fit_segment(grid[s], t_all[s], shift, w_all[s] if weighted else None)
        ys.append(y)
        ms.append(m)
    return PWLTable(np.array(knots), np.array(ys), np.array(ms), shift, func=func, in_frac_bits=in_frac_bits)


def fit_sigmoid(pieces: int = 16, *, in_frac_bits: int = 12, shift: int = 11, **kw: Any) -> PWLTable:
    """Sigmoid table on Q(15-F).F inputs (Q3.12 for the gates)."""
    return fit("sigmoid", pieces, in_frac_bits=in_frac_bits, shift=shift, **kw)


def fit_tanh(pieces: int = 16, *, in_frac_bits: int = 12, shift: int = 11, **kw: Any) -> PWLTable:
    """Tanh table on Q(15-F).F inputs (Q3.12 for the gates, the cell format for ``tanh(c)``)."""
    return fit("tanh", pieces, in_frac_bits=in_frac_bits, shift=shift, **kw)


def error_stats(table: PWLTable, func: str | None = None, in_frac_bits: int | None = None) -> tuple[int, float]:
    """Max and mean |table(z) - target(z)| in output LSBs over the whole int16 input range."""
    func = func or table.func
    f = table.in_frac_bits if in_frac_bits is None else in_frac_bits
    z = np.arange(INT16_MIN, INT16_MAX + 1, dtype=np.int64)
    e = np.abs(table(z) - target(func, f, z))
    return int(e.max()), float(e.mean())
