"""Random integer models for the model-file, golden and packing tests (numpy only)."""

from __future__ import annotations

import numpy as np

from quant.config import NPUConfig
from quant.model import (
    ArgmaxLayer,
    Conv2dLayer,
    DenseLayer,
    FlattenLayer,
    InputSpec,
    LSTMLayer,
    MaxPool2dLayer,
    NPUModel,
)


def _requant(rng, N):
    M = rng.integers(1 << 15, 1 << 16, N).astype(np.uint16)
    n = rng.integers(12, 22, N).astype(np.uint8)
    bias = rng.integers(-3000, 3000, N).astype(np.int32)
    return M, n, bias


def random_cnn(seed: int = 0, config: NPUConfig | None = None, channels: int = 4) -> NPUModel:
    """conv2d 3x3 (1 -> channels, relu), maxpool 2, flatten, dense (16 * channels -> 10), argmax."""
    rng = np.random.default_rng(seed)
    config = config or NPUConfig()
    top = 1 << config.weight_bits
    c1 = rng.integers(0, top, (3, 3, 1, channels)).astype(np.uint8)
    d1 = rng.integers(0, top, (16 * channels, 10)).astype(np.uint8)
    M1, n1, b1 = _requant(rng, channels)
    M2, n2, b2 = _requant(rng, 10)
    layers = [
        Conv2dLayer("conv1", c1, M1, n1, b1, relu=True, out_scale=0.05, padding=1),
        MaxPool2dLayer("pool", size=2),
        FlattenLayer("flatten"),
        DenseLayer("fc", d1, M2, n2, b2, relu=False, out_scale=0.1),
        ArgmaxLayer("argmax"),
    ]
    return NPUModel(config, InputSpec(shape=(8, 8, 1)), layers, {"task": "random", "seed": seed})


def random_mlp(seed: int = 0, config: NPUConfig | None = None, sizes=(64, 20, 10)) -> NPUModel:
    rng = np.random.default_rng(seed)
    config = config or NPUConfig()
    top = 1 << config.weight_bits
    layers = []
    for i, (k, n) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        M, sh, b = _requant(rng, n)
        codes = rng.integers(0, top, (k, n)).astype(np.uint8)
        layers.append(DenseLayer(f"fc{i + 1}", codes, M, sh, b, relu=i < len(sizes) - 2))
    layers.append(ArgmaxLayer("argmax"))
    return NPUModel(config, InputSpec(shape=(sizes[0],)), layers, {"task": "random"})


def random_lstm(
    seed: int = 0, config: NPUConfig | None = None, steps: int = 8, inputs: int = 8, hidden: int = 16, gain: float = 1.0
) -> NPUModel:
    """LSTM (inputs -> hidden, default PWL tables) over ``steps``, dense (hidden -> 10), argmax."""
    from quant.rnn import random_params

    rng = np.random.default_rng(seed)
    config = config or NPUConfig()
    p = random_params("lstm", inputs, hidden, config, rng, gain=gain)
    M, n, b = _requant(rng, 10)
    n = (n - 6).astype(np.uint8)  # h is Q0.7 int8: smaller sums than a pixel layer
    d = rng.integers(0, 1 << config.weight_bits, (hidden, 10)).astype(np.uint8)
    layers = [LSTMLayer.from_params("lstm", p), DenseLayer("fc", d, M, n, b, relu=False), ArgmaxLayer("argmax")]
    return NPUModel(config, InputSpec(shape=(steps, inputs)), layers, {"task": "random"})
