"""Export a trained network to a :class:`quant.model.NPUModel` (integer layers for the array).

The exporter writes exactly what the ``exact`` phase computes: it calls the same
:meth:`~quant.train.network.QuantBlock.fold`, so the golden model on the file reproduces the torch
network bit for bit. Only networks the array can run are exported: DenseShift with
``config.weight_bits`` bits, or int8 weights on an int8-PE config. The with-zero power-of-two
baseline has a zero weight, which has no code (SPEC §2), and FP32 has no integer form.
"""

from __future__ import annotations

import numpy as np
import torch

from ..codes import decode, encode
from ..config import NPUConfig
from ..model import (
    ArgmaxLayer,
    Conv2dLayer,
    DenseLayer,
    FlattenLayer,
    InputSpec,
    MaxPool2dLayer,
    NPUModel,
)
from .layers import QuantConv2d
from .network import INPUT_SCALE, DigitsNet

__all__ = ["export_model"]


def export_model(net: DigitsNet, config: NPUConfig | None = None, metadata: dict | None = None) -> NPUModel:
    """The integer model of ``net`` for ``config`` (default: the standard config at the net's bit width)."""
    bits = 8 if net.kind == "int8" else net.bits
    if config is None:
        config = NPUConfig(weight_bits=bits)
    if net.kind not in ("denseshift", "int8"):
        raise ValueError(f"cannot export a {net.kind} network: only DenseShift and int8 weights have hardware codes")
    if config.weight_bits != bits:
        raise ValueError(
            f"the network has {bits}-bit {net.kind} weights but the config has weight_bits={config.weight_bits}"
        )
    layers, s = [], INPUT_SCALE
    for op, arg in net.plan:
        if op == "maxpool2d":
            layers.append(MaxPool2dLayer("pool", size=arg))
            continue
        if op == "flatten":
            layers.append(FlattenLayer("flatten"))
            continue
        block = net.blocks[arg]
        f = block.fold(s)
        v = f.v.round().to(torch.int64).numpy()
        # torch [out, in] -> [K, N]; torch [out, in, kh, kw] -> HWIO [kh, kw, in, out]
        v = v.transpose(2, 3, 1, 0) if isinstance(block.layer, QuantConv2d) else v.T
        codes = encode(v, bits).astype(np.uint8)
        if not np.array_equal(decode(codes, bits), v):
            raise ValueError(f"block {block.name!r}: weights are not all representable as {bits}-bit codes")
        common = dict(
            name=block.name,
            codes=np.ascontiguousarray(codes),
            M=f.M.numpy().astype(np.uint16),
            n=f.n.numpy().astype(np.uint8),
            bias=f.bias.numpy().astype(np.int32),
            relu=block.relu,
            out_scale=f.out_scale,
        )
        if isinstance(block.layer, QuantConv2d):
            layers.append(Conv2dLayer(padding=block.layer.padding, **common))
        else:
            layers.append(DenseLayer(**common))
        s = f.out_scale
    layers.append(ArgmaxLayer("argmax"))
    shape = (64,) if net.task == "digits-mlp" else (8, 8, 1)
    model = NPUModel(
        config=config,
        input=InputSpec(shape=shape, multiplier=7, raw_max=16, scale=INPUT_SCALE),
        layers=layers,
        metadata=dict(metadata or {}),
    )
    model.validate()
    return model
