"""The device's memory map as the host sees it: numbered regions of fixed-width words.

The host protocol (docs/protocol.md) addresses memory as ``(region, word address)``. Each region is
one memory of the design (activations, weights, outputs, ...), with its own word width and depth.
The default map is derived from :class:`~quant.config.NPUConfig`; a top level with more memories
(PWL tables, a program store) passes a longer list to the host interface, and the device reports
whatever map it was built with in its ``INFO`` reply, so the driver never assumes one.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import ConfigError, NPUConfig
from .tiling import CHANNEL_WORD_BITS

__all__ = ["Region", "default_memory_map", "npu_memory_map", "check_memory_map", "NPU_REGIONS"]

#: Region ids of the NPU top level (hw/npu.py), in memory-map order.
NPU_REGIONS = ("feature", "weight", "channel", "program")


@dataclass(frozen=True)
class Region:
    """One host-addressable memory.

    Parameters
    ----------
    name:
        Short ASCII name (at most 32 characters), e.g. ``"weight"``.
    width:
        Word width in bits (1..256). On the wire a word takes :attr:`word_bytes` bytes, little-endian.
    depth:
        Number of words; valid word addresses are ``0 .. depth - 1``.
    """

    name: str
    width: int
    depth: int

    @property
    def word_bytes(self) -> int:
        return (self.width + 7) // 8

    @property
    def addr_width(self) -> int:
        return max(1, (self.depth - 1).bit_length())


def default_memory_map(config: NPUConfig) -> tuple[Region, ...]:
    """The link test map: activation, weight and output buffers of ``mem_width`` bits (ids 0, 1, 2).

    The output buffer is ``chan_depth`` words deep. The NPU top level passes its own map (hw/npu.py).
    """
    return (
        Region("act", config.mem_width, config.act_depth),
        Region("weight", config.mem_width, config.weight_depth),
        Region("out", config.mem_width, config.chan_depth),
    )


def npu_memory_map(config: NPUConfig) -> tuple[Region, ...]:
    """The NPU's memories: feature (``rows`` int8 lanes), weight (one array row of codes),
    channel (bias | M << 32 | n << 48) and program (32-bit words), region ids 0..3."""
    return (
        Region("feature", 8 * config.rows, config.act_depth),
        Region("weight", config.cols * config.weight_bits, config.weight_depth),
        Region("channel", CHANNEL_WORD_BITS, config.chan_depth),
        Region("program", 32, config.prog_depth),
    )


def check_memory_map(regions) -> tuple[Region, ...]:
    """Validate a region list (names unique and ASCII, widths and depths in range)."""
    regions = tuple(regions)
    if not 1 <= len(regions) <= 255:
        raise ConfigError(f"a memory map needs 1..255 regions, got {len(regions)}")
    seen = set()
    for r in regions:
        if not isinstance(r, Region):
            raise ConfigError(f"memory map entries must be Region, got {type(r).__name__}")
        if not r.name or len(r.name) > 32 or not r.name.isascii() or r.name in seen:
            raise ConfigError(f"region name {r.name!r} must be unique, non-empty ASCII of at most 32 characters")
        if not 1 <= r.width <= 256:
            raise ConfigError(f"region {r.name!r}: width {r.width} out of range (1..256 bits)")
        if not 1 <= r.depth < 1 << 32:
            raise ConfigError(f"region {r.name!r}: depth {r.depth} out of range (1..2**32 - 1 words)")
        seen.add(r.name)
    return regions
