"""Review: compiler corner cases (odd channel counts, non-square arrays, exact memory limits)."""

import dataclasses

import numpy as np
import pytest

from quant import golden
from quant.compile import CompileError
from quant.config import NPUConfig
from quant.npu_compile import compile_model, largest_batch
from tests.model_factory import random_cnn, random_mlp
from tests.test_npu_compile import run_on_model_device, two_conv_cnn

CFG = NPUConfig(act_depth=4096, weight_depth=2048, chan_depth=256)


def _check(model, batch, cfg=None):
    rng = np.random.default_rng(batch + 100)
    x = rng.integers(-128, 128, size=(batch, *model.input.shape)).astype(np.int8)
    compiled = compile_model(model, batch, cfg)
    logits, classes = run_on_model_device(compiled, x)
    trace = golden.forward(model, x, intermediates=True)
    assert np.array_equal(logits, trace[-2][1].reshape(batch, -1))
    assert np.array_equal(classes, trace[-1][1])


@pytest.mark.parametrize("c1,c2", [(5, 3), (1, 1), (9, 17), (3, 8)])
def test_odd_channel_counts_after_first_layer(c1, c2):
    """C_in not a multiple of 8 for the on-chip conv, flatten of C not a multiple of 8 into dense."""
    _check(two_conv_cnn(c1 * 10 + c2, CFG, c1=c1, c2=c2), 2)


@pytest.mark.parametrize("sizes", [(1, 1, 1), (3, 9, 17, 2), (17, 1, 10)])
def test_odd_mlp_sizes(sizes):
    _check(random_mlp(sum(sizes), CFG, sizes=sizes), 9)


@pytest.mark.parametrize("rows,cols", [(4, 8), (8, 4)])
def test_non_square_array_chain_matches_golden(rows, cols):
    """A multi-layer model on a rows != cols array must either compile correctly or be refused."""
    cfg = dataclasses.replace(CFG, rows=rows, cols=cols)
    model = random_mlp(7, cfg, sizes=(16, 12, 10))
    try:
        compile_model(model, 3, cfg)
    except CompileError:
        return  # refusing is acceptable
    _check(model, 3, cfg)


def _feature_words(model, batch, cfg):
    return compile_model(model, batch, cfg).feature_words


@pytest.mark.parametrize(
    "make,batch", [(lambda c: random_mlp(3, c, sizes=(20, 13, 10)), 7), (lambda c: random_cnn(4, c), 2)]
)
def test_exact_feature_memory_limit(make, batch):
    model = make(CFG)
    need = _feature_words(model, batch, CFG)
    ok = dataclasses.replace(CFG, act_depth=need)
    compile_model(model, batch, ok)  # exactly enough must fit
    tight = dataclasses.replace(CFG, act_depth=need - 1)
    with pytest.raises(CompileError, match="feature memory"):
        compile_model(model, batch, tight)


def test_exact_weight_channel_program_limits():
    model = random_mlp(5, CFG, sizes=(20, 13, 10))
    c = compile_model(model, 4, CFG)
    compile_model(model, 4, dataclasses.replace(CFG, weight_depth=len(c.weight), chan_depth=len(c.channel)))
    with pytest.raises(CompileError, match="weight memory"):
        compile_model(model, 4, dataclasses.replace(CFG, weight_depth=len(c.weight) - 1))
    with pytest.raises(CompileError, match="channel memory"):
        compile_model(model, 4, dataclasses.replace(CFG, chan_depth=len(c.channel) - 1))
    compile_model(model, 4, CFG, prog_depth=len(c.program))
    with pytest.raises(CompileError, match="program memory"):
        compile_model(model, 4, CFG, prog_depth=len(c.program) - 1)


