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
        if x.dtype == np.uint64 and x.size and int(x.max()) >> 63:  # would wrap to negative int64
            raise ValueError(f"integer array value {int(x.max())} does not fit int64")
        return x.astype(np.int64, copy=False)
    return x


#: One integer: a Python int (bool included) or a numpy integer scalar.
_INTEGER = (int, np.integer)


def _is_array(x) -> bool:
    """An array or a sequence (list, tuple) of integers rather than one integer."""
    if isinstance(x, _INTEGER):  # the common scalar case, without np.ndim's cost
        return False
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
    scalar) integers are exact at any size. Arrays are int64 and computed without the sum
    ``x + 2**(n-1)``, which could leave int64 near its limits: ``y = x >> (n - 1)`` (``floor(x /
    2**(n-1))``), then ``(y + 1) >> 1``, which is the same value; only ``n = 1`` with ``x = 2**63 - 1``
    could wrap there, so ``n = 1`` takes ``y - (y >> 1)``. A shift of 64 or more rounds every int64 to 0.
    """
    if not _is_array(x) and not _is_array(n):
        x, n = _scalar(x), _scalar(n)
        if n < 0:
            raise ValueError(f"rshift_round: shift amount must be >= 0, got {n}")
        return x if n == 0 else (x + (1 << (n - 1))) >> n
    x = _array(x)
    if not _is_array(n):  # one shift for the whole array: the golden model's hot path
        n = _scalar(n)
        if n < 0:
            raise ValueError(f"rshift_round: shift amount must be >= 0, got {n}")
        if n == 0:
            return x
        y = x >> min(n - 1, 63)  # n >= 64: y is 0 or -1, and both round to 0 below
        if n == 1:
            return y - (y >> 1)
        y += 1
        y >>= 1
        return y
    n = _array(n)
    if np.any(n < 0):
        raise ValueError("rshift_round: shift amounts must be >= 0")
    # t = 0 where n = 0 makes the rounding step the identity; numpy's shifts by 64 or more are
    # undefined, and n - 1 clamped to 63 still rounds every int64 to 0 as above.
    t = (n > 0).astype(np.int64)
    y = x >> np.minimum(np.maximum(n - 1, 0), 63)
    if np.any(n == 1):  # where y + 1 could wrap: the sum-free floor(y / 2) + (y & 1)
        bit = y & t
        y >>= t
        y += bit
        return y
    y += t
    y >>= t
    return y


def sat_bounds(bits: int) -> tuple[int, int]:
    """The inclusive range of a ``bits``-wide two's complement integer."""
    if bits < 1:
        raise ValueError(f"sat: width must be >= 1, got {bits}")
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def sat(x, bits: int):
    """Clamp ``x`` to the signed ``bits``-wide range."""
    lo, hi = sat_bounds(bits)
    if isinstance(x, _INTEGER):  # a numpy scalar keeps its type, as before
        return min(max(x, lo), hi)
    if _is_array(x):
        return np.clip(_array(x), lo, hi)
    return min(max(_scalar(x), lo), hi)


def requant(acc, bias, M, n, *, relu: bool = False, bits: int = 8):
    """SPEC §3 output requantization: ``sat(rshift_round((acc + bias) * M, n), bits)``.

    With ``relu`` the low end is clamped to 0 (fused ReLU). ``bias``, ``M`` and ``n`` broadcast
    per output channel (the last axis of ``acc``).
    """
    if not (_is_array(acc) or _is_array(bias) or _is_array(M) or _is_array(n)):
        acc, bias, M, n = _scalar(acc), _scalar(bias), _scalar(M), _scalar(n)  # exact Python integers
        if not 0 <= M < 1 << M_BITS:
            raise ValueError(f"requant: M must be unsigned {M_BITS}-bit, got {M}")
        if not 0 <= n <= N_MAX:
            raise ValueError(f"requant: n must be in [0, {N_MAX}], got {n}")
        y = sat(rshift_round((acc + bias) * M, n), bits)
        return max(y, 0) if relu else y
    # Range checks on the parameters at their own (per-channel) shape, before they broadcast.
    M = _array(M) if _is_array(M) else _scalar(M)
    n = _array(n) if _is_array(n) else _scalar(n)
    if np.any(M < 0) or np.any(M >= 1 << M_BITS):
        raise ValueError(f"requant: M must be unsigned {M_BITS}-bit")
    if np.any(n < 0) or np.any(n > N_MAX):
        raise ValueError(f"requant: n must be in [0, {N_MAX}]")
    v = _array(acc) + (_array(bias) if _is_array(bias) else _scalar(bias))  # a new array: ours to overwrite
    if np.ndim(M) <= v.ndim and np.broadcast_shapes(v.shape, np.shape(M)) == v.shape:
        v *= M
    else:
        v = v * M
    y = rshift_round(v, n)  # a new array, or v itself for n = 0
    lo, hi = sat_bounds(bits)
    return np.clip(y, 0 if relu else lo, hi, out=y)


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
