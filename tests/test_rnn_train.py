"""Integer-only RNN QAT (issue 6): GRU and layer norm bit-exact against quant.rnn, adaptive PWL, the GRU
layer in the model file, and the char-LM (data split, export, golden == torch)."""

import json

import numpy as np
import pytest
import torch

from quant import golden
from quant.config import NPUConfig
from quant.digits import load_split
from quant.model import GRULayer, LSTMLayer, ModelFormatError, NPUModel
from quant.pwl import INT16_MAX, INT16_MIN
from quant.rnn import default_tables, isqrt, layer_norm, rnn_layer
from quant.train.charlm import (
    OTHER,
    VOCAB_SIZE,
    CharLM,
    CharTrainConfig,
    encode_text,
    evaluate_bpc,
    export_charlm,
    golden_bpc,
    golden_charlm,
    load_charlm,
    train_charlm,
)
from quant.train.rnn import QuantRNN, isqrt_t, layer_norm_t
from quant.train.seq_digits import SeqTrainConfig, export_seq_model, to_sequence, train_seq


def _perturbed(cell, kind, bits, ln, gain, seed=0, config=None):
    torch.manual_seed(seed)
    m = QuantRNN(cell, 8, 12, kind=kind, bits=bits, layer_norm=ln, config=config)
    with torch.no_grad():  # large gains drive gates, cell and h into saturation
        m.log_gain.add_(torch.randn_like(m.log_gain) * 0.5 + gain)
        m.bias.add_(torch.randn_like(m.bias) * (1 + gain))
        if ln:
            m.ln_gamma.add_(torch.randn_like(m.ln_gamma) * (1 + gain))
            m.ln_beta.add_(torch.randn_like(m.ln_beta))
    return m


def _check_exact(m, xs):
    h_r, h_i = m(xs)
    hs, _, _, _ = rnn_layer(m.rnn_params(), xs.long().numpy().transpose(1, 0, 2), m.config)
    assert np.array_equal(h_i.numpy(), hs.transpose(1, 0, 2))
    assert np.array_equal(h_r.detach().numpy() * 128, hs.transpose(1, 0, 2))  # the spliced value is exact
    return h_r, hs


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("kind,bits", [("denseshift", 3), ("denseshift", 4), ("int8", 8)])
@pytest.mark.parametrize("ln", [False, True])
@pytest.mark.parametrize("gain", [0.0, 2.0])
def test_exact_rnn_equals_golden_at_every_step(cell, kind, bits, ln, gain):
    m = _perturbed(cell, kind, bits, ln, gain, seed=bits + int(gain))
    xs = torch.randint(-128, 128, (10, 20, 8)).float()
    h_r, hs = _check_exact(m, xs)
    if gain and not ln:  # (layer norm undoes the gain)
        assert np.abs(hs).max() >= 120
    # straight-through gradients reach the gains, the biases, LN and the weight latents
    h_r[:, -1].square().sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_integer_layer_norm_torch_equals_golden():
    rng = np.random.default_rng(3)
    H = 24
    z = rng.integers(INT16_MIN, INT16_MAX + 1, size=(50, 4, H))
    z[0] = 1234  # a constant vector normalizes to beta
    z[1] = INT16_MAX
    z[2, :, ::2], z[2, :, 1::2] = INT16_MIN, INT16_MAX  # the largest variance
    z[3] = rng.integers(-3, 4, size=(4, H))  # tiny variance: the epsilon matters
    gamma = rng.integers(INT16_MIN, INT16_MAX + 1, size=(4, H))
    beta = rng.integers(INT16_MIN, INT16_MAX + 1, size=(4, H))
    want = layer_norm(z, gamma, beta)
    got = layer_norm_t(torch.tensor(z), torch.tensor(gamma), torch.tensor(beta)).numpy()
    assert np.array_equal(got, want)
    assert np.array_equal(want[0], np.broadcast_to(beta, (4, H)))
    assert np.abs(want).max() == INT16_MAX + 1 or np.abs(want).max() == INT16_MAX  # saturation reached


def test_isqrt_torch_is_the_exact_floor_square_root():
    rng = np.random.default_rng(0)
    v = np.concatenate(
        [np.arange(0, 5000), rng.integers(0, 1 << 40, 5000), [(1 << 36) - 1, 1 << 36, (1 << 20) ** 2 - 1]]
    )
    s = isqrt_t(torch.tensor(v)).numpy()
    assert np.array_equal(s, isqrt(v))
    assert np.all(s * s <= v) and np.all((s + 1) * (s + 1) > v)


