"""Integer-exact LSTM QAT (issue 6, first part): torch forward == quant.rnn == golden model on the file."""

import numpy as np
import pytest
import torch

from quant import golden
from quant.compile import CompileError
from quant.config import NPUConfig
from quant.digits import load_split
from quant.model import LSTMLayer, ModelFormatError, NPUModel
from quant.npu_compile import compile_model
from quant.pwl import INT16_MAX, INT16_MIN
from quant.rnn import default_tables, rnn_layer
from quant.train.rnn import QuantLSTM, TorchPWL
from quant.train.seq_digits import SeqTrainConfig, export_seq_model, to_sequence, train_seq


@pytest.fixture(scope="module")
def digits():
    return load_split()


@pytest.fixture(scope="module")
def trained(digits):
    return train_seq(
        SeqTrainConfig(kind="denseshift", bits=4, hidden=16, epochs=2, exact_epochs=1, warmup_epochs=1),
        digits,
        progress=False,
    )


def test_torch_pwl_equals_the_table_everywhere():
    z = torch.arange(INT16_MIN, INT16_MAX + 1, dtype=torch.int64)
    for t in default_tables(NPUConfig()).values():
        assert np.array_equal(TorchPWL(t)(z).numpy(), t(z.numpy()))


@pytest.mark.parametrize("kind,bits", [("denseshift", 3), ("denseshift", 4), ("int8", 8)])
@pytest.mark.parametrize("gain", [0.0, 2.0])
def test_exact_lstm_equals_golden_at_every_step(kind, bits, gain):
    torch.manual_seed(bits + int(gain))
    m = QuantLSTM(8, 12, kind=kind, bits=bits)
    with torch.no_grad():  # large gains drive gates, cell and h into saturation
        m.log_gain.add_(torch.randn_like(m.log_gain) * 0.5 + gain)
        m.bias.add_(torch.randn_like(m.bias) * (1 + gain))
    xs = torch.randint(-128, 128, (40, 10, 8)).float()
    h_r, h_i = m(xs)
    hs, cs, _, _ = rnn_layer(m.rnn_params(), xs.long().numpy().transpose(1, 0, 2), m.config)
    assert np.array_equal(h_i.numpy(), hs.transpose(1, 0, 2))
    assert np.array_equal(h_r.detach().numpy() * 128, hs.transpose(1, 0, 2))  # the spliced value is exact
    if gain:
        assert np.abs(hs).max() >= 120 and np.abs(cs).max() > 1 << 11
    # straight-through gradients reach the gains, the biases and the weight latents
    h_r[:, -1].square().sum().backward()
    for p in (m.log_gain, m.bias, *m.weight.parameters()):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_golden_equals_torch_bit_for_bit_on_the_test_set(trained, digits, tmp_path):
    net = trained.net
    assert net.phase == "exact"
    path = tmp_path / "seq.npu"
    export_seq_model(net).save(path)
    model = NPUModel.load(path)
    assert [la.kind for la in model.layers] == ["lstm", "dense", "argmax"]
    xs = to_sequence(digits.x_test)
    h_t, logits_t = net.trace(xs)
    trace = dict(golden.forward(model, model.input.quantize(digits.x_test), intermediates=True))
    assert np.array_equal(trace["lstm"], h_t.numpy())
    assert np.array_equal(trace["fc"], logits_t.numpy())
    assert golden.accuracy(model, digits.x_test, digits.y_test) == trained.test_accuracy
    assert trained.test_accuracy > 0.3  # 3 epochs learn something


def test_lstm_layer_validation(trained):
    model = export_seq_model(trained.net)
    la = model.layers[0]
    assert isinstance(la, LSTMLayer)
    with pytest.raises(ModelFormatError, match="cell has 10 fraction bits"):
        NPUModel(NPUConfig(weight_bits=4, cell_frac_bits=10), model.input, model.layers).validate()
    with pytest.raises(ModelFormatError, match="does not fit the config's 3-bit"):
        NPUModel(NPUConfig(weight_bits=3), model.input, model.layers).validate()
    bad = LSTMLayer("lstm", la.W, la.U[:, :-1], la.bias, la.M, la.n, la.tables)
    with pytest.raises(ModelFormatError, match="W has shape"):
        NPUModel(model.config, model.input, [bad, *model.layers[1:]]).validate()
    with pytest.raises(ModelFormatError, match="input must be a sequence"):
        NPUModel(model.config, type(model.input)(shape=(64,)), model.layers).validate()
    # the NPU compiler maps the LSTM (docs/architecture.md) but refuses a batch beyond the gate unit's cells
    compile_model(model)
    with pytest.raises(CompileError, match="cells"):
        compile_model(model, batch=model.config.chan_depth // la.hidden + 1)


def test_cli_train_seq_digits(tmp_path, capsys):
    from sw_driver.cli import main

    out = tmp_path / "seq.npu"
    assert main(["train", "--task", "seq-digits", "--bits", "8", "--hidden", "8", "--epochs", "1",
                 "--exact-epochs", "1", "--no-progress", "-o", str(out)]) == 0  # fmt: skip
    assert "golden model on the file" in capsys.readouterr().out
    m = NPUModel.load(out)
    assert m.metadata["task"] == "seq-digits" and m.config.weight_bits == 8
    assert m.layers[0].W.shape == (32, 8) and m.layers[0].U.shape == (32, 8)
