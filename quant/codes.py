"""DenseShift weight codes (SPEC §2) and their packing into memory words.

A ``b``-bit code (``b`` in {2, 3, 4}) stores a sign in its top bit (1 = negative) and an exponent
``k`` in its low ``b - 1`` bits; its value is ``(-1)**sign * 2**k``. Every code is non-zero.

The int8 baseline reuses the same packing with ``bits = 8``: a code is then the two's complement
byte of the weight itself.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "SHIFT_BITS",
    "INT8_BITS",
    "k_max",
    "code_count",
    "all_codes",
    "encode",
    "decode",
    "max_abs_weight",
    "pack",
    "unpack",
]

#: Bit widths of DenseShift codes.
SHIFT_BITS = (2, 3, 4)
#: The int8 baseline weight width.
INT8_BITS = 8


def _check_bits(bits: int, *, allow_int8: bool = False) -> None:
    ok = SHIFT_BITS + ((INT8_BITS,) if allow_int8 else ())
    if bits not in ok:
        raise ValueError(f"weight bits must be one of {ok}, got {bits!r}")


def k_max(bits: int) -> int:
    """Largest exponent of a ``bits``-wide DenseShift code: ``2**(bits-1) - 1``."""
    _check_bits(bits)
    return (1 << (bits - 1)) - 1


def code_count(bits: int) -> int:
    """Number of distinct codes (all of them non-zero)."""
    _check_bits(bits, allow_int8=True)
    return 1 << bits


def all_codes(bits: int) -> np.ndarray:
    """Every code of the given width, in code order."""
    return np.arange(code_count(bits), dtype=np.int64)


def max_abs_weight(bits: int) -> int:
    """Largest |weight| a code of this width can take (128 for int8: -128 is a valid weight)."""
    if bits == INT8_BITS:
        return 128
    return 1 << k_max(bits)


def encode(values, bits: int) -> np.ndarray:
    """Encode real weights as ``bits``-wide DenseShift codes.

    The exponent is the nearest power of two in the log domain (``round(log2|v|)``), clamped to the
    code range; zero (and anything tiny) becomes +1, since there is no zero code.
    For ``bits = 8`` the values are rounded to nearest (ties to even, as ``numpy.rint``) and
    saturated to [-128, 127], then stored as two's complement bytes.
    """
    v = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(v)):
        raise ValueError("encode: weights must be finite")
    if bits == INT8_BITS:
        q = np.clip(np.rint(v), -128, 127).astype(np.int64)
        return q & 0xFF
    _check_bits(bits)
    sign = (v < 0).astype(np.int64)
    mag = np.abs(v)
    with np.errstate(divide="ignore"):
        k = np.where(mag > 0, np.rint(np.log2(np.where(mag > 0, mag, 1.0))), 0.0)
    k = np.clip(k, 0, k_max(bits)).astype(np.int64)
    return (sign << (bits - 1)) | k


def decode(codes, bits: int) -> np.ndarray:
    """Integer weight values of ``bits``-wide codes (int64)."""
    c = np.asarray(codes, dtype=np.int64)
    if np.any(c < 0) or np.any(c >= code_count(bits)):
        raise ValueError(f"decode: codes must be in [0, {code_count(bits) - 1}] for {bits}-bit weights")
    if bits == INT8_BITS:
        return np.where(c >= 128, c - 256, c)
    _check_bits(bits)
    sign = c >> (bits - 1)
    k = c & ((1 << (bits - 1)) - 1)
    return np.where(sign == 1, -(1 << k), 1 << k)


def pack(codes, bits: int, word_width: int) -> np.ndarray:
    """Pack codes into memory words, little-endian: code ``i`` of a word sits at bits ``[i*bits, (i+1)*bits)``.

    ``word_width // bits`` codes go in each word; the last word is zero-padded. Returns an array of
    Python ints (object dtype when the word is wider than 63 bits, int64 otherwise).
    """
    _check_bits(bits, allow_int8=True)
    if word_width < bits:
        raise ValueError(f"pack: word width {word_width} is narrower than a {bits}-bit code")
    c = np.asarray(codes, dtype=np.int64).ravel()
    if np.any(c < 0) or np.any(c >= 1 << bits):
        raise ValueError(f"pack: codes must be in [0, {(1 << bits) - 1}]")
    per_word = word_width // bits
    n_words = -(-len(c) // per_word)
    words = []
    for w in range(n_words):
        word = 0
        for i, code in enumerate(c[w * per_word : (w + 1) * per_word]):
            word |= int(code) << (i * bits)
        words.append(word)
    return np.array(words, dtype=object if word_width > 63 else np.int64)


def unpack(words, bits: int, word_width: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack`: the first ``count`` codes stored in ``words``."""
    _check_bits(bits, allow_int8=True)
    per_word = word_width // bits
    words = list(words)
    if count > len(words) * per_word:
        raise ValueError(f"unpack: {count} codes asked for, but {len(words)} words hold only {len(words) * per_word}")
    mask = (1 << bits) - 1
    out = np.empty(count, dtype=np.int64)
    for i in range(count):
        out[i] = (int(words[i // per_word]) >> ((i % per_word) * bits)) & mask
    return out
