"""How the NPU's gate unit is addressed: PWL table entries, their feature-memory image, the cell memory.

The NPU's LSTM path (docs/architecture.md) keeps the PWL tables of the gate unit (hw/rnn.py,
:class:`~hw.pwl.PWLUnit`) in a small feature-memory area that the host writes with the model, and
the ``PWL_LOAD`` instruction copies it into the unit. An entry is 32 bits: the int16 value in bits
0..15 and the PWL unit's write address in bits 16..31; a feature word of ``rows`` int8 lanes holds
``rows / 4`` entries. The PWL address packs ``(table, field, index)`` exactly as
:meth:`hw.pwl.PWLUnit.write_address` does (a test holds the two equal):

    address = table << (2 + iw) | field << iw | index,   iw = bits of N (holds 0..N)

with field 0 = knot ``k_index`` (0..N), 1 = ``y_index``, 2 = ``m_index`` and table slots
σ = 0, tanh = 1, tanh of the cell = 2 (:data:`TABLE_SLOTS`).

The gate unit's cell memory holds the LSTM cell state of every (sequence, unit) of a batch:
index ``sequence * H + j``, :func:`cell_depth` entries.
"""

from __future__ import annotations

import numpy as np

from .config import NPUConfig
from .pwl import PWLTable

__all__ = [
    "TABLE_SLOTS",
    "FIELD_KNOT",
    "FIELD_Y",
    "FIELD_M",
    "cell_depth",
    "lstm_supported",
    "z_words_per_unit",
    "pwl_address",
    "table_entries",
    "entry_words",
    "entries_per_word",
    "tables_from_entries",
]

#: PWL table slot of each LSTM table in the gate unit (hw.rnn.TABLE_SIGMOID, ...).
TABLE_SLOTS = {"sigmoid": 0, "tanh": 1, "tanh_cell": 2}
FIELD_KNOT, FIELD_Y, FIELD_M = 0, 1, 2


def cell_depth(config: NPUConfig) -> int:
    """Entries of the gate unit's cell memory: as many as the channel memory (``chan_depth``).

    An LSTM layer of H units needs 4H channels, so ``H <= chan_depth / 4`` anyway; the batch of
    sequences per run is then ``m <= chan_depth / H``.
    """
    return config.chan_depth


def lstm_supported(config: NPUConfig) -> bool:
    """Whether the NPU of ``config`` has the LSTM path: a square power-of-two array of >= 4 columns.

    Tile counts are shifts, and a unit's four int16 gates lie in whole feature words: from 8x8 on, one
    word holds ``cols / 8`` units' gates; at 4x4 a unit's gates are the two words of its gate-GEMM
    row (gates i, f in the first, g, o in the second), which the sequencer reads back to back. A
    word also holds whole 32-bit PWL table entries (``rows / 4`` of them).
    """
    R = config.rows
    return config.rows == config.cols and R >= 4 and not R & (R - 1)


def z_words_per_unit(config: NPUConfig) -> int:
    """Feature words the sequencer reads per (sequence, unit) of the LSTM op: 2 at 4x4, else 1."""
    return 2 if config.cols == 4 else 1


def _index_width(config: NPUConfig) -> int:
    return config.pwl_pieces.bit_length()


def pwl_address(config: NPUConfig, table: int, field: int, index: int) -> int:
    """The PWL unit's write address of entry ``index`` of ``field`` of table slot ``table``."""
    N = config.pwl_pieces
    top = N if field == FIELD_KNOT else N - 1
    if table not in TABLE_SLOTS.values() or field not in (FIELD_KNOT, FIELD_Y, FIELD_M) or not 0 <= index <= top:
        raise ValueError(f"bad PWL table entry: table {table}, field {field}, index {index}")
    iw = _index_width(config)
    return (table << (2 + iw)) | (field << iw) | index


def table_entries(config: NPUConfig, tables: dict[str, PWLTable]) -> list[tuple[int, int]]:
    """``(address, int16 value)`` of every entry of the LSTM tables σ, tanh and tanh of the cell.

    Raises ``ValueError`` unless each table has ``config.pwl_pieces`` pieces and the shift
    ``config.pwl_shift`` (the unit's table-wide shift is fixed by the build), and segments the unit
    evaluates exactly (:meth:`~quant.pwl.PWLTable.check_hardware`).
    """
    out = []
    for name, slot in TABLE_SLOTS.items():
        if name not in tables:
            raise ValueError(f"missing PWL table {name!r}")
        t = tables[name]
        if t.pieces != config.pwl_pieces or int(t.shift) != config.pwl_shift:
            raise ValueError(
                f"PWL table {name!r} has {t.pieces} pieces and shift {t.shift}; the device's gate unit "
                f"takes {config.pwl_pieces} pieces and shift {config.pwl_shift}"
            )
        try:
            t.check_hardware()
        except ValueError as e:
            raise ValueError(f"PWL table {name!r}: {e}") from None
        for field, arr in ((FIELD_KNOT, t.knots), (FIELD_Y, t.y), (FIELD_M, t.m)):
            out += [(pwl_address(config, slot, field, i), int(v)) for i, v in enumerate(arr)]
    return out


def entries_per_word(config: NPUConfig) -> int:
    """32-bit entries in one feature word (``rows`` int8 lanes)."""
    if (8 * config.rows) % 32:
        raise ValueError(f"a feature word of {config.rows} lanes does not hold whole 32-bit table entries")
    return 8 * config.rows // 32


def entry_words(config: NPUConfig, entries: list[tuple[int, int]]) -> list[int]:
    """Feature words holding ``entries`` (the last word padded by repeating its last entry)."""
    per = entries_per_word(config)
    if not entries:
        return []
    ent = list(entries) + [entries[-1]] * (-len(entries) % per)
    words = []
    for i in range(0, len(ent), per):
        w = 0
        for k, (addr, val) in enumerate(ent[i : i + per]):
            w |= ((int(val) & 0xFFFF) | (int(addr) & 0xFFFF) << 16) << (32 * k)
        words.append(w)
    return words


def tables_from_entries(config: NPUConfig, written: dict[int, int]) -> dict[str, PWLTable]:
    """The LSTM tables from a map of PWL address -> int16 value (what the device holds after PWL_LOAD)."""
    N = config.pwl_pieces
    out = {}
    for name, slot in TABLE_SLOTS.items():

        def get(field, i, slot=slot):
            v = int(written.get(pwl_address(config, slot, field, i), 0)) & 0xFFFF
            return v - 0x10000 if v & 0x8000 else v

        try:
            out[name] = PWLTable(
                knots=np.array([get(FIELD_KNOT, i) for i in range(N + 1)]),
                y=np.array([get(FIELD_Y, i) for i in range(N)]),
                m=np.array([get(FIELD_M, i) for i in range(N)]),
                shift=config.pwl_shift,
                func=name,
            )
        except ValueError as e:
            raise ValueError(f"the gate unit's {name} table is not a valid PWL table (was it loaded?): {e}") from None
    return out
