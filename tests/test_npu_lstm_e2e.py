"""End to end, LSTM: model file -> driver -> link -> NPU RTL (Verilator) -> results == golden, bit for bit.

The shipped seq-digits model (examples/seq_digits_lstm_3bit.npu: LSTM 8 -> 32 over 8 steps, dense
32 -> 10, argmax) on the first 104 test-set sequences (13 device runs of 8), and a random LSTM with
partial tiles. The device's cycle counts equal quant.lstm_perf's model.
"""

import numpy as np
import pytest

from quant import golden
from quant.config import NPUConfig
from quant.digits import load_split
from quant.lstm_perf import program_cycles
from quant.model import NPUModel
from quant.npu_compile import compile_model, largest_batch
from sim.npu_device import simulated_npu
from sw_driver.device import Device
from sw_driver.npu import NPURunner
from tests.model_factory import random_lstm

CFG = NPUConfig()  # the default device (the same Verilator build as tests/test_npu_e2e.py)
SEQ_MODEL = "examples/seq_digits_lstm_3bit.npu"


@pytest.fixture(scope="module")
def npu_url():
    with simulated_npu(CFG) as url:
        yield url


def test_trained_lstm_through_driver(npu_url):
    model = NPUModel.load(SEQ_MODEL)
    split = load_split()
    n = 104
    x = model.input.quantize(split.x_test[:n])
    batch = largest_batch(model, CFG)
    assert batch == CFG.chan_depth // 32  # the gate unit's cells bound the batch
    with Device(npu_url, timeout=30.0) as dev:
        runner = NPURunner(dev, batch=batch)
        runner.load(model)
        r = runner.infer(x)
    trace = golden.forward(model, x, intermediates=True)
    assert np.array_equal(r.logits, trace[-2][1])
    assert np.array_equal(r.classes, trace[-1][1])
    acc = float(np.mean(r.classes == split.y_test[:n]))
    assert acc > 0.9, f"accuracy {acc:.3f} on the first {n} test sequences"
    runs = -(-n // batch)
    assert r.cycles == runs * program_cycles(compile_model(model, batch, CFG))


def test_random_lstm_through_driver(npu_url):
    model = random_lstm(7, CFG, inputs=12, hidden=24, steps=6)
    x = np.random.default_rng(7).integers(-128, 128, size=(10, *model.input.shape)).astype(np.int8)
    with Device(npu_url, timeout=30.0) as dev:
        runner = NPURunner(dev, batch=4)  # 3 runs, the last one padded
        runner.load(model)
        r = runner.infer(x)
    trace = golden.forward(model, x, intermediates=True)
    assert np.array_equal(r.logits, trace[-2][1]) and np.array_equal(r.classes, trace[-1][1])
    assert r.cycles == 3 * program_cycles(compile_model(model, 4, CFG))
