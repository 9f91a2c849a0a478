"""Board builds: the default config's array for iCEBreaker and ULX3S-85F (real YoWASP builds, `slow`;
the whole NPUs: tests/test_build_npu.py builds the iCEBreaker's default one, bench/boards.py the
others), the report, the estimator against them and against the
committed whole-NPU builds (within 15%, and NPU_MODEL being their fit), the abc9 fallback, and the
timing checks and `--freq auto` search (with a stand-in for the tools)."""

import json
from pathlib import Path

import pytest

import hw.build as hb
from hw.boards import get_board
from hw.build import BuildReport, TimingError, build
from hw.estimate import estimate
from quant.config import NPUConfig

BOARDS = ("icebreaker", "ulx3s-85f")


@pytest.fixture(scope="session")
def board_builds(tmp_path_factory):
    """One real build per board of the default config's array at the board's default clock (built once)."""
    root = tmp_path_factory.mktemp("boards")
    return {b: build(NPUConfig(), b, None, root / b, design="array", progress=False) for b in BOARDS}


@pytest.mark.slow
@pytest.mark.parametrize("board", BOARDS)
def test_default_config_builds_and_meets_timing(board_builds, board):
    rep = board_builds[board]
    b = get_board(board)
    # the PLL's nearest clock (iCE40 from 12 MHz: 40 -> 39.75)
    assert rep.requested_mhz == b.default_mhz and abs(rep.clock_mhz - b.default_mhz) <= 0.5
    assert rep.timing_met and rep.fmax >= rep.clock_mhz
    assert Path(rep.bitstream).stat().st_size > 10_000
    used, avail = rep.resources["logic"]
    assert 0 < used <= avail and rep.resources["dsp"][0] == 0
    # the report on disk parses back to the same report, and the text names the essentials
    d = Path(rep.build_dir)
    again = BuildReport.from_json((d / "report.json").read_text())
    assert again == rep
    text = (d / "report.txt").read_text()
    assert "timing     met" in text and "logic" in text and "Fmax" in text
    assert NPUConfig.from_dict(json.loads((d / "report.json").read_text())["config"]).clk_hz == round(
        rep.clock_mhz * 1e6
    )


@pytest.mark.slow
@pytest.mark.parametrize("board", BOARDS)
def test_estimate_within_15_percent(board_builds, board):
    rep = board_builds[board]
    est = estimate(NPUConfig(), board, design="array")
    for res in ("logic", "ffs"):
        used = rep.resources[res][0]
        assert abs(getattr(est, res) - used) <= 0.15 * used, (res, getattr(est, res), used)
    assert est.dsp == rep.resources["dsp"][0] and est.bram == rep.resources["bram"][0]


def test_npu_estimate_within_15_percent_of_the_committed_builds():
    """The whole-NPU model against every whole-NPU nextpnr run in bench/results/boards.json (placed or
    not: an overfull design's cell count is still what it needs)."""
    runs = json.loads((Path(__file__).resolve().parent.parent / "bench" / "results" / "boards.json").read_text())
    npu = {k: r for k, r in runs.items() if r["design"] == "npu" and r.get("resources")}
    assert len(npu) >= 3 and {r["board"] for r in npu.values()} == {"icebreaker", "ulx3s-85f"}
    for name, r in npu.items():
        est = estimate(NPUConfig.from_dict(r["config"]), r["board"], lstm=r.get("lstm"))  # as built
        used = r["resources"]["logic"][0]
        assert abs(est.logic - used) <= 0.15 * used, (name, est.logic, used)
        assert abs(est.bram - r["resources"]["bram"][0]) <= 1, (name, est.bram, r["resources"]["bram"])
        assert est.fits == r["fits"], name


def test_npu_model_is_the_fit_of_the_committed_builds(tmp_path):
    """hw/estimate.py's NPU_MODEL is what `python bench/boards.py --fit` writes from boards.json (so a
    rebuild of the runs without a refit is caught), and writing it round-trips through the source."""
    import shutil

    import hw.estimate as he

    store = Path(__file__).resolve().parent.parent / "bench" / "results" / "boards.json"
    fitted = he.fit_npu(store)
    for fam in ("ice40", "ecp5"):
        for key, v in he.NPU_MODEL[fam].items():
            assert fitted[fam][key] == pytest.approx(v, rel=1e-6) if not isinstance(v, list) else fitted[fam][key] == v
    src = tmp_path / "estimate.py"
    shutil.copyfile(he.__file__, src)
    saved = json.loads(json.dumps(he.NPU_MODEL))
    try:
        he.write_npu_model(fitted, src)
        ns: dict = {}
        text = src.read_text()
        a, b = text.index("# BEGIN NPU CALIBRATION"), text.index("# END NPU CALIBRATION")
        exec(text[a:b], ns)  # the block is a plain literal
        assert ns["NPU_MODEL"] == fitted
    finally:
        he.NPU_MODEL.clear()
        he.NPU_MODEL.update(saved)