def test_adaptive_pwl_refits_from_the_histogram_and_stays_exact():
    m = _perturbed("lstm", "denseshift", 4, False, 0.0, config=NPUConfig(weight_bits=4, pwl_pieces=8))
    before = dict(m.tables)
    m.collect = True
    xs = torch.randint(-128, 128, (16, 12, 8)).float()
    m(xs)
    counts = {k: float(h.sum()) for k, h in m.hist.items()}
    assert counts["sigmoid"] == 3 * 16 * 12 * 12 and counts["tanh"] == counts["tanh_cell"] == 16 * 12 * 12
    m.refit_tables()
    assert all(float(m.hist[k].sum()) == counts[k] / 2 for k in counts)  # the running histogram decays
    for k, t in m.tables.items():
        assert t.pieces == 8 and t != before[k]
        # knots go where the inputs were: the observed range holds more knots than before
        seen = np.nonzero(m.hist[k].numpy())[0] + INT16_MIN
        lo, hi = seen.min(), seen.max()
        assert np.sum((t.knots >= lo) & (t.knots <= hi)) >= np.sum((before[k].knots >= lo) & (before[k].knots <= hi))
    m.collect = False
    _check_exact(m, xs)  # the refitted tables are what rnn_params() exports


@pytest.fixture(scope="module")
def digits():
    return load_split()


@pytest.mark.parametrize("cell,ln,bits", [("gru", False, 4), ("gru", True, 8), ("lstm", True, 3)])
def test_seq_digits_gru_and_layer_norm_golden_equals_torch(cell, ln, bits, digits, tmp_path):
    kind = "int8" if bits == 8 else "denseshift"
    r = train_seq(
        SeqTrainConfig(
            kind=kind, bits=bits, hidden=8, cell=cell, layer_norm=ln, epochs=2, exact_epochs=1, warmup_epochs=1,
            adaptive_pwl=True, refit_every=1,
        ),
        digits,
        progress=False,
    )  # fmt: skip
    net = r.net
    path = tmp_path / "m.npu"
    export_seq_model(net).save(path)
    model = NPUModel.load(path)
    la = model.layers[0]
    assert isinstance(la, GRULayer if cell == "gru" else LSTMLayer) and la.kind == cell
    assert la.layer_norm == ln
    assert la.tables == {k: net.lstm.tables[k] for k in la.TABLES}  # the adapted tables are in the file
    h_t, logits_t = net.trace(to_sequence(digits.x_test))
    trace = dict(golden.forward(model, model.input.quantize(digits.x_test), intermediates=True))
    assert np.array_equal(trace[cell], h_t.numpy())
    assert np.array_equal(trace["fc"], logits_t.numpy())
    assert golden.accuracy(model, digits.x_test, digits.y_test) == r.test_accuracy


def test_lstm_file_format_without_layer_norm_is_unchanged():
    from quant.rnn import random_params

    cfg = NPUConfig(weight_bits=4)
    la = LSTMLayer.from_params("lstm", random_params("lstm", 8, 6, cfg, np.random.default_rng(0)))
    assert "layer_norm" not in la.to_manifest()
    assert not any(k.startswith("ln_") for k in la.arrays())


def test_recurrent_layer_validation():
    from quant.model import InputSpec
    from quant.rnn import random_params

    cfg = NPUConfig(weight_bits=4)
    rng = np.random.default_rng(1)
    p = random_params("gru", 8, 6, cfg, rng)
    p.ln_gamma = rng.integers(-4096, 4096, size=(4, 6))
    p.ln_beta = rng.integers(-4096, 4096, size=(4, 6))
    gru = GRULayer.from_params("gru", p)
    inp = InputSpec(shape=(5, 8), multiplier=1, raw_max=127, scale=1 / 128)
    m = NPUModel(cfg, inp, [gru])
    back = NPUModel.from_bytes(m.to_bytes())
    assert isinstance(back.layers[0], GRULayer) and np.array_equal(back.layers[0].ln_gamma, gru.ln_gamma)
    x = rng.integers(-128, 128, size=(7, 5, 8)).astype(np.int8)
    hs, _, h_T, _ = rnn_layer(p, x.transpose(1, 0, 2), cfg)
    assert np.array_equal(golden.forward(back, x), h_T)
    with pytest.raises(ValueError, match="kind 'lstm'"):
        LSTMLayer.from_params("x", p)
    with pytest.raises(ModelFormatError, match="W has shape"):
        NPUModel(cfg, inp, [GRULayer("gru", gru.W[:-1], gru.U, gru.bias, gru.M, gru.n, gru.tables)]).validate()
    with pytest.raises(ModelFormatError, match="needs both ln_gamma and ln_beta"):
        NPUModel(cfg, inp, [GRULayer("gru", gru.W, gru.U, gru.bias, gru.M, gru.n, gru.tables, gru.ln_gamma)]).validate()
    with pytest.raises(ModelFormatError, match="missing PWL table"):
        NPUModel(cfg, inp, [GRULayer("gru", gru.W, gru.U, gru.bias, gru.M, gru.n, {})]).validate()
    # a manifest that claims layer norm without its arrays is refused
    buf = bytearray(NPUModel(cfg, inp, [GRULayer("gru", gru.W, gru.U, gru.bias, gru.M, gru.n, gru.tables)]).to_bytes())
    i = buf.index(b'"kind": "gru"')
    buf[i : i + 13] = b'"kind":"gru",'[:13]
    with pytest.raises(ModelFormatError):
        NPUModel.from_bytes(bytes(buf))  # the CRC catches any edit; the flag check is exercised below
    d = gru.to_manifest() | {"layer_norm": True}
    arrays = {k: v for k, v in GRULayer("gru", gru.W, gru.U, gru.bias, gru.M, gru.n, gru.tables).arrays().items()}
    with pytest.raises(ModelFormatError, match="'layer_norm' is true but the arrays ln_gamma/ln_beta are missing"):
        GRULayer.from_manifest(json.loads(json.dumps(d)), arrays)


