"""DenseShift training: the weight parametrizations, and the integer network equal to the golden model."""

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from quant import golden  # noqa: E402
from quant.config import NPUConfig  # noqa: E402
from quant.digits import load_split  # noqa: E402
from quant.fixed import quantize_multiplier  # noqa: E402
from quant.model import NPUModel  # noqa: E402
from quant.train.export import export_model  # noqa: E402
from quant.train.layers import DenseShiftConv2d, DenseShiftLinear  # noqa: E402
from quant.train.network import quantize_multipliers  # noqa: E402
from quant.train.trainer import TrainConfig, to_tensor, train  # noqa: E402
from quant.train.weights import DenseShiftWeight, Int8Weight, PowerOfTwoWithZeroWeight  # noqa: E402


def all_latent_settings(w):
    """Set every latent of a 1-element weight to each sign pattern; yield the integer value."""
    params = [p for p in w.parameters()]
    flat = [(p, idx) for p in params for idx in np.ndindex(p.shape)]
    for signs in itertools.product((-1.0, 1.0), repeat=len(flat)):
        with torch.no_grad():
            for (p, idx), s in zip(flat, signs, strict=True):
                p[idx] = 0.01 * s
        yield float(w.integer()[0].reshape(-1)[0]), float(w().detach().reshape(-1)[0])


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_denseshift_reaches_every_code_and_no_zero(bits):
    w = DenseShiftWeight((1,), bits)
    assert w.scale.shape[0] == 2 ** (bits - 1) - 1  # S = 0 .. 2**(b-1) - 1 needs that many latents
    values = set()
    for v, fwd in all_latent_settings(w):
        assert v == fwd  # the forward pass uses the exact s * 2**S
        values.add(v)
    k = range(2 ** (bits - 1))
    assert values == {s * 2.0**e for s in (-1, 1) for e in k}


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_with_zero_baseline_spends_a_code_on_zero(bits):
    w = PowerOfTwoWithZeroWeight((1,), bits)
    values = {v for v, _ in all_latent_settings(w)}
    assert 0.0 in values and len(values) == 2**bits - 1
    assert max(values) == 2.0 ** (2 ** (bits - 1) - 2)


def test_recursive_exponent_and_surrogate_gradient():
    w = DenseShiftWeight((4,), 3)
    with torch.no_grad():
        # t = (t1, t2, t3) per column; S1 = t1, S2 = (S1 + 1) t2, S3 = (S2 + 1) t3
        t = torch.tensor([[1, 0, 1, 1], [1, 1, 0, 1], [1, 1, 1, 0]], dtype=torch.float32)
        w.scale.copy_(torch.where(t > 0, 0.5, -0.5))
        w.sign.copy_(torch.tensor([0.3, -0.3, 0.0, -0.1]))
    S = w.exponent()
    assert S.tolist() == [3, 2, 1, 0]
    out = w()
    assert out.tolist() == [8.0, -4.0, 2.0, -1.0]  # x >= 0 -> +1 (0.0 is positive)
    out.sum().backward()
    # backward through s * sqrt(S + 1): d/d sign-latent = sqrt(S + 1)
    assert torch.allclose(w.sign.grad, torch.sqrt(S.detach() + 1))
    # d/d t3 = s * (S2 + 1) / (2 sqrt(S3 + 1)), S2 = [2, 1, 0, 2]
    exp = torch.tensor([1.0, -1.0, 1.0, -1.0]) * torch.tensor([3.0, 2.0, 1.0, 3.0]) / (2 * torch.sqrt(S.detach() + 1))
    assert torch.allclose(w.scale.grad[2], exp)


def test_low_variance_init_and_layer_shapes():
    torch.manual_seed(0)
    lin, conv = DenseShiftLinear(200, 300, bits=3), DenseShiftConv2d(8, 16, 3, 1, bits=4)
    for p in list(lin.parameters()) + list(conv.parameters()):
        p = p.detach()
        assert abs(float(p.std()) - 1e-3) < 1e-4 and abs(float(p.mean())) < 1e-4
    assert lin(torch.zeros(2, 200)).shape == (2, 300)
    assert conv(torch.zeros(2, 8, 8, 8)).shape == (2, 16, 8, 8)
    assert conv.weight.scale.shape == (7, 16, 8, 3, 3)


def test_int8_weight_is_symmetric():
    torch.manual_seed(1)
    w = Int8Weight((5, 7))
    v, a = w.integer()
    assert v.abs().max() <= 127 and torch.all(v == v.round())
    assert torch.allclose(w(), v * a[:, None])


