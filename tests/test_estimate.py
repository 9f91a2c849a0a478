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
    assert e.blocks.keys() == {"array", "engine", "sequencer", "link", "gate unit"}
    assert sum(e.blocks.values()) == e.logic
    # the engine's weights and biases go to the UP5K's four SPRAMs, as the RTL maps them
    assert e.spram == 4 and e.buffers["weights"][1:] == ("spram", 2) and e.buffers["bias"][1:] == ("spram", 2)


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
    args = ["estimate", "--board", "icebreaker", "--design", "array", "--bits", "8", "--rows", "8", "--cols", "8"]
    assert main(args) == 1
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
    # 1024 words of 8 int8 lanes: 16 of the 512x8 EBRs; the weights in SPRAM
    assert e.buffers["feature"][1:] == ("bram", 16) and e.buffers["weights"][1:] == ("spram", 2)
    # the accumulator (256 x 176 bits) is 256 x 16 EBR primitives side by side; the PWL's knot
    # levels are block RAM on iCE40 even when tiny
    assert e.buffers["accumulator"][1:] == ("bram", 11) and e.buffers["PWL knots 0"][1:] == ("bram", 1)
    # the LSTM path (gate unit, its PWL and cell memories, two DSPs) only where the NPU has it
    # (quant.gate_map.lstm_supported: square power-of-two arrays from 4x4)
    e2 = estimate(NPUConfig(rows=2, cols=2), "icebreaker")
    assert "gate unit" not in e2.blocks and not any(k.startswith("PWL") for k in e2.buffers)
    assert e.dsp - e2.dsp == 2 and "gate unit" in e.blocks and e.buffers["PWL knots 3"][1:] == ("bram", 1)
    e4 = estimate(NPUConfig(rows=4, cols=4), "icebreaker")
    assert "gate unit" in e4.blocks and e4.dsp == e.dsp and e4.buffers["PWL knots 3"][1:] == ("bram", 1)
    u = estimate(NPUConfig(), "ulx3s-85f")
    assert u.buffers["feature"][1:] == ("bram", 4) and u.spram == 0  # 512x36 DP16KDs
    assert u.buffers["PWL m"][1:] == ("lutram", 0) and u.buffers["weights"][1:] == ("bram", 2)


def test_board_default_configs(capsys):
    """Each board has a default config (issue #9's targets) that build and estimate use unless the
    generator options replace its fields; NPUConfig's own defaults do not change."""
    import json

    from hw.boards import get_board

    assert (NPUConfig().rows, NPUConfig().cols) == (8, 8)
    ice, ulx = get_board("icebreaker").default_config(), get_board("ulx3s-85f").default_config()
    # the UP5K's: the largest array whose whole NPU fits (4x4), with memories for a hidden-32 LSTM
    assert (ice.rows, ice.cols, ice.weight_bits, ice.chan_depth, ice.weight_depth) == (4, 4, 3, 256, 2048)
    assert (ulx.rows, ulx.cols) == (16, 16) and ulx.act_depth == NPUConfig.act_depth
    assert get_board("orangecrab-85f").default_config().rows == 16
    assert get_board("ULX3S_85F_Platform").default_config() == ulx  # by platform class name too
    assert get_board("ULX3S_12F_Platform").default_config().rows == 8  # a small ECP5: 8x8
    assert get_board("ulx3s-85f").default_config(rows=4, cols=None) == ulx.replace(rows=4)
    # the UP5K's default fits, LSTM gate unit included: the memories its 30 EBRs beside the rest of
    # the NPU (the SPRAMs hold the weights and biases), the logic its 5280 cells; 8x8 does not
    e = estimate(ice, "icebreaker")
    assert e.fits and "gate unit" in e.blocks and e.bram <= 30 and e.spram <= 4, e.text()
    assert not estimate(ice.replace(rows=8, cols=8), "icebreaker").fits
    from hw.estimate import largest_fitting_array

    assert largest_fitting_array(ice.replace(rows=8, cols=8), "icebreaker") == ice
    # the CLI: no --rows/--cols -> the board's default; given ones replace its fields
    assert main(["estimate", "--board", "ulx3s-85f", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["rows"] == 16
    assert main(["estimate", "--board", "ulx3s-85f", "--rows", "8", "--cols", "8", "--json"]) in (0, 1)
    d = json.loads(capsys.readouterr().out)["config"]
    assert (d["rows"], d["cols"]) == (8, 8)
    main(["estimate", "--board", "icebreaker", "--json"])
    d = json.loads(capsys.readouterr().out)["config"]
    assert (d["rows"], d["cols"], d["act_depth"]) == (4, 4, ice.act_depth)
    # --help says so
    with pytest.raises(SystemExit):
        main(["build", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "ulx3s-85f 16x16" in out and "icebreaker 4x4" in out and "default config" in out


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


def test_memory_options_and_the_hint_for_a_config_that_does_not_fit(capsys):
    """--act-depth/--weight-depth/... replace the board default's memories; a config that does not fit
    names the largest square array that does, and that one fits while the next size up does not."""
    import json

    from hw.boards import get_board
    from hw.estimate import largest_fitting_array

    args = ["estimate", "--board", "icebreaker", "--rows", "4", "--cols", "4", "--json"]
    assert main([*args, "--chan-depth", "256", "--weight-depth", "2048"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert (d["config"]["chan_depth"], d["config"]["weight_depth"], d["config"]["rows"]) == (256, 2048, 4)
    assert d["config"]["act_depth"] == get_board("icebreaker").default_config().act_depth  # untouched
    assert main(["estimate", "--board", "icebreaker", "--act-depth", "0"]) == 1  # a clear error, no traceback
    assert "act_depth must be positive" in capsys.readouterr().err

    big = get_board("icebreaker").default_config(rows=16, cols=16)
    small = largest_fitting_array(big, "icebreaker")
    assert small is not None and small.rows == small.cols and small.rows < 16
    assert estimate(small, "icebreaker").fits
    assert not estimate(small.replace(rows=2 * small.rows, cols=2 * small.cols), "icebreaker").fits
    assert small.replace(rows=16, cols=16) == big  # only the array changed
    assert main(["estimate", "--board", "icebreaker", "--rows", "16", "--cols", "16"]) == 1
    assert f"fits with these memories: {small.rows}x{small.rows}" in capsys.readouterr().out
    # memories that fit no array: no suggestion
    huge = get_board("icebreaker").default_config(act_depth=65536)
    assert largest_fitting_array(huge, "icebreaker") is None
