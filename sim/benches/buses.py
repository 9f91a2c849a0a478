"""Packing helpers for Amaranth array ports seen from cocotb (one flat vector per port)."""

from __future__ import annotations

__all__ = ["pack_ints", "unpack_signed", "unpack_unsigned"]


def pack_ints(values, width: int) -> int:
    """Element ``i`` goes to bits ``[i*width, (i+1)*width)`` (two's complement for negatives)."""
    mask = (1 << width) - 1
    word = 0
    for i, v in enumerate(values):
        word |= (int(v) & mask) << (i * width)
    return word


def unpack_unsigned(word: int, width: int, count: int) -> list[int]:
    mask = (1 << width) - 1
    return [(word >> (i * width)) & mask for i in range(count)]


def unpack_signed(word: int, width: int, count: int) -> list[int]:
    half = 1 << (width - 1)
    return [v - (1 << width) if v >= half else v for v in unpack_unsigned(word, width, count)]
