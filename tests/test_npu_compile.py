"""The model compiler: compiled programs run on the DeviceModel reproduce the golden forward exactly."""

import numpy as np
import pytest

from quant import golden
from quant.compile import CompileError
from quant.config import NPUConfig
from quant.device_model import DeviceModel
from quant.model import ArgmaxLayer, Conv2dLayer, DenseLayer, FlattenLayer, InputSpec, MaxPool2dLayer, NPUModel
from quant.npu_compile import compile_model
from tests.model_factory import _requant, random_cnn, random_mlp

CFG = NPUConfig(act_depth=4096, weight_depth=2048, chan_depth=256)


def two_conv_cnn(seed: int, cfg: NPUConfig, c1: int = 8, c2: int = 6) -> NPUModel:
    """conv(1->c1) relu, pool, conv(c1->c2) relu (on-chip im2col), pool, flatten, dense -> 10, argmax."""
    rng = np.random.default_rng(seed)
    top = 1 << cfg.weight_bits
    k1 = rng.integers(0, top, (3, 3, 1, c1)).astype(np.uint8)
    k2 = rng.integers(0, top, (3, 3, c1, c2)).astype(np.uint8)
    d = rng.integers(0, top, (4 * c2, 10)).astype(np.uint8)
    layers = [
        Conv2dLayer("conv1", k1, *_requant(rng, c1), relu=True, padding=1),
        MaxPool2dLayer("pool1", size=2),
        Conv2dLayer("conv2", k2, *_requant(rng, c2), relu=True, padding=1),
        MaxPool2dLayer("pool2", size=2),
        FlattenLayer("flatten"),
        DenseLayer("fc", d, *_requant(rng, 10), relu=False),
        ArgmaxLayer("argmax"),
    ]
    return NPUModel(cfg, InputSpec(shape=(8, 8, 1)), layers, {})


def run_on_model_device(compiled, x_int8):
    dev = DeviceModel(compiled.config)
    dev.weight[: len(compiled.weight)] = compiled.weight
    dev.channel[: len(compiled.channel)] = compiled.channel
    dev.program[: len(compiled.program)] = compiled.program
    for base, words in compiled.input_images(x_int8):
        dev.feature[base : base + len(words)] = words
    dev.run()
    reads = [dev.feature[b : b + n] for b, n in compiled.read_plan()]
    return compiled.decode_outputs(reads)


@pytest.mark.parametrize(
    "make,batch",
    [
        (lambda: random_mlp(1, CFG, sizes=(64, 20, 10)), 12),
        (lambda: random_mlp(2, CFG, sizes=(64, 64, 33, 10)), 5),
        (lambda: random_cnn(3, CFG, channels=4), 3),
        (lambda: two_conv_cnn(4, CFG), 2),
        (lambda: two_conv_cnn(5, CFG, c1=12, c2=10), 1),
    ],
)
def test_compiled_model_matches_golden(make, batch):
    model = make()
    rng = np.random.default_rng(batch)
    x = rng.integers(-128, 128, size=(batch, *model.input.shape)).astype(np.int8)
    compiled = compile_model(model, batch)
    logits, classes = run_on_model_device(compiled, x)
    trace = golden.forward(model, x, intermediates=True)
    assert np.array_equal(logits, trace[-2][1].reshape(batch, -1))
    assert np.array_equal(classes, trace[-1][1])


def test_refuses_what_does_not_fit():
    small = NPUConfig(act_depth=64)
    model = random_mlp(1, small, sizes=(64, 20, 10))
    with pytest.raises(CompileError, match="feature memory"):
        compile_model(model, 32)
    cnn = two_conv_cnn(1, CFG)
    rng = np.random.default_rng(0)
    cnn.layers[2] = Conv2dLayer(
        "conv5", rng.integers(0, 8, (5, 5, 8, 6)).astype(np.uint8), *_requant(rng, 6), relu=True, padding=2
    )
    with pytest.raises(CompileError, match="3x3 kernels with padding 1"):
        compile_model(cnn, 1)
