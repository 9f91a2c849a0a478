"""The one rounding rule of shiftnpu (SPEC §1) and the requantizer built on it (SPEC §3).

Every rescale in the design -- golden model, RTL and training -- goes through
:func:`rshift_round` and :func:`sat`. The functions accept Python integers or
numpy integer arrays (int64 is used internally so that ``(acc + bias) * M``
cannot wrap: |acc + bias| < 2**33 and M < 2**16 leave plenty of headroom).
"""

from __future__ import annotations

import math
import operator
from typing import overload

import numpy as np

__all__ = [
    "rshift_round",
    "sat",
    "sat_bounds",
    "requant",
    "quantize_multiplier",
    "signed_width",
    "M_BITS",
    "N_MAX",
]

#: Width of the unsigned requantization multiplier ``M`` (SPEC §3).
M_BITS = 16
#: Largest requantization shift ``n`` (SPEC §3).
N_MAX = 63


def _as_int64(x):
    if isinstance(x, np.ndarray):
        if not np.issubdtype(x.dtype, np.integer):
            raise TypeError(f"expected an integer array, got dtype {x.dtype}")
        return x.astype(np.int64, copy=False)
    return x


def _is_array(x) -> bool:
    """An array or a sequence (list, tuple) of integers rather than one integer."""
    return isinstance(x, np.ndarray) or np.ndim(x) > 0


def _array(x) -> np.ndarray:
    return _as_int64(np.asarray(x)).astype(np.int64, copy=False)


def _scalar(x) -> int:
    """One integer as an exact Python int (a float is refused, not truncated)."""
    return operator.index(x)


@overload
def rshift_round(x: int, n: int) -> int: ...
@overload
def rshift_round(x: np.ndarray, n: int | np.ndarray) -> np.ndarray: ...
def rshift_round(x, n):
    """Arithmetic right shift by ``n`` rounding half up: ``(x + 2**(n-1)) >> n``; ``n = 0`` is identity.

    ``n`` may be a scalar or (for arrays) an array broadcastable against ``x``. Python (and numpy
    scalar) integers are exact at any size. Arrays are int64 and computed as ``floor(x / 2**n)`` plus
    bit ``n - 1`` of ``x``, the same value without the sum ``x + 2**(n-1)``, which could leave int64
    near its limits; a shift of 64 or more rounds every int64 to 0.
    """
    if not _is_array(x) and not _is_array(n):
        x, n = _scalar(x), _scalar(n)
        if n < 0:
            raise ValueError(f"rshift_round: shift amount must be >= 0, got {n}")
        return x if n == 0 else (x + (1 << (n - 1))) >> n
    x, n = _array(x), _array(n)
    if np.any(n < 0):
        raise ValueError("rshift_round: shift amounts must be >= 0")
    s = np.minimum(n, 63)
    rounded = (x >> s) + ((x >> np.maximum(s - 1, 0)) & 1)
    return np.where(n == 0, x, np.where(n >= 64, 0, rounded))


def sat_bounds(bits: int) -> tuple[int, int]:
    """The inclusive range of a ``bits``-wide two's complement integer."""
    if bits < 1:
        raise ValueError(f"sat: width must be >= 1, got {bits}")
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def sat(x, bits: int):
    """Clamp ``x`` to the signed ``bits``-wide range."""
    lo, hi = sat_bounds(bits)
    if _is_array(x):
        return np.clip(_array(x), lo, hi)
    if isinstance(x, np.integer):  # keeps its numpy type, as before
        return min(max(x, lo), hi)
    return min(max(_scalar(x), lo), hi)


def requant(acc, bias, M, n, *, relu: bool = False, bits: int = 8):
    """SPEC §3 output requantization: ``sat(rshift_round((acc + bias) * M, n), bits)``.

    With ``relu`` the low end is clamped to 0 (fused ReLU). ``bias``, ``M`` and ``n`` broadcast
    per output channel (the last axis of ``acc``).
    """
    if any(_is_array(v) for v in (acc, bias, M, n)):
        acc, bias, M, n = np.broadcast_arrays(*(_array(v) for v in (acc, bias, M, n)))
        if np.any(M < 0) or np.any(M >= 1 << M_BITS):
            raise ValueError(f"requant: M must be unsigned {M_BITS}-bit")
        if np.any(n < 0) or np.any(n > N_MAX):
            raise ValueError(f"requant: n must be in [0, {N_MAX}]")
        y = sat(rshift_round((acc + bias) * M, n), bits)
        return np.maximum(y, 0) if relu else y
    acc, bias, M, n = (_scalar(v) for v in (acc, bias, M, n))  # exact Python integers for scalars
    if not 0 <= M < 1 << M_BITS:
        raise ValueError(f"requant: M must be unsigned {M_BITS}-bit, got {M}")
    if not 0 <= n <= N_MAX:
        raise ValueError(f"requant: n must be in [0, {N_MAX}], got {n}")
    y = sat(rshift_round((acc + bias) * M, n), bits)
    return max(y, 0) if relu else y


def quantize_multiplier(scale: float) -> tuple[int, int]:
    """Represent a positive real ``scale`` as ``M * 2**-n`` with ``M`` unsigned 16-bit and ``n`` in [0, 63].

    Picks the largest ``n`` (the best precision) for which ``M = round(scale * 2**n)`` still fits in
    16 bits, so that for any scale in [2**-48, 65535] ``M`` has its top bit set (relative error
    <= 2**-16). Raises ``ValueError`` for a scale that is not positive and finite, or too large
    (> 65535.5) to be represented; a scale below 2**-64 would give ``M = 0`` and is refused too.
    """
    scale = float(scale)
    if not math.isfinite(scale) or scale <= 0.0:
        raise ValueError(f"quantize_multiplier: scale must be positive and finite, got {scale!r}")
    m_max = (1 << M_BITS) - 1
    mant, exp = math.frexp(scale)  # scale = mant * 2**exp, mant in [0.5, 1)
    # Want M = scale * 2**n in [2**15, 2**16): n = M_BITS - exp.
    n = M_BITS - exp
    n = min(max(n, 0), N_MAX)
    M = _round_half_up(scale, n)
    if M > m_max:  # rounding carried into bit 16
        if n == 0:
            raise ValueError(f"quantize_multiplier: scale {scale!r} exceeds {m_max} (M is {M_BITS}-bit)")
        n -= 1
        M = _round_half_up(scale, n)
    if M == 0:
        raise ValueError(f"quantize_multiplier: scale {scale!r} is too small for n <= {N_MAX}")
    return M, n


def _round_half_up(scale: float, n: int) -> int:
    # Exact: a float times a power of two is exact, and Fraction avoids double rounding.
    from fractions import Fraction

    v = Fraction(scale) * (1 << n)
    return math.floor(v + Fraction(1, 2))


def signed_width(lo: int, hi: int) -> int:
    """Smallest two's complement width that holds every integer in [lo, hi]."""
    if lo > hi:
        raise ValueError("signed_width: empty range")
    bits = 1
    while not (-(1 << (bits - 1)) <= lo and hi <= (1 << (bits - 1)) - 1):
        bits += 1
    return bits
