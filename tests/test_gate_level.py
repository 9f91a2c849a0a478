"""The iCEBreaker's NPU after synthesis: Yosys' gate-level netlist, through the driver, bit-exact.

The RTL simulations (generic and board form) cannot see a mis-synthesis. Here the NPU of the
iCEBreaker's default config (4x4, LSTM memories) is elaborated for the board's platform,
synthesized by YoWASP Yosys with the board build's script (``synth_ice40 -dsp``, abc9 LUT
mapping), written out as a netlist of SB_LUT4 / SB_CARRY / SB_DFF* / SB_RAM40_4K / SB_SPRAM256KA /
SB_MAC16 cells and simulated under Verilator with Yosys' ``ice40/cells_sim.v`` (sim/gate_level.py).
The driver loads models into it and runs them: outputs must equal quant.golden's, cycles the exact
cycle model's (which the RTL tests hold the RTL to). From a cold cache (no ccache) the module took
3 min 21 s wall on the shared, loaded machine, 2 min 39 s of CPU on one core: synthesis ~30 s, Verilator
build ~90 s (-O0 C++), the runs ~75 s; the netlist and the build are cached after that. The ECP5
(ULX3S) netlist runs in bench/gate_level.py only, to keep make test's share short.
"""

import numpy as np
import pytest

from quant.lstm_perf import program_cycles
from quant.model import NPUModel
from quant.npu_compile import largest_batch
from quant.retarget import retarget
from sim.gate_level import MAPPERS, cell_models, npu_netlist_dir, yosys_script
from sim.npu_device import board_config, simulated_npu
from sw_driver.device import Device
from tests.model_factory import random_lstm, random_mlp

BOARD = "icebreaker"
CFG = board_config(BOARD)


def test_yosys_script_is_the_board_builds():
    """The synthesis is Amaranth's synth_ice40 line with the build's options; abc replaces abc9 on request."""
    s = yosys_script("ice40", "npu", "-dsp")
    assert "read_rtlil npu.il\nsynth_ice40 -dsp -top npu\n" in s and "write_verilog -noattr npu_netlist.v" in s
    assert "abc9" not in s  # (synth_ice40's own default mapper)
    s = yosys_script("ice40", "npu", "-dsp", mapper="abc")
    assert "synth_ice40 -dsp -top npu -run begin:map_luts" in s and "abc -lut 4" in s
    assert "synth_ice40 -dsp -top npu -run map_cells:" in s
    assert MAPPERS == ("abc9", "abc")
    with pytest.raises(ValueError, match="unknown LUT mapper"):
        yosys_script("ice40", "npu", mapper="vpr")
    assert [p.name for p in cell_models("ice40")] == ["cells_sim.v"]
    assert [p.name for p in cell_models("ecp5")][2:] == ["ecp5_dp16kd.v", "ecp5_mult18x18d.v"]
    with pytest.raises(ValueError, match="needs a board"):
        with simulated_npu(CFG, netlist=True):
            pass


def test_sim_serve_netlist_option(monkeypatch, capsys):
    """``shiftnpu sim-serve --board icebreaker --netlist`` serves the netlist simulated_npu(netlist=True) serves."""
    import sim.serve
    from sim.npu_device import serve_params
    from sw_driver.cli import main

    seen = {}
    monkeypatch.setattr(sim.serve, "serve", lambda f, p, **kw: seen.update(factory=f, params=p, **kw))
    assert main(["sim-serve", "--port", "0", "--board", "icebreaker", "--netlist"]) == 0
    assert seen["params"] == serve_params(CFG, board=BOARD, netlist=True) and seen["name"] == "npu"
    assert main(["sim-serve", "--port", "0", "--netlist"]) == 2
    assert "--netlist needs --board" in capsys.readouterr().err


@pytest.fixture(scope="module")
def gate_url():
    with simulated_npu(CFG, board=BOARD, netlist=True, start_timeout=1800) as url:
        yield url


def _run(url, model, x, batch):
    from tests.test_npu_board_forms import _run as run_through_driver

    return run_through_driver(url, model, x, batch, timeout=120.0)


def _netlist_cells() -> dict[str, int]:
    """Cell counts of the served netlist (its Yosys ``stat``), from the gate-level cache."""
    stat = npu_netlist_dir(CFG, BOARD) / "stat.txt"
    cells = {}
    for line in stat.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit() and parts[1].startswith("SB_"):
            cells[parts[1]] = int(parts[0])
    return cells


@pytest.mark.slow
def test_gate_level_netlist_runs_models_bit_exact(gate_url):
    """An MLP at batch 9 (3 runs, the last padded), the ARGMAX corner cases, the seq-digits LSTM and a
    random LSTM at batch 2, on the synthesized netlist: golden outputs, the cycle model's cycles."""
    from tests.test_npu_board_forms import _tie_mlp

    with Device(gate_url, timeout=120.0) as dev:
        info = dev.info()  # (out of the link's 512 x 8 SB_RAM40_4K blocks' INIT contents)
    assert info.config == CFG
    # the netlist is the iCE40 one: the hard blocks are there, the logic is LUTs
    cells = _netlist_cells()
    assert cells["SB_RAM40_4K"] == 23 and cells["SB_SPRAM256KA"] == 3 and cells["SB_MAC16"] >= 1
    assert cells["SB_LUT4"] > 1000

    model = random_mlp(1, CFG, sizes=(64, 32, 10))
    x = np.random.default_rng(1).integers(-128, 128, size=(20, 64)).astype(np.int8)
    x[0], x[1], x[2] = -128, 127, 0
    batch = largest_batch(model, CFG)
    assert batch == 9
    r, compiled, _ = _run(gate_url, model, x, batch)
    assert r.cycles == 3 * program_cycles(compiled)

    # ARGMAX: ties (one across N-tiles, one in the last partial tile), all-negative rows, a column at -128
    x = np.random.default_rng(5).integers(-128, 128, size=(14, 64)).astype(np.int8)
    ties = [-1500, -1500, 1500, 1500, 1200, -(2**30), -800, 1200, 2500, 2500]
    r, compiled, logits = _run(gate_url, _tie_mlp(1, ties), x, batch=7)
    top = logits.max(1)
    assert ((logits == top[:, None]).sum(1) > 1).sum() >= 5 and (logits[:, 5] == -128).all()
    assert r.cycles == 2 * program_cycles(compiled)

    # the shipped seq-digits LSTM moved to the board (gate unit, PWL tables, cell memory, SB_MAC16s)
    from quant.digits import load_split

    lstm, batch = retarget(NPUModel.load("examples/seq_digits_lstm_3bit.npu"), CFG)
    split = load_split()
    x = lstm.input.quantize(split.x_test[:2])
    r, compiled, _ = _run(gate_url, lstm, x, batch=batch)
    assert r.cycles == 2 * program_cycles(compiled)

    lstm = random_lstm(3, CFG, inputs=6, hidden=12, steps=4)
    assert largest_batch(lstm, CFG) == 2
    x = np.random.default_rng(6).integers(-128, 128, size=(5, 4, 6)).astype(np.int8)
    r, compiled, _ = _run(gate_url, lstm, x, batch=2)
    assert r.cycles == 3 * program_cycles(compiled)
