"""`shiftnpu retarget`: a model moved to another array/memory config keeps its integer network, compiles
for the new config, and is refused across the fields its arithmetic depends on; the driver's config
mismatch message points at it when only the layout differs."""

import json

import numpy as np
import pytest

from hw.boards import get_board
from quant import golden
from quant.compile import CompileError
from quant.config import ConfigError
from quant.device_model import DeviceModel
from quant.digits import load_split
from quant.model import ModelFormatError, NPUModel
from quant.npu_compile import compile_model
from quant.retarget import retarget
from sw_driver.cli import main

MLP = "examples/digits_mlp_3bit.npu"
LSTM = "examples/seq_digits_lstm_3bit.npu"
ICE4 = get_board("icebreaker").default_config(rows=4, cols=4, chan_depth=256, weight_depth=2048)


def _device_outputs(model: NPUModel, x: np.ndarray) -> np.ndarray:
    """The outputs of one run of ``len(x)`` samples on the word-level device model of the model's config."""
    cfg = model.config
    compiled = compile_model(model, len(x), cfg, prog_depth=cfg.prog_depth)
    dm = DeviceModel(cfg)
    for base, words in compiled.feature_init + compiled.input_images(x):
        dm.feature[base : base + len(words)] = words
    dm.weight[: len(compiled.weight)] = compiled.weight
    dm.channel[: len(compiled.channel)] = compiled.channel
    dm.program[: len(compiled.program)] = compiled.program
    dm.run()
    return compiled.decode_outputs([dm.feature[b : b + n] for b, n in compiled.read_plan()])[1]


@pytest.mark.parametrize("path", [MLP, LSTM])
def test_moved_model_runs_bit_exact_on_the_new_array(path):
    model = NPUModel.load(path)
    moved, batch = retarget(model, ICE4)
    assert moved.config == ICE4 and batch >= 1
    x = model.input.quantize(load_split().x_test[: min(batch, 4)])
    want = golden.forward(model, x)
    assert np.array_equal(golden.forward(moved, x), want)  # the same integer network
    assert np.array_equal(_device_outputs(moved, x)[: len(x)], want)  # and the 4x4 device computes it


def test_refusals():
    model = NPUModel.load(MLP)
    with pytest.raises(ConfigError, match="weight_bits 3 != 2"):
        retarget(model, ICE4.replace(weight_bits=2))
    with pytest.raises(CompileError, match="weight memory"):
        retarget(model, ICE4.replace(weight_depth=256))
    with pytest.raises(ModelFormatError, match="raise max_k"):
        retarget(model, ICE4.replace(max_k=4))


def test_cli(tmp_path, capsys):
    out = tmp_path / "m4.npu"
    args = ["retarget", LSTM, "-o", str(out), "--board", "icebreaker", "--rows", "4", "--cols", "4"]
    assert main([*args, "--chan-depth", "256", "--weight-depth", "2048"]) == 0
    assert "rows 8 -> 4" in capsys.readouterr().out and NPUModel.load(out).config == ICE4
    # too small memories: the compiler's message, and the options that help
    assert main([*args, "--chan-depth", "64", "--weight-depth", "1024"]) == 1
    err = capsys.readouterr().err
    assert "weight memory" in err and "--weight-depth" in err
    # --config: a build report's config, another model's, plus options
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"board": "icebreaker", "config": ICE4.to_dict()}))
    out2 = tmp_path / "m4b.npu"
    assert main(["retarget", MLP, "-o", str(out2), "--config", str(report)]) == 0
    assert NPUModel.load(out2).config == ICE4
    assert main(["retarget", MLP, "-o", str(out2), "--config", str(out), "--prog-depth", "256"]) == 0
    assert NPUModel.load(out2).config == ICE4.replace(prog_depth=256)
    # bad input: clear errors, nothing written over the input
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["retarget", MLP, "-o", str(out2), "--config", str(bad)]) == 1
    assert "not JSON" in capsys.readouterr().err
    assert main(["retarget", str(out), "-o", str(out), "--board", "icebreaker"]) == 1
    assert "must not be the input" in capsys.readouterr().err
    assert main(["retarget", str(tmp_path / "none.npu"), "-o", str(out2), "--board", "icebreaker"]) == 1


def test_driver_names_retarget_when_only_the_layout_differs():
    import dataclasses

    from sw_driver.device import ConfigMismatch, Device
    from sw_driver.npu import NPURunner
    from tests.test_device import CFG, FakeDevice

    dev = FakeDevice()  # a device with CFG: the default array, other memory sizes
    try:
        with Device(dev.url, timeout=2.0) as d:
            model = NPUModel.load(MLP)
            assert model.config.differences(CFG) and model.config.weight_bits == CFG.weight_bits
            with pytest.raises(ConfigMismatch, match="act_depth: 1024 != 64.*shiftnpu retarget"):
                NPURunner(d).load(model)
            other = dataclasses.replace(model, config=model.config.replace(weight_bits=4))
            with pytest.raises(ConfigMismatch, match="weight_bits") as e:
                NPURunner(d).load(other)
            assert "retarget" not in str(e.value)  # across a network field it cannot help
    finally:
        dev.close()
