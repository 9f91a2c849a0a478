"""Move a model to another array and memory config (``shiftnpu retarget``).

A model file embeds the config it is compiled for, and the driver refuses a device whose config
differs (SPEC §6). The integer network itself does not depend on the array's shape or the memory
sizes: the compiler tiles the same weights, scales and tables for any square array. So a model
trained for the 8x8 default can run on a 4x4 iCEBreaker build once it carries that build's config.
What the network's arithmetic does depend on (weight bits, the PWL tables' format, the cell format,
the accumulator width) must match; :func:`retarget` checks that the moved model validates and
compiles for the new config before it returns it.
"""

from __future__ import annotations

import dataclasses

from .config import ConfigError, NPUConfig
from .model import NPUModel
from .npu_compile import largest_batch

__all__ = ["NETWORK_FIELDS", "retarget"]

#: Config fields the integer network's results depend on: a model cannot move across them.
NETWORK_FIELDS = ("weight_bits", "pwl_pieces", "pwl_shift", "cell_frac_bits")


def retarget(model: NPUModel, config: NPUConfig) -> tuple[NPUModel, int]:
    """``model`` with ``config`` in place of its own, and the largest batch it compiles at there.

    Raises
    ------
    ConfigError
        ``config`` differs in a field of :data:`NETWORK_FIELDS` (named in the message).
    quant.model.ModelFormatError
        A layer does not validate under ``config`` (e.g. its worst-case accumulator needs more
        bits than ``config.max_k`` gives).
    quant.npu_compile.CompileError
        The model does not fit ``config``'s memories even at batch 1 (the message names the memory).
    """
    old = model.config
    diff = [
        f"{f} {getattr(old, f)} != {getattr(config, f)}"
        for f in NETWORK_FIELDS
        if getattr(old, f) != getattr(config, f)
    ]
    if diff:
        raise ConfigError("the model's integer network needs the same " + "; ".join(diff) + " (model != target)")
    moved = dataclasses.replace(model, config=config)
    moved.validate()
    return moved, largest_batch(moved, config)