def _fake_once(fmax_of):
    """Stand-in for one tool run: Fmax is a function of the requested clock."""

    def once(config, board, pll, build_dir, design, est, seed, progress):
        build_dir.mkdir(parents=True, exist_ok=True)
        bit = build_dir / "top.bit"
        bit.write_bytes(b"\0")
        f = fmax_of(pll.f_out_mhz)
        return BuildReport(
            board=board.name,
            device=board.device,
            config=config.to_dict(),
            requested_mhz=pll.f_out_mhz,
            clock_mhz=pll.f_out_mhz,
            pll=dict(pll.params),
            fmax_mhz={"clk": f},
            timing_met=f >= pll.f_out_mhz,
            bitstream=str(bit),
            build_dir=str(build_dir),
        )

    return once


def test_timing_failure_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(hb, "_build_once", _fake_once(lambda f: 61.0))
    with pytest.raises(TimingError, match=r"Fmax 61.0 MHz is below the 75.00 MHz clock.*--freq 57") as e:
        build(NPUConfig(), "ulx3s-85f", 75, tmp_path, progress=False)
    assert not e.value.report.timing_met and (tmp_path / "report.json").exists()


def test_freq_auto_finds_the_fastest_clock_that_closes(monkeypatch, tmp_path):
    for reach in (131.0, 80.0, 300.0):  # above, below and far above the estimate's starting point
        # aiming above what the design reaches costs a little (placement spreads)
        monkeypatch.setattr(hb, "_build_once", _fake_once(lambda f, r=reach: r if f <= r else r - 5))
        rep = build(NPUConfig(), "ulx3s-85f", "auto", tmp_path / str(reach), progress=False)
        assert rep.timing_met and 0.9 * min(reach, 300) <= rep.clock_mhz <= reach, rep.attempts
        assert len(rep.attempts) <= 3 and Path(rep.bitstream).parent == tmp_path / str(reach)
        report = json.loads((tmp_path / str(reach) / "report.json").read_text())
        assert report["clock_mhz"] == rep.clock_mhz
    with pytest.raises(ValueError, match="auto"):
        build(NPUConfig(), "ulx3s-85f", "fast", tmp_path, progress=False)


def test_abc9_failure_is_detected_and_the_script_rewritten(tmp_path):
    """Yosys 0.70's abc9 crashes on the 16x16 NPU or leaves a doubly driven net on the 8x8: the build
    recognises both logs and reruns synth_ecp5 with abc in place of abc9 (the rest of the flow kept)."""
    script = "read_rtlil top.il\n# (script_after_read placeholder)\n    synth_ecp5  -top top\nwrite_json top.json\n"
    new = hb._without_abc9(script)
    lines = new.splitlines()
    i = lines.index("synth_ecp5  -top top -run begin:map_luts")
    assert lines[i + 1 : i + 5] == [
        "techmap -map +/lattice/latches_map.v",
        "abc -lut 4:7 -dress",
        "clean",
        "synth_ecp5  -top top -run map_cells:",
    ]
    assert lines[0] == "read_rtlil top.il" and lines[-1] == "write_json top.json" and "abc9" not in new
    assert not hb._abc9_failed(tmp_path, "top")
    (tmp_path / "top.rpt").write_text(
        "2.46.20.7. Executing ABC_OPS_REINTEGRATE pass (reintegrate ABC mapped design into module).\n"
        "ERROR: Assert `GetSize(conn.first) == GetSize(conn.second)' failed in rtlil.cc:3091.\n"
    )
    assert hb._abc9_failed(tmp_path, "top")
    (tmp_path / "top.rpt").write_text("ERROR: Assert `x' failed somewhere else\n")
    assert not hb._abc9_failed(tmp_path, "top")
    (tmp_path / "top.tim").write_text(
        "ERROR: Net 'design.dut.core.engine.array.w_out$335[1]' is multiply driven by cell ports a.Q and b.Q\n"
    )
    assert hb._abc9_failed(tmp_path, "top")
    assert hb.synth_options(get_board("icebreaker")) == "-dsp" and hb.synth_options(get_board("ulx3s-85f")) == ""


