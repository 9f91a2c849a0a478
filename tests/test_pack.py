"""The packer: device images read back to the model's codes and parameters, survive the disk, and run."""

import json

import numpy as np
import pytest
from model_factory import random_cnn, random_mlp

from quant import golden
from quant.config import NPUConfig
from quant.device_model import DeviceModel
from quant.npu_compile import compile_model
from quant.pack import DeviceImage, RegionImage, pack_model, read_image

CONFIGS = [
    NPUConfig(act_depth=4096, weight_depth=2048),
    NPUConfig(weight_bits=2, act_depth=4096, weight_depth=2048),
    NPUConfig(weight_bits=4, rows=4, cols=4, act_depth=4096, weight_depth=4096),
    NPUConfig(weight_bits=8, act_depth=4096, weight_depth=2048),
]


def _cid(c):
    return f"b{c.weight_bits}r{c.rows}c{c.cols}"


@pytest.mark.parametrize("cfg", CONFIGS, ids=_cid)
@pytest.mark.parametrize("make", [random_mlp, random_cnn])
def test_image_reads_back_every_layer(cfg, make):
    m = make(7, cfg)
    img = pack_model(m)
    gemms = img.gemms()
    layers = m.gemm_layers()
    assert len(gemms) == len(layers)
    for g, la in zip(gemms, layers, strict=True):
        u = img.unpack_gemm(g)
        W = la.gemm_codes().astype(np.int64)
        dev = u["codes"]
        if make is random_mlp:
            assert np.array_equal(dev[: W.shape[0]], W) and not dev[W.shape[0] :].any()
        else:  # conv and flatten layers are re-laid to the on-chip feature order: the same rows plus padding
            rows = sorted(map(tuple, dev))
            for r in map(tuple, W):
                rows.remove(r)
            assert not np.any(rows)
        assert np.array_equal(u["bias"], la.bias) and np.array_equal(u["M"], la.M) and np.array_equal(u["n"], la.n)
        assert g.relu == la.relu
    for r in img.regions:
        assert all(0 <= w < 1 << r.width for w in r.words) and len(r.words) <= r.depth


@pytest.mark.parametrize("make", [random_mlp, random_cnn])
def test_image_equals_upload_and_runs_on_the_device_model(tmp_path, make):
    cfg = CONFIGS[0]
    m = make(3, cfg)
    batch = 2
    img = read_image(pack_model(m, batch=batch).write(tmp_path / "img"))
    compiled = compile_model(m, batch=batch)
    assert list(img.region("weight").words) == compiled.weight
    assert list(img.region("channel").words) == compiled.channel
    assert list(img.region("program").words) == compiled.program
    dev = DeviceModel(cfg)
    for name in ("weight", "channel", "program"):
        words = img.region(name).words
        getattr(dev, name)[: len(words)] = words
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, (batch, *m.input.shape)).astype(np.int8)
    for base, words in compiled.input_images(x):
        dev.feature[base : base + len(words)] = words
    dev.run()
    logits, classes = compiled.decode_outputs([dev.feature[b : b + n] for b, n in compiled.read_plan()])
    trace = golden.forward(m, x, intermediates=True)
    assert np.array_equal(logits, trace[-2][1].reshape(batch, -1))
    assert np.array_equal(classes, trace[-1][1])


def test_files_are_checked(tmp_path):
    img = pack_model(random_mlp(1, CONFIGS[0]))
    d = img.write(tmp_path / "img")
    assert read_image(d) == img
    text = (d / "weight.memh").read_text().splitlines()
    (d / "weight.memh").write_text("\n".join(text[:-1]) + "\n")
    with pytest.raises(ValueError, match="truncated"):
        read_image(d)
    img.write(d)
    flipped = list(text)
    flipped[0] = f"{int(flipped[0], 16) ^ 1:0{len(flipped[0])}x}"
    (d / "weight.memh").write_text("\n".join(flipped) + "\n")
    with pytest.raises(ValueError, match="checksum"):
        read_image(d)
    img.write(d)
    (d / "program.memh").write_text("zz\n")
    with pytest.raises(ValueError, match="not a hex word"):
        read_image(d)
    img.write(d)
    manifest = json.loads((d / "image.json").read_text())
    manifest["regions"][0]["width"] += 1
    (d / "image.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="memory map"):
        read_image(d)
    (d / "image.json").write_text("{")
    with pytest.raises(ValueError, match="corrupt"):
        read_image(d)
    with pytest.raises(ValueError, match="no image.json"):
        read_image(tmp_path)


def test_region_words_are_range_checked():
    with pytest.raises(ValueError, match="24-bit"):
        RegionImage("weight", 1, 24, 4, (1 << 24,))
    with pytest.raises(ValueError, match="depth"):
        RegionImage("weight", 1, 24, 1, (0, 0))
    assert RegionImage("w", 0, 10, 4, (0x3FF, 1)).to_memh() == "3ff\n001\n"
    assert RegionImage.words_from_memh("// c\n3ff\n\n001 // x\n", 10) == [0x3FF, 1]
    with pytest.raises(ValueError, match="wider"):
        RegionImage.words_from_memh("400\n", 10)


def test_model_that_does_not_fit_is_refused():
    cfg = NPUConfig(weight_depth=16)
    with pytest.raises(ValueError, match="weight"):
        pack_model(random_mlp(0, cfg))
    assert isinstance(pack_model(random_mlp(0, CONFIGS[0])), DeviceImage)


def test_pack_command_writes_a_readable_image(tmp_path, capsys):
    from pathlib import Path

    from quant.model import NPUModel
    from sw_driver.cli import main

    model_path = Path(__file__).resolve().parent.parent / "examples" / "digits_mlp_3bit.npu"
    assert main(["pack", str(model_path), "-o", str(tmp_path / "img"), "--batch", "4"]) == 0
    out = capsys.readouterr().out
    assert "weight.memh" in out and "batch 4" in out
    img = read_image(tmp_path / "img")
    assert img.batch == 4 and img == pack_model(NPUModel.load(model_path), batch=4)
    with pytest.raises(SystemExit, match="--batch"):
        main(["pack", str(model_path), "-o", str(tmp_path / "x"), "--batch", "0"])


def test_lstm_image_carries_the_pwl_tables():
    from pathlib import Path

    from quant.model import NPUModel

    model = NPUModel.load(Path(__file__).resolve().parent.parent / "examples" / "seq_digits_lstm_3bit.npu")
    img = pack_model(model, batch=2)
    compiled = compile_model(model, batch=2)
    assert compiled.feature_init, "an LSTM model has load-time feature words"
    feat = img.region("feature").words
    for base, words in compiled.feature_init:
        assert list(feat[base : base + len(words)]) == words
    assert [r.name for r in img.regions] == ["feature", "weight", "channel", "program"]