def test_vectorized_multiplier_equals_the_reference():
    rng = np.random.default_rng(0)
    s = np.concatenate([2.0 ** rng.uniform(-45, 15.9, 3000), [1.0, 0.5, 65535.0, 65535.49, 2.0**-48]])
    M, n = quantize_multipliers(torch.tensor(s))
    assert list(zip(M.tolist(), n.tolist(), strict=True)) == [quantize_multiplier(float(x)) for x in s]


@pytest.fixture(scope="module")
def digits():
    return load_split()


@pytest.fixture(scope="module", params=["digits-mlp", "digits-cnn"])
def trained(request, digits):
    """A short training run (a few epochs) of a 3-bit DenseShift network, exported."""
    r = train(TrainConfig(task=request.param, bits=3, epochs=3, exact_epochs=1), digits, progress=False)
    return r, export_model(r.net, metadata={"test_accuracy": r.test_accuracy})


def test_golden_equals_torch_bit_for_bit(trained, digits):
    r, model = trained
    net = r.net
    net.eval()
    with torch.no_grad():
        torch_trace = net.trace(to_tensor(net, digits.x_test))
    gold = golden.forward(model, model.input.quantize(digits.x_test), intermediates=True)
    assert [n for n, _ in gold] == [n for n, _ in torch_trace] + ["argmax"]
    for (name, g), (_, t) in zip(gold, torch_trace, strict=False):
        t = t.permute(0, 2, 3, 1) if t.dim() == 4 else t
        t = t.numpy()
        assert np.all(t == np.round(t)), name
        assert g.shape == t.shape and np.array_equal(g.astype(np.int64), t.astype(np.int64)), name
    assert len(gold[-1][1]) == 360
    assert np.array_equal(gold[-1][1], net.predict(to_tensor(net, digits.x_test)).numpy())
    # the trained network was not trivial: the logits use a good part of the int8 range
    assert np.abs(gold[-2][1]).max() > 60


def test_export_load_reproduces_training_accuracy(trained, digits, tmp_path):
    r, model = trained
    p = tmp_path / "m.npu"
    model.save(p)
    acc = golden.accuracy(NPUModel.load(p), digits.x_test, digits.y_test)
    assert acc == r.test_accuracy
    assert acc > 0.85  # even three epochs learn the task


def test_export_refuses_what_the_array_cannot_run(digits):
    r = train(TrainConfig(task="digits-mlp", kind="pot-zero", bits=2, epochs=1, exact_epochs=1), digits, progress=False)
    with pytest.raises(ValueError, match="pot-zero"):
        export_model(r.net)
    r = train(TrainConfig(task="digits-mlp", bits=2, epochs=1, exact_epochs=0), digits, progress=False)
    with pytest.raises(ValueError, match="weight_bits=3"):
        export_model(r.net, NPUConfig(weight_bits=3))
    with pytest.raises(ValueError, match="worst-case accumulator"):
        export_model(r.net, NPUConfig(weight_bits=2, max_k=8))


def test_int8_baseline_exports_bit_exact(digits):
    r = train(TrainConfig(task="digits-mlp", kind="int8", epochs=2, exact_epochs=1), digits, progress=False)
    m = export_model(r.net)
    assert m.config.weight_bits == 8 and m.config.pe_kind == "int8"
    assert golden.accuracy(m, digits.x_test, digits.y_test) == r.test_accuracy


def test_training_is_deterministic(digits):
    cfg = TrainConfig(task="digits-mlp", bits=4, seed=3, epochs=1, exact_epochs=1)
    a, b = (export_model(train(cfg, digits, progress=False).net).to_bytes() for _ in range(2))
    assert a == b


def test_cli_train_then_eval(tmp_path, capsys):
    from sw_driver.cli import main

    out = tmp_path / "mlp.npu"
    assert main(["train", "--task", "digits-mlp", "--bits", "2", "--epochs", "2", "--exact-epochs", "1",
                 "--no-progress", "-o", str(out)]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "golden model on the file" in text
    assert main(["eval", str(out)]) == 0
    text = capsys.readouterr().out
    acc = NPUModel.load(out).metadata["test_accuracy"]
    assert f"integer model test accuracy: {100 * acc:.2f}%" in text and "(same)" in text


def test_cli_eval_reports_a_bad_file(tmp_path, capsys):
    from sw_driver.cli import main

    bad = tmp_path / "bad.npu"
    bad.write_bytes(b"SHIFTNPU\x02\x00")
    assert main(["eval", str(bad)]) == 1
    assert "truncated" in capsys.readouterr().err
