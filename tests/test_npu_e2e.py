"""End to end: model file -> driver -> link -> NPU RTL (Verilator) -> results == golden, bit for bit."""

import numpy as np
import pytest

from quant import golden
from quant.config import NPUConfig
from sim.npu_device import simulated_npu
from sw_driver.device import ConfigMismatch, Device
from sw_driver.npu import NPURunner
from tests.model_factory import random_cnn, random_mlp
from tests.test_npu_compile import two_conv_cnn

CFG = NPUConfig()  # the default device, as `make demo` and a board build use it


@pytest.fixture(scope="module")
def npu_url():
    with simulated_npu(CFG) as url:
        yield url


def _check(url, model, batch, n, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, size=(n, *model.input.shape)).astype(np.int8)
    with Device(url, timeout=30.0) as dev:
        runner = NPURunner(dev, batch=batch)
        runner.load(model)
        r = runner.infer(x)
    trace = golden.forward(model, x, intermediates=True)
    assert np.array_equal(r.logits, trace[-2][1].reshape(n, -1))
    assert np.array_equal(r.classes, trace[-1][1])
    assert r.cycles > 0
    return r


def test_mlp_through_driver(npu_url):
    _check(npu_url, random_mlp(1, CFG, sizes=(64, 32, 10)), batch=16, n=40, seed=1)


def test_cnns_through_driver(npu_url):
    _check(npu_url, random_cnn(2, CFG, channels=8), batch=1, n=3, seed=2)
    _check(npu_url, two_conv_cnn(3, CFG), batch=1, n=3, seed=3)


def test_every_region_reads_back_through_the_link(npu_url):
    """Host reads of all four regions (the read data pass the core's registers in simulation, as on ECP5)."""
    rng = np.random.default_rng(7)
    with Device(npu_url, timeout=30.0) as dev:
        for reg in dev.info().regions:
            n = min(reg.depth, 37)
            if reg.name == "channel":  # bias | M << 32 | shift << 48: the memory keeps 6 shift bits
                words = [
                    int(b) | int(mu) << 32 | int(sh) << 48
                    for b, mu, sh in rng.integers(0, [1 << 32, 1 << 16, 64], (n, 3))
                ]
            else:
                words = [int.from_bytes(rng.bytes(reg.word_bytes), "little") % (1 << reg.width) for _ in range(n)]
            dev.write_mem(reg.name, reg.depth - n, words)
            assert dev.read_mem(reg.name, reg.depth - n, n) == words, reg.name
            assert dev.read_mem(reg.name, reg.depth - 1, 1) == words[-1:], reg.name


def test_config_mismatch_is_refused(npu_url):
    other = random_mlp(1, CFG.replace(weight_bits=4), sizes=(64, 10))
    with Device(npu_url, timeout=30.0) as dev, pytest.raises(ConfigMismatch, match="weight_bits"):
        NPURunner(dev).load(other)


@pytest.mark.slow
@pytest.mark.parametrize("stem,batch", [("digits_mlp_3bit", 32), ("digits_cnn_3bit", 1)])
def test_shipped_models_on_the_whole_digits_test_set(npu_url, stem, batch):
    """Issue #8's acceptance: every one of the 360 test digits through the driver, bit-exact."""
    from pathlib import Path

    from quant.digits import load_split
    from quant.model import NPUModel

    model = NPUModel.load(Path(__file__).resolve().parent.parent / "examples" / f"{stem}.npu")
    data = load_split()
    xq = model.input.quantize(data.x_test)
    with Device(npu_url, timeout=30.0) as dev:
        runner = NPURunner(dev, batch=batch)
        runner.load(model)
        r = runner.infer(xq)
    trace = golden.forward(model, xq, intermediates=True)
    assert len(xq) == 360
    assert np.array_equal(r.logits, trace[-2][1].reshape(len(xq), -1))
    assert np.array_equal(r.classes, trace[-1][1])
    assert (r.classes == data.y_test).mean() > 0.97
