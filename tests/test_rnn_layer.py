"""cocotb on Verilator: whole LSTM/GRU layers (SequentialRNNLayer) bit-exact against quant.rnn at every step."""

import pytest

from hw.rnn_layer import SequentialRNNLayer
from quant.config import NPUConfig
from sim.runner import run_cocotb

pytestmark = pytest.mark.filterwarnings("ignore:.*created but never used")

CFG = NPUConfig()
MAX = {"max_in": 8, "max_hidden": 64, "max_steps": 64}


def _run(kind, cases):
    params = {"config": CFG.to_dict(), "kind": kind, **MAX}
    run_cocotb(
        f"rnn_layer_{kind}",
        params,
        lambda: SequentialRNNLayer(CFG, kind, **MAX),
        "rnn_bench",
        bench_params={**params, "cases": cases},
    )


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_rnn_layer_sequences(kind):
    cases = [
        {"inputs": 8, "hidden": 32, "steps": 50, "seed": 1},
        {"inputs": 3, "hidden": 9, "steps": 30, "seed": 6, "adaptive": True},
        {"inputs": 8, "hidden": 64, "steps": 50, "seed": 2},
        {"inputs": 5, "hidden": 7, "steps": 20, "seed": 3, "mode": "saturate", "gain": 40.0},
        {"inputs": 8, "hidden": 16, "steps": 50, "seed": 4, "mode": "allmax"},
        {"inputs": 8, "hidden": 16, "steps": 50, "seed": 5, "mode": "allmin"},
    ]
    _run(kind, cases)