def test_largest_batch_is_largest_that_fits():
    cfg = dataclasses.replace(CFG, act_depth=300)
    model = random_mlp(6, cfg, sizes=(20, 13, 10))
    b = largest_batch(model, cfg, limit=64)
    compile_model(model, b, cfg, prog_depth=cfg.prog_depth)
    if b < 64:
        with pytest.raises(CompileError):
            compile_model(model, b + 1, cfg, prog_depth=cfg.prog_depth)


@pytest.mark.parametrize(
    "rows,cols",
    [
        (8, 8),
        (4, 4),
        (8, 4),
    ],
)
def test_regions_do_not_overlap(rows, cols):
    """The engine writes tiles(N, cols) * M words of logits; the argmax output must not land inside them."""
    cfg = dataclasses.replace(CFG, rows=rows, cols=cols)
    try:
        c = compile_model(random_mlp(8, cfg, sizes=(16, 10)), 3, cfg)
    except CompileError:
        assert rows != cols  # refusing a non-square array is the fix
        return
    (base, m, n), cls = c.logits[0], c.classes[0]
    assert cls >= base + -(-n // cols) * m


@pytest.mark.parametrize("shape", [(16,), (4, 4)])
def test_flatten_of_a_vector_input(shape):
    from quant.model import ArgmaxLayer, DenseLayer, FlattenLayer, InputSpec, NPUModel
    from tests.model_factory import _requant

    rng = np.random.default_rng(1)
    d = rng.integers(0, 8, (16, 10)).astype(np.uint8)
    layers = [FlattenLayer("f"), DenseLayer("fc", d, *_requant(rng, 10), relu=False), ArgmaxLayer("a")]
    model = NPUModel(CFG, InputSpec(shape=shape), layers, {})
    model.shapes()  # the model itself is valid
    _check(model, 3)


def test_argmax_after_pool_and_flatten():
    from quant.model import ArgmaxLayer, Conv2dLayer, FlattenLayer, InputSpec, MaxPool2dLayer, NPUModel
    from tests.model_factory import _requant

    rng = np.random.default_rng(0)
    k1 = rng.integers(0, 8, (3, 3, 1, 10)).astype(np.uint8)
    layers = [
        Conv2dLayer("c", k1, *_requant(rng, 10), relu=False, padding=1),
        MaxPool2dLayer("p", size=2),
        FlattenLayer("f"),
        ArgmaxLayer("a"),
    ]
    model = NPUModel(CFG, InputSpec(shape=(2, 2, 1)), layers, {})
    model.shapes()
    x = np.random.default_rng(1).integers(-128, 128, size=(2, 2, 2, 1)).astype(np.int8)
    try:
        compiled = compile_model(model, 2)
    except CompileError:
        return  # refusing the layer order is an acceptable fix
    _, classes = run_on_model_device(compiled, x)
    trace = golden.forward(model, x, intermediates=True)
    assert classes is not None and np.array_equal(classes, trace[-1][1])


def test_argmax_over_more_than_256_classes():
    from quant.model import ArgmaxLayer, DenseLayer, InputSpec, NPUModel
    from tests.model_factory import _requant

    rng = np.random.default_rng(2)
    n = 300
    d = rng.integers(0, 8, (16, n)).astype(np.uint8)
    M, sh, bias = _requant(rng, n)
    bias[:] = -(1 << 24)
    bias[280] = 1 << 24  # class 280 wins on every input
    cfg = dataclasses.replace(CFG, chan_depth=512)
    model = NPUModel(cfg, InputSpec(shape=(16,)), [DenseLayer("fc", d, M, sh, bias, relu=False), ArgmaxLayer("a")], {})
    try:
        compiled = compile_model(model, 2)
    except CompileError:
        return  # refusing N > 256 is an acceptable fix
    x = np.random.default_rng(3).integers(-128, 128, size=(2, 16)).astype(np.int8)
    _, classes = run_on_model_device(compiled, x)
    assert list(golden.forward(model, x, intermediates=True)[-1][1]) == [280, 280]
    assert list(classes) == [280, 280]
