"""The LSTM path: gate-mode GEMM + PWL_LOAD + LSTM on the NPU core (cocotb) against the word-level
device model, and the device model against the golden model (quant.golden / quant.rnn)."""

import dataclasses

import numpy as np
import pytest

from hw.rnn import GateUnit
from quant import golden
from quant.compile import CompileError
from quant.config import NPUConfig
from quant.device_model import DeviceModel
from quant.gate_map import cell_depth, entry_words, table_entries, tables_from_entries
from quant.model import NPUModel
from quant.npu_compile import compile_model
from quant.program import Instr, Op, decode_program, encode_program
from quant.rnn import default_tables
from quant.tiling import unpack_features
from tests.model_factory import random_lstm
from tests.test_npu_core import CFG, run_npu_core  # the same NPUCore build as tests/test_npu_core.py

#: the smallest array with the LSTM path (a unit's gates span two feature words); the memories of the
#: iCEBreaker's 4x4 build for a hidden-32 LSTM (``shiftnpu build --board icebreaker --rows 4 --cols 4
#: --chan-depth 256 --weight-depth 2048``), with a larger feature memory for the batches here
CFG4 = NPUConfig(rows=4, cols=4, act_depth=1024, chan_depth=256, weight_depth=2048, m_block=32, prog_depth=128)

SEQ_MODEL = "examples/seq_digits_lstm_3bit.npu"


def _images(compiled, x):
    """Whole memory images (feature from word 0) for a compiled model and its inputs."""
    feature = [0] * compiled.feature_words
    for base, words in compiled.feature_init + compiled.input_images(x):
        feature[base : base + len(words)] = words
    return {"feature": feature, "weight": compiled.weight, "channel": compiled.channel, "program": compiled.program}


def _run_model(cfg, compiled, x) -> DeviceModel:
    dm = DeviceModel(cfg)
    for name, words in _images(compiled, x).items():
        getattr(dm, name)[: len(words)] = words
    dm.run()
    return dm


def _outputs(compiled, dm):
    return compiled.decode_outputs([dm.feature[b : b + n] for b, n in compiled.read_plan()])


_DM_CASES = [
    ({"seed": 1}, 4),
    ({"seed": 2, "inputs": 11, "hidden": 20, "steps": 5}, 3),  # partial x and h tiles, odd H
    ({"seed": 3, "hidden": 8, "gain": 8.0}, 8),  # saturated gates and cell
    ({"seed": 4, "inputs": 3, "hidden": 1, "steps": 2}, 1),
]


@pytest.mark.parametrize(
    "cfg,kw,batch",
    [(CFG, kw, b) for kw, b in _DM_CASES]
    + [(CFG4, kw, b) for kw, b in _DM_CASES]
    + [(CFG4, {"seed": 5, "inputs": 8, "hidden": 32, "steps": 8}, 4)],  # issue #5's layer (4H + 10 channels)
    ids=[f"8x8-{i}" for i in range(4)] + [f"4x4-{i}" for i in range(4)] + ["4x4-h32"],
)
def test_device_model_lstm_equals_golden(cfg, kw, batch):
    model = random_lstm(config=cfg, **kw)
    compiled = compile_model(model, batch, cfg)
    x = np.random.default_rng(kw["seed"]).integers(-128, 128, size=(batch, *model.input.shape))
    logits, classes = _outputs(compiled, _run_model(cfg, compiled, x))
    trace = golden.forward(model, x, intermediates=True)
    assert np.array_equal(logits, trace[-2][1])
    assert np.array_equal(classes, trace[-1][1])


