"""The one configuration object of a shiftnpu build (SPEC §6).

The RTL is elaborated from an :class:`NPUConfig`, the golden model and the packer read it, the
device reports it over the host protocol, and the driver compares the two. Everything derived from
the parameters (accumulator width, codes per memory word, ...) is a property here, so no other part
of the project recomputes it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, fields
from typing import Any

from . import codes
from .fixed import signed_width

__all__ = ["NPUConfig", "ConfigError", "PE_KINDS"]

#: PE flavours: DenseShift shift-accumulate, or the int8 multiply-accumulate baseline.
PE_KINDS = ("shift", "int8")


class ConfigError(ValueError):
    """A configuration parameter is invalid, or two configurations do not match."""


@dataclass(frozen=True)
class NPUConfig:
    """Generator parameters of one shiftnpu instance.

    Parameters
    ----------
    rows, cols:
        Systolic array size: ``rows`` is the reduction (K) dimension of one pass, ``cols`` the
        number of output channels computed at once.
    weight_bits:
        DenseShift code width (2, 3 or 4), or 8 for the int8 baseline PE.
    max_k:
        Longest reduction the accumulator must hold without overflow; sets :attr:`acc_width`.
    act_depth:
        Depth of the feature memory (activations in, results out), in words of ``rows`` int8.
    weight_depth:
        Depth of the weight memory, in words of one array row (``cols`` codes).
    chan_depth:
        Output channels whose (bias, M, n) the channel memory holds.
    prog_depth:
        Depth of the layer-program memory, in 32-bit words (six per instruction).
    m_block:
        Rows of A per accumulator bank; the accumulator memory holds two banks (double-buffered),
        so one block drains through the requantizer while the next accumulates.
    mem_width:
        Width of a weight-memory word in bits (codes are packed little-endian into it).
    pwl_pieces, pwl_shift:
        Pieces N of each PWL activation table and its table-wide slope shift S (SPEC §5). S = 11
        lets the steepest slope, tanh on a Q4.11 cell (16 output LSBs per input LSB), fit an int16
        ``m`` (16 * 2**11 = 32768, and every chord is a little flatter); S = 12 would clamp it.
    cell_frac_bits:
        Fractional bits of the int16 LSTM cell state (11 = Q4.11, SPEC §4).
    clk_hz, baud:
        Design clock and UART baud rate.
    protocol_version:
        Version of the host protocol the device speaks.
    max_payload:
        Largest request payload (bytes) the device's host interface buffers; also the largest
        memory read it answers in one reply (docs/protocol.md).
    """

    rows: int = 8
    cols: int = 8
    weight_bits: int = 3
    max_k: int = 1024
    act_depth: int = 1024
    weight_depth: int = 1024
    chan_depth: int = 256
    m_block: int = 128
    prog_depth: int = 256
    mem_width: int = 32
    pwl_pieces: int = 16
    pwl_shift: int = 11
    cell_frac_bits: int = 11
    clk_hz: int = 40_000_000
    baud: int = 115_200
    protocol_version: int = 1
    max_payload: int = 256

    # Fixed by SPEC; kept as class constants rather than parameters.
    ACT_BITS = 8
    BIAS_BITS = 32
    M_BITS = 16
    GATE_BITS = 16
    GATE_FRAC_BITS = 12
    ACTIVATION_FRAC_BITS = 15

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, int) or isinstance(v, bool):
                raise ConfigError(f"config field {f.name!r} must be an int, got {v!r}")
            if v >= 1 << 32:  # the device reports every field as a u32 (INFO, docs/protocol.md)
                raise ConfigError(f"config field {f.name!r} is {v}, more than the 32 bits it is reported in")
        if not 1 <= self.rows <= 64 or not 1 <= self.cols <= 64:
            raise ConfigError(f"array size {self.rows}x{self.cols} out of range (1..64 each)")
        if self.weight_bits not in codes.SHIFT_BITS + (codes.INT8_BITS,):
            raise ConfigError(f"weight_bits must be 2, 3, 4 (DenseShift) or 8 (int8 baseline), got {self.weight_bits}")
        if self.max_k < self.rows:
            raise ConfigError(f"max_k ({self.max_k}) must be at least rows ({self.rows})")
        for name in ("act_depth", "weight_depth", "chan_depth", "m_block", "prog_depth"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be positive")
        if self.mem_width < self.weight_bits or self.mem_width > 64:
            raise ConfigError(f"mem_width must be in [{self.weight_bits}, 64], got {self.mem_width}")
        if not 2 <= self.pwl_pieces <= 256:
            raise ConfigError(f"pwl_pieces must be in [2, 256], got {self.pwl_pieces}")
        if not 0 <= self.pwl_shift <= 30:
            raise ConfigError(f"pwl_shift must be in [0, 30], got {self.pwl_shift}")
        if not 0 <= self.cell_frac_bits <= 15:
            raise ConfigError(f"cell_frac_bits must be in [0, 15], got {self.cell_frac_bits}")
        if self.clk_hz <= 0 or self.baud <= 0 or self.clk_hz < 4 * self.baud:
            raise ConfigError(f"clock {self.clk_hz} Hz is too slow for {self.baud} baud (need >= 4x)")
        if self.protocol_version < 1:
            raise ConfigError("protocol_version must be >= 1")
        if not 16 <= self.max_payload <= 65535:
            raise ConfigError(f"max_payload must be in [16, 65535] bytes, got {self.max_payload}")

    # -- derived facts ---------------------------------------------------------------------------

    @property
    def pe_kind(self) -> str:
        """``"shift"`` for DenseShift codes, ``"int8"`` for the multiplier baseline."""
        return "int8" if self.weight_bits == codes.INT8_BITS else "shift"

    @property
    def max_abs_product(self) -> int:
        """Largest |a * w| of one PE: |a| <= 128 times the largest |w|."""
        return 128 * codes.max_abs_weight(self.weight_bits)

    @property
    def product_width(self) -> int:
        """Signed width of one PE product."""
        m = self.max_abs_product
        return signed_width(-m, m)

    def partial_sum_width(self, n_products: int) -> int:
        """Signed width of a sum of ``n_products`` PE products (1 for an empty sum)."""
        if n_products <= 0:
            return 1
        m = n_products * self.max_abs_product
        return signed_width(-m, m)

    @property
    def array_sum_width(self) -> int:
        """Width of one column sum leaving the array (``rows`` products); passes accumulate outside."""
        return self.partial_sum_width(self.rows)

    @property
    def acc_width(self) -> int:
        """Signed accumulator width that holds any sum of ``max_k`` products without overflow."""
        m = self.max_k * self.max_abs_product
        return signed_width(-m, m)

    @property
    def codes_per_word(self) -> int:
        """Weight codes per memory word."""
        return self.mem_width // self.weight_bits

    @property
    def pe_count(self) -> int:
        return self.rows * self.cols

    # -- (de)serialization -----------------------------------------------------------------------

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    def to_json(self, **kw: Any) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, **kw)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NPUConfig:
        if not isinstance(d, dict):
            raise ConfigError(f"config must be a mapping, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(unknown)}")
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> NPUConfig:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"config is not valid JSON: {e}") from None
        return cls.from_dict(d)

    def replace(self, **changes: Any) -> NPUConfig:
        return dataclasses.replace(self, **changes)

    @property
    def fingerprint(self) -> str:
        """Short stable hash of every parameter (used for build caches and quick comparisons)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def differences(self, other: NPUConfig) -> list[str]:
        """Human-readable list of the fields where ``other`` differs from ``self``."""
        out = []
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if a != b:
                out.append(f"{f.name}: {a} != {b}")
        return out

    def check_matches(self, other: NPUConfig, *, what: str = "device", against: str = "model") -> None:
        """Raise :class:`ConfigError` naming every mismatching field."""
        diff = self.differences(other)
        if diff:
            raise ConfigError(f"{against} config does not match the {what} config: " + "; ".join(diff))

    def summary(self) -> str:
        lines = [f"  {f.name:<17} {getattr(self, f.name)}" for f in fields(self)]
        lines += [
            f"  {'pe_kind':<17} {self.pe_kind}   (derived)",
            f"  {'acc_width':<17} {self.acc_width}   (derived)",
            f"  {'codes_per_word':<17} {self.codes_per_word}   (derived)",
        ]
        return "\n".join(lines)
