"""The 8x8 GEMM engine on the iCE40UP5K: real YoWASP builds (Yosys ``synth_ice40 -dsp`` + nextpnr).

``GemmEngine(NPUConfig())`` (without the LSTM gate mode, the default; the gate-capable engine of an
NPU with ``rnn=True`` is a few hundred LCs larger) inside the pin harness of hw/synth.py, and its
requantizer alone. The engine fits the UP5K (5049 of 5280 LCs measured on main): weights and
channel biases in the four SPRAMs, the rest in 29 of the 30 EBRs, the requantizer's multiply on two
SB_MAC16. Issue #4 asks for 40 MHz: the registered engine control reached 41.3 MHz (4986 LC) on its
own, but with the block-RAM read registers added for the ECP5 the engine measures 39.3 MHz (seed 1;
critical path i_row -> i_last -> last_kt -> the loader's clock enables). The test guards the fit and
the Fmax reached; raise ENGINE_FMAX_FLOOR to 40 once it closes. Figures and what is left:
docs/architecture.md "Area and timing status".
"""

import pytest

from hw.gemm import GemmEngine
from hw.requant import Requantizer
from hw.synth import synthesize
from quant.config import NPUConfig

#: Measured logic cells (docs/architecture.md) plus a margin for place-and-route noise; the UP5K
#: has 5280. Lower it as the engine shrinks.
ENGINE_LC_BOUND = 5150
#: 39.3 MHz measured at a 40 MHz target (seed 1), less a margin for netlist changes. Issue #4's
#: target is 40 (goal 50).
ENGINE_FMAX_FLOOR = 38.0


@pytest.mark.slow
def test_engine_fits_up5k(tmp_path):
    rep = synthesize(lambda: GemmEngine(NPUConfig()), "icebreaker", freq_mhz=40, build_dir=tmp_path, synth_opts="-dsp")
    print(rep.summary())
    assert rep.fits, rep.summary()
    assert rep.fmax >= ENGINE_FMAX_FLOOR, rep.summary()
    assert rep.cells["ICESTORM_SPRAM"][0] == 4, rep.summary()  # weights (2) and channel biases (2)
    assert rep.cells["ICESTORM_RAM"][0] <= 29, rep.summary()  # features 16, accumulators 11, M/n 2
    assert rep.cells["ICESTORM_DSP"][0] == 2, rep.summary()  # the requantizer's 16 x 16 partial products
    assert rep.logic <= ENGINE_LC_BOUND, rep.summary()


@pytest.mark.slow
def test_requantizer_meets_40mhz_on_up5k(tmp_path):
    rep = synthesize(
        lambda: Requantizer(NPUConfig(), tag_width=12), "icebreaker", freq_mhz=40, build_dir=tmp_path, synth_opts="-dsp"
    )
    print(rep.summary())
    assert rep.fits and rep.timing_met, rep.summary()
    assert rep.cells["ICESTORM_DSP"][0] == 2 and rep.logic <= 700, rep.summary()