def test_abc9_retries_purged_then_abc(tmp_path, monkeypatch):
    """On an ECP5 whose abc9 failed, the build reruns Yosys with abc9 on the purged netlist, then with
    abc; the report's note names the mapper that went through; other failures are not retried."""
    import subprocess

    script = "read_rtlil top.il\nsynth_ecp5  -top top\nwrite_json top.json\n"
    purged = hb._purged_abc9(script).splitlines()
    i = purged.index("synth_ecp5  -top top -run begin:map_luts")
    assert purged[i + 1 : i + 6] == [
        "opt_clean -purge",
        "techmap -map +/lattice/latches_map.v",
        "abc9 -W 300",
        "clean",
        "synth_ecp5  -top top -run map_cells:",
    ]

    def attempt(fail_times: int, board: str = "ulx3s-85f", broken: bool = True):
        d = tmp_path / f"{board}-{fail_times}-{broken}"
        d.mkdir()
        (d / "top.ys").write_text(script)
        scripts = []

        def step():
            scripts.append((d / "top.ys").read_text())
            if len(scripts) <= fail_times:
                why = "is multiply driven by cell ports a.Q and b.Q" if broken else "something else"
                (d / "top.tim").write_text(f"ERROR: Net 'x' {why}\n")
                raise subprocess.CalledProcessError(1, "nextpnr")

        monkeypatch.setattr(hb, "_run_with_progress", lambda fn, *a: fn())
        note = hb._run_with_abc9_retries(step, step, get_board(board), d, "top", "t", False)
        return note, scripts

    assert attempt(0) == ("", [script])
    note, scripts = attempt(1)
    assert note == hb.ABC9_PURGED and scripts[1] == hb._purged_abc9(script)
    note, scripts = attempt(2)
    assert note == hb.ABC_FALLBACK and scripts[2] == hb._without_abc9(script)  # from the original script
    with pytest.raises(subprocess.CalledProcessError):
        attempt(3)  # abc failed too
    with pytest.raises(subprocess.CalledProcessError):
        attempt(1, broken=False)  # not abc9's failure: no retry
    with pytest.raises(subprocess.CalledProcessError):
        attempt(1, board="icebreaker")  # iCE40: no abc9 retries


def test_a_failed_build_keeps_the_previous_bitstream(tmp_path, monkeypatch):
    """The tools failing (or the design failing to elaborate) leaves the build dir's earlier bitstream
    in place; a build that goes through replaces it."""
    import subprocess

    from hw.pll import pll_for

    b = get_board("icebreaker")
    pll = pll_for(b.family, b.clk_mhz, 40.0)
    (tmp_path / "top.bin").write_bytes(b"old bitstream")
    (tmp_path / "top.tim").write_text("ERROR: an old log\n")
    est = estimate(NPUConfig(), b, design="array")

    def fails(exc):
        def run(run_fn, *a):
            (tmp_path / "top.bin").write_bytes(b"half a new one")  # the tools wrote part of it
            raise exc

        return run

    for exc in (subprocess.CalledProcessError(1, "nextpnr"), ValueError("elaboration failed")):
        monkeypatch.setattr(hb, "_run_with_abc9_retries", fails(exc))
        with pytest.raises((hb.BuildError, ValueError)):
            hb._build_once(NPUConfig(), b, pll, tmp_path, hb.array_design, est, 1, False)
        assert (tmp_path / "top.bin").read_bytes() == b"old bitstream"
        assert not (tmp_path / "top.bin.prev").exists() and not (tmp_path / "top.tim").exists()

    def works(run_fn, *a):
        (tmp_path / "top.bin").write_bytes(b"new bitstream")
        (tmp_path / "top.tim").write_text(
            "Info:     ICESTORM_LC:  1000/ 5280    18%\nInfo: Max frequency for clock 'clk': 45.00 MHz (PASS at 40.00 MHz)\n"
        )
        return ""

    monkeypatch.setattr(hb, "_run_with_abc9_retries", works)
    rep = hb._build_once(NPUConfig(), b, pll, tmp_path, hb.array_design, est, 1, False)
    assert (tmp_path / "top.bin").read_bytes() == b"new bitstream" and not (tmp_path / "top.bin.prev").exists()
    assert rep.fmax == 45.0
