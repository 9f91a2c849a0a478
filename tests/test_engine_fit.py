"""The 8x8 GEMM engine (array, buffers, requantizer, control) fits the iCE40UP5K and meets 40 MHz.

A real YoWASP build (Yosys ``synth_ice40 -dsp`` + nextpnr) of ``GemmEngine(NPUConfig())`` inside
the pin harness of hw/synth.py; about two minutes. Figures and how they came about:
docs/architecture.md "Area and timing status", bench/results/area.md.
"""

import pytest

from hw.gemm import GemmEngine
from hw.synth import synthesize
from quant.config import NPUConfig

#: Logic cells the engine may use: well under the UP5K's 5280 so that the sequencer, host
#: interface, UART and LSTM gate unit fit beside it (the measured figure is in area.md).
LC_BUDGET = 3800


@pytest.mark.slow
def test_engine_fits_up5k_at_40mhz(tmp_path):
    rep = synthesize(
        lambda: GemmEngine(NPUConfig()), "icebreaker", freq_mhz=40, build_dir=tmp_path, synth_opts="-dsp"
    )
    print(rep.summary())
    assert rep.fits, rep.summary()
    assert rep.timing_met, rep.summary()
    assert rep.logic <= LC_BUDGET, rep.summary()
    # the weight memory and the channel biases live in the four SPRAMs, the rest in EBR
    assert rep.cells["ICESTORM_SPRAM"][0] == 4, rep.summary()
    assert rep.cells["ICESTORM_RAM"][0] <= 29, rep.summary()
    assert 1 <= rep.cells["ICESTORM_DSP"][0] <= 3, rep.summary()