def test_char_data_split_and_vocabulary():
    assert list(encode_text("\nA ~é")) == [0, ord("A") - 31, 1, ord("~") - 31, OTHER]
    d = load_charlm()
    n = d.chars
    assert len(d.train) + len(d.valid) + len(d.test) == n > 400_000
    assert len(d.train) == int(0.9 * n) and abs(len(d.valid) - len(d.test)) <= 1
    assert d.train.max() < VOCAB_SIZE and d.test.max() < VOCAB_SIZE
    assert len(d.sha256) == 64


@pytest.fixture(scope="module")
def tiny_lm():
    cfg = CharTrainConfig(kind="denseshift", bits=4, embed=8, hidden=16, steps=6, warmup_steps=2, refit_every=2,
                          seq_len=16, batch_size=8)  # fmt: skip
    return train_charlm(cfg, progress=False)


def test_charlm_golden_equals_torch(tiny_lm, tmp_path):
    r = tiny_lm
    net = r.net
    assert net.rnn.phase == "exact" and np.isfinite(r.test_bpc) and r.test_bpc < 7.0  # below log2(97) = 6.6 + slack
    ids = torch.tensor(load_charlm().test[: 10 * 17].astype(np.int64)).view(10, 17)
    h_i, acc = net.trace(ids)
    arrays = export_charlm(net)
    np.savez(tmp_path / "lm.npz", **arrays)
    with np.load(tmp_path / "lm.npz") as f:
        loaded = {k: f[k] for k in f.files}
    assert np.array_equal(golden_charlm(loaded, ids.numpy()), acc.numpy())
    test = load_charlm().test[:2001]
    assert golden_bpc(loaded, test, 16) == pytest.approx(evaluate_bpc(net, test, 16), abs=1e-5)


def test_charlm_is_deterministic_and_sizes(tiny_lm):
    again = train_charlm(tiny_lm.config, progress=False)
    assert again.test_bpc == tiny_lm.test_bpc
    fp = CharLM("fp32", 32, embed=32, hidden=128).parameter_bytes()
    i8 = CharLM("int8", 8, embed=32, hidden=128).parameter_bytes()
    d4 = CharLM("denseshift", 4, embed=32, hidden=128).parameter_bytes()
    assert fp["weights"] == 4 * i8["weights"] == 8 * d4["weights"]
    assert fp["total"] / d4["total"] >= 7.0 and fp["total"] / i8["total"] > 3.5


def test_cli_train_charlm(tmp_path, capsys):
    from sw_driver.cli import main

    out = tmp_path / "lm.npz"
    assert main(["train", "--task", "charlm", "--bits", "8", "--hidden", "8", "--steps", "2", "--no-progress",
                 "--cell", "gru", "-o", str(out)]) == 0  # fmt: skip
    assert "golden model on the file" in capsys.readouterr().out
    with np.load(out) as f:
        meta = json.loads(str(f["metadata"]))
        assert meta["task"] == "charlm" and str(f["cell"]) == "gru" and f["W"].shape == (24, 32)


def test_cli_train_seq_digits_gru(tmp_path):
    from sw_driver.cli import main

    out = tmp_path / "g.npu"
    assert main(["train", "--task", "seq-digits", "--bits", "4", "--hidden", "8", "--epochs", "1", "--exact-epochs",
                 "1", "--cell", "gru", "--layer-norm", "--pwl-pieces", "8", "--no-progress", "-o", str(out)]) == 0  # fmt: skip
    m = NPUModel.load(out)
    assert m.layers[0].kind == "gru" and m.layers[0].layer_norm and m.layers[0].tables["tanh"].pieces == 8
    assert m.metadata["cell"] == "gru"


def test_bad_arguments():
    with pytest.raises(ValueError, match="cell must be"):
        QuantRNN("rnn", 4, 4)
    with pytest.raises(ValueError, match="unknown weight kind"):
        train_charlm(CharTrainConfig(kind="pot-zero"), progress=False)
    with pytest.raises(ValueError, match="no layer norm"):
        QuantRNN("gru", 4, 4).ln_integer()
    _ = default_tables  # the non-adaptive tables stay importable for the golden tests