def _h_matrix(compiled, dm):
    """The LSTM op's last h (``m x H``) as the device holds it: HT tiles of m words at h_base."""
    lstm = next(i for i in decode_program(compiled.program) if i.op == Op.LSTM).args
    HT = -(-lstm["hidden"] // compiled.config.rows)
    words = dm.feature[lstm["h_base"] : lstm["h_base"] + HT * lstm["m"]]
    return unpack_features(words, lstm["m"], lstm["hidden"], compiled.config.rows)


@pytest.mark.parametrize("cfg,hidden", [(CFG, 24), (CFG4, 32)], ids=["8x8", "4x4"])
def test_device_model_h_equals_golden_at_every_step(cfg, hidden):
    """h_t after each step t (a program of t steps over the first t inputs); the test 8x8 build's
    128 channels hold 4H + 10 for H <= 29."""
    model = random_lstm(6, cfg, inputs=8, hidden=hidden, steps=8)
    x = np.random.default_rng(6).integers(-128, 128, size=(3, 8, 8))
    for t in range(1, 9):
        mt = dataclasses.replace(model, input=dataclasses.replace(model.input, shape=(t, 8)))
        compiled = compile_model(mt, 3, cfg)
        h = _h_matrix(compiled, _run_model(cfg, compiled, x[:, :t]))
        assert np.array_equal(h, golden.lstm(x[:, :t], model.layers[0], cfg)), f"step {t}"


def test_trained_model_on_device_model():
    model = NPUModel.load(SEQ_MODEL)
    cfg = model.config
    compiled = compile_model(model, 8, cfg)
    x = np.random.default_rng(0).integers(0, 113, size=(8, 8, 8))
    logits, classes = _outputs(compiled, _run_model(cfg, compiled, x))
    trace = golden.forward(model, x, intermediates=True)
    assert np.array_equal(logits, trace[-2][1]) and np.array_equal(classes, trace[-1][1])


def test_trained_model_on_4x4_device_model():
    """The shipped seq-digits LSTM (8 -> 32, 8 steps) re-embedded with a 4x4 config (its integer network
    does not depend on the array; the file itself keeps its 8x8 config) runs bit-exact on the 4x4 device."""
    model = NPUModel.load(SEQ_MODEL)
    model4 = dataclasses.replace(model, config=CFG4)
    compiled = compile_model(model4, 8, CFG4)
    x = np.random.default_rng(0).integers(0, 113, size=(8, 8, 8))
    logits, classes = _outputs(compiled, _run_model(CFG4, compiled, x))
    trace = golden.forward(model, x, intermediates=True)
    assert np.array_equal(logits, trace[-2][1]) and np.array_equal(classes, trace[-1][1])


def test_table_addresses_match_the_gate_unit():
    cfg = NPUConfig()
    tables = default_tables(cfg)
    gu = GateUnit(cfg, "lstm", hidden=cell_depth(cfg), z_in=True)
    gu._MustUse__silence = True  # only its address map is read
    from hw.rnn import REGION_PWL

    hw = [(a & ((1 << gu.offset_width) - 1), v) for a, v in gu.table_writes(tables)]
    assert all(a >> gu.offset_width == REGION_PWL for a, _ in gu.table_writes(tables))
    ours = [(a, v & 0xFFFF) for a, v in table_entries(cfg, tables)]
    assert ours == hw
    back = tables_from_entries(cfg, dict(table_entries(cfg, tables)))
    for k, t in tables.items():
        assert np.array_equal(back[k].knots, t.knots) and np.array_equal(back[k].m, t.m)
    assert len(entry_words(cfg, ours)) == -(-len(ours) // 2)


def test_cycle_model_matches_the_gate_unit():
    from quant.lstm_perf import pwl_latency, unit_cycles

    for cfg in (NPUConfig(), NPUConfig(pwl_pieces=8), NPUConfig(pwl_pieces=32), CFG4):
        gu = GateUnit(cfg, "lstm", hidden=cell_depth(cfg), z_in=True)
        gu._MustUse__silence = True  # only its figures are read
        assert pwl_latency(cfg) == gu.pwl.latency
        # + the sequencer's z read (registered port, registered word; at 4x4 two words back to back)
        assert unit_cycles(cfg) == gu.cycles_per_unit + (4 if cfg.cols == 4 else 3)


def test_program_format_round_trip_and_flags():
    prog = [
        Instr(Op.PWL_LOAD, {"src": 3, "count": 74}),
        Instr(
            Op.LSTM,
            dict(m=2, hidden=32, steps=8, x_base=1, act_base=2, z_base=3, wgt_base=4, chan_base=5, xt=1, h_base=4),
        ),
        Instr(Op.GEMM, dict(m=1, n=2, kt=1, nt=1, act_base=0, out_base=1, wgt_base=0, chan_base=0), gate=True),
    ]
    assert decode_program(encode_program(prog))[:3] == prog
    with pytest.raises(ValueError, match="gate"):
        Instr(
            Op.GEMM, dict(m=1, n=2, kt=1, nt=1, act_base=0, out_base=1, wgt_base=0, chan_base=0), relu=True, gate=True
        )
    with pytest.raises(ValueError, match="flags"):
        Instr(Op.LSTM, prog[1].args, relu=True)


def test_compiler_refuses_what_the_lstm_path_cannot_run():
    model = random_lstm(1, CFG, hidden=16)
    with pytest.raises(CompileError, match="cells"):
        compile_model(model, cell_depth(CFG) // 16 + 1, CFG)
    for small in (NPUConfig(rows=2, cols=2), NPUConfig(rows=12, cols=12)):
        with pytest.raises(CompileError, match="square power-of-two array of at least 4x4"):
            compile_model(random_lstm(1, small), 1, small)
    odd = CFG.replace(pwl_pieces=8)
    with pytest.raises(CompileError, match="pieces"):
        compile_model(random_lstm(1, CFG), 1, odd)
    ln = random_lstm(1, CFG, hidden=16)
    H = ln.layers[0].hidden
    ln.layers[0] = dataclasses.replace(
        ln.layers[0], ln_gamma=np.ones((4, H), np.int64) << 12, ln_beta=np.zeros((4, H), np.int64)
    )
    with pytest.raises(CompileError, match="layer norm"):
        compile_model(ln, 1, CFG)


def _scenario(name, cfg, model, batch, seed):
    """A compiled model's run for npu_bench: memory images, the words to check, its modelled cycles."""
    from quant.lstm_perf import program_cycles

    compiled = compile_model(model, batch, cfg)
    x = np.random.default_rng(seed).integers(-128, 128, size=(batch, *model.input.shape))
    return {
        "name": name,
        "images": _images(compiled, x),
        "check_words": compiled.feature_words,
        "cycles": program_cycles(compiled),
    }


def test_npu_core_runs_lstm_programs():
    """NPUCore (engine + sequencer + gate unit) leaves the feature memory exactly as the device model does."""
    scenarios = [
        _scenario("lstm-h16", CFG, random_lstm(1, CFG), 4, 1),
        _scenario("lstm-odd", CFG, random_lstm(2, CFG, inputs=11, hidden=20, steps=3), 3, 2),
        _scenario("lstm-sat", CFG, random_lstm(3, CFG, hidden=8, steps=4, gain=8.0), 5, 3),
        _scenario("lstm-one", CFG, random_lstm(4, CFG, inputs=3, hidden=4, steps=2), 1, 4),  # one-row GEMMs
    ]
    # a gate-mode GEMM on its own (int16 results, two words per row and N-tile)
    gm = _scenario("lstm-h16", CFG, random_lstm(5, CFG, hidden=12, steps=1), 2, 5)
    prog = decode_program(gm["images"]["program"])
    lstm = next(i for i in prog if i.op == Op.LSTM)
    gemm = Instr(
        Op.GEMM,
        {"m": 2, "n": 48, "kt": 3, "nt": 6, "act_base": lstm.args["x_base"], "out_base": lstm.args["z_base"]}
        | {"wgt_base": lstm.args["wgt_base"], "chan_base": lstm.args["chan_base"]},
        gate=True,
    )
    gm["images"]["program"] = encode_program([gemm])
    gm["name"] = "gate-gemm"
    del gm["cycles"]  # a lone gate-mode GEMM: its figure is not the model's program
    scenarios.append(gm)
    run_npu_core(CFG, 256, scenarios)


def test_npu_core_4x4_runs_lstm_programs():
    """A 4x4 NPUCore (a unit's four gates in two feature words, h four units a word) leaves the feature
    memory exactly as the device model does, in exactly quant.lstm_perf's cycles."""
    cases = [
        ("lstm4-h32", random_lstm(1, CFG4, inputs=8, hidden=32, steps=8), 2, 1),  # issue #5's layer
        ("lstm4-odd", random_lstm(2, CFG4, inputs=11, hidden=21, steps=3), 3, 2),  # partial x and h tiles
        ("lstm4-sat", random_lstm(3, CFG4, hidden=8, steps=4, gain=8.0), 5, 3),  # saturated gates and cell
        ("lstm4-one", random_lstm(4, CFG4, inputs=3, hidden=1, steps=2), 1, 4),  # one unit, one-row GEMMs
    ]
    scenarios = [_scenario(name, CFG4, model, batch, seed) for name, model, batch, seed in cases]
    run_npu_core(CFG4, 128, scenarios)
