"""The pre-synthesis estimator: structural FF count, fit decisions, speed, and `build` refusing early."""

import time

import pytest

from hw.estimate import count_ffs, estimate
from quant.config import NPUConfig
from sw_driver.cli import main


def test_ff_count_matches_the_structure():
    # 1x1 array, 3-bit: banks 6 + product register 12 (11 distinct bits + carry-in) + psum 12,
    # no skew/deskew, valid 2; harness: 5 + 8 + 3 inputs, 12 + 2 outputs
    cfg = NPUConfig(rows=1, cols=1, weight_bits=3, max_k=1)
    assert count_ffs(cfg, harness=False) == 6 + 12 + 12 + 2
    assert count_ffs(cfg) == 6 + 12 + 12 + 2 + 16 + 14
    # growing the array adds PEs, skew and deskew, never removes flip-flops
    sizes = [count_ffs(NPUConfig(rows=n, cols=n)) for n in (2, 4, 8, 16)]
    assert sizes == sorted(sizes) and sizes[-1] > 4 * sizes[-2] * 0.9


def test_fit_decisions():
    assert estimate(NPUConfig(), "icebreaker", design="array").fits
    assert estimate(NPUConfig(rows=16, cols=16), "ulx3s-85f").fits
    e = estimate(NPUConfig(weight_bits=8), "icebreaker", design="array")  # int8 8x8: ~3x the UP5K's logic
    assert not e.fits and e.over == ["logic"] and "does not fit" in e.text()
    e = estimate(NPUConfig(rows=16, cols=16, weight_bits=8), "ulx3s-85f", design="array")  # 256 mults > 156 DSPs
    assert not e.fits and "dsp" in e.over and e.dsp == 256
    assert estimate(NPUConfig(weight_bits=8), "ulx3s-85f", design="array").dsp == 64
    # the whole NPU's default memories alone need more block RAM than the UP5K has
    e = estimate(NPUConfig(), "icebreaker")
    assert not e.fits and "bram" in e.over and e.shortfall()["bram"] == e.bram > 30
    assert e.blocks.keys() == {"array", "engine", "sequencer", "link"} and sum(e.blocks.values()) == e.logic


def test_shift_needs_far_less_logic_than_int8():
    s = estimate(NPUConfig(rows=4, cols=4), "icebreaker", design="array").logic
    i = estimate(NPUConfig(rows=4, cols=4, weight_bits=8), "icebreaker", design="array").logic
    assert 2 * s < i  # no DSP used on iCE40: the multiplier is logic
    # on ECP5 the multiplier goes to a DSP per PE instead
    s, i = (estimate(NPUConfig(rows=4, cols=4, weight_bits=b), "ulx3s-85f", design="array") for b in (3, 8))
    assert i.dsp - s.dsp == 16


def test_estimate_is_fast():
    t0 = time.monotonic()
    for n in (4, 8, 16, 32):
        for bits in (2, 3, 4, 8):
            for design in ("npu", "array"):
                estimate(NPUConfig(rows=n, cols=n, weight_bits=bits), "ulx3s-85f", design=design)
    assert time.monotonic() - t0 < 1.0


def test_estimate_cli(capsys):
    assert main(["estimate", "--board", "icebreaker", "--design", "array"]) == 0
    assert "fits" in capsys.readouterr().out
    assert main(["estimate", "--board", "icebreaker", "--design", "array", "--bits", "8"]) == 1
    assert "DOES NOT FIT" in capsys.readouterr().out
    assert main(["estimate", "--board", "ulx3s-85f", "--rows", "16", "--cols", "16"]) == 0
    assert "whole NPU" in capsys.readouterr().out


def test_build_refuses_before_yosys(tmp_path, capsys):
    from hw.build import BuildError, build

    t0 = time.monotonic()
    with pytest.raises(BuildError, match="does not fit"):
        build(NPUConfig(weight_bits=8), "icebreaker", build_dir=tmp_path, progress=False)
    assert time.monotonic() - t0 < 5 and not any(tmp_path.iterdir())  # no tool ran
    assert main(["build", "--board", "icebreaker", "--bits", "8", "--build-dir", str(tmp_path)]) == 1
    assert "does not fit" in capsys.readouterr().err


def test_memory_blocks():
    from hw.estimate import memory_blocks

    assert memory_blocks(2048, 32, "ice40", "spram") == 2  # two 16-bit SPRAMs side by side
    assert memory_blocks(40000, 16, "ice40", "spram") == 3
    assert memory_blocks(2048, 8, "ice40") == 4  # 512x8 EBRs
    assert memory_blocks(256, 16, "ice40") == 1
    assert memory_blocks(2048, 32, "ecp5") == 4  # 512x36 DP16KDs
    assert memory_blocks(16384, 1, "ecp5") == 1
    e = estimate(NPUConfig(), "icebreaker")
    # 1024 words of 8 int8 lanes: 16 of the 512x8 EBRs; 1024 x 24-bit weights: 6 of the 1024x4
    assert e.buffers["feature"][1:] == ("bram", 16) and e.buffers["weights"][1:] == ("bram", 6)
    assert estimate(NPUConfig(), "ulx3s-85f").buffers["feature"][1:] == ("bram", 4)  # 512x36 DP16KDs


def test_model_matches_the_committed_measurements():
    """The estimator's coefficients are the ones `calibrate` fits to bench/results/area.json."""
    from pathlib import Path

    from hw.estimate import MODEL, calibrate

    fitted = calibrate(Path(__file__).resolve().parent.parent / "bench" / "results" / "area.json")
    for fam in ("ice40", "ecp5"):
        assert fitted["logic"][fam] == pytest.approx(MODEL["logic"][fam], rel=0.02)
        for wb, ab in MODEL["pe_lut"][fam].items():
            assert fitted["pe_lut"][fam][wb] == pytest.approx(ab, abs=0.6)
        for kind, f in MODEL["fmax"][fam].items():
            assert fitted["fmax"][fam][kind] == pytest.approx(f, abs=1)
