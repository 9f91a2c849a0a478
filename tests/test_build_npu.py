"""`shiftnpu build` of the whole NPU: memories preloaded with a model, the driver finding it there,
and the fit refusal before any tool runs."""

import os
import time
from types import SimpleNamespace

import pytest
from amaranth.hdl import Fragment
from amaranth.lib import data

from hw.build import BuildError, build, model_images, npu_design
from quant.config import NPUConfig
from quant.memmap import npu_memory_map
from sw_driver.cli import main
from sw_driver.npu import NPURunner
from tests.model_factory import random_mlp

CFG = NPUConfig()


def test_model_images_go_into_the_npu_memories():
    images = model_images(random_mlp(1, CFG, sizes=(64, 32, 10)), CFG)
    assert images["weight"] and images["channel"] and images["program"]
    top = npu_design(images)(CFG)
    Fragment.get(top, None)  # elaborates the whole hierarchy, running the preload hooks
    mems = top.preloaded_memories
    assert set(mems) == {"weight", "channel", "channel_scale", "program"}

    def init_of(mem):
        return [v.as_value().value if isinstance(v, data.Const) else int(v or 0) for v in mem.init]

    channel = [int(w) for w in images["channel"]]
    expect = {
        "weight": images["weight"],
        "program": images["program"],
        "channel": [w & 0xFFFFFFFF for w in channel],  # the bias half (hw/gemm.py bmem)
        "channel_scale": [w >> 32 for w in channel],  # M | n << 16 (cmem)
    }
    for name, words in expect.items():
        init = init_of(mems[name])
        assert init[: len(words)] == [int(w) for w in words], name
        assert not any(init[len(words) :])


def test_model_preload_is_refused_where_memories_cannot_be_initialized(tmp_path):
    with pytest.raises(BuildError, match="SPRAM"):
        build(CFG, "icebreaker", build_dir=tmp_path, model=random_mlp(1, CFG, sizes=(64, 32, 10)))


class _StubNPU:
    """The driver's view of a device: INFO and word reads/writes, counted."""

    def __init__(self, preload=None):
        self.mem = {r.name: [0] * r.depth for r in npu_memory_map(CFG)}
        for region, words in (preload or {}).items():
            self.mem[region][: len(words)] = words
        self.writes = 0

    def info(self):
        return SimpleNamespace(config=CFG, regions=npu_memory_map(CFG))

    def read_mem(self, region, addr, n):
        return self.mem[region][addr : addr + n]

    def write_mem(self, region, addr, words):
        self.writes += 1
        self.mem[region][addr : addr + len(words)] = [int(w) for w in words]


def test_driver_finds_a_preloaded_model_and_skips_the_upload():
    model = random_mlp(2, CFG, sizes=(64, 16, 10))
    dev = _StubNPU(preload=model_images(model, CFG))
    runner = NPURunner(dev)
    runner.load(model)
    assert runner.preloaded and dev.writes == 0
    # another model on the same bitstream is uploaded as usual
    other = random_mlp(3, CFG, sizes=(64, 16, 10))
    runner.load(other)
    assert not runner.preloaded and dev.writes == 3
    runner.load(other)  # and is then found there
    assert runner.preloaded and dev.writes == 3


def test_the_npu_that_does_not_fit_is_refused_before_yosys(tmp_path, capsys):
    t0 = time.monotonic()
    with pytest.raises(BuildError, match=r"short of .*bram \(needs \d+, has 30\)"):
        build(CFG, "icebreaker", build_dir=tmp_path, progress=False)
    assert time.monotonic() - t0 < 5 and not any(tmp_path.iterdir())
    assert main(["build", "--board", "icebreaker", "--rows", "8", "--cols", "8", "--build-dir", str(tmp_path)]) == 1
    assert "does not fit" in capsys.readouterr().err


def test_a_model_that_does_not_fit_is_refused_before_yosys(tmp_path):
    small = NPUConfig(weight_depth=16)
    with pytest.raises(BuildError, match="does not fit this config's memories"):
        build(small, "ulx3s-85f", build_dir=tmp_path, model=random_mlp(1, small, sizes=(64, 32, 10)), progress=False)
    with pytest.raises(BuildError, match="another config"):
        build(small, "ulx3s-85f", build_dir=tmp_path, model=random_mlp(1, CFG, sizes=(64, 10)), progress=False)
    with pytest.raises(ValueError, match="whole NPU"):
        build(CFG, "ulx3s-85f", build_dir=tmp_path, design="array", model=random_mlp(1, CFG), progress=False)
    assert not any(tmp_path.iterdir())


_ECP5_OPT_IN = pytest.mark.skipif(
    os.environ.get("SHIFTNPU_BOARD_BUILDS") != "1",
    reason="the ULX3S' whole 16x16 NPU build takes 10-25 min on this machine (more than make test's budget): "
    "run with SHIFTNPU_BOARD_BUILDS=1",
)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,array,floor",
    [
        # the UP5K's default whole NPU builds in about 3 minutes: it runs in every `make test`
        ("icebreaker", 4, 40.0),
        pytest.param("ulx3s-85f", 16, 100.0, marks=_ECP5_OPT_IN),
    ],
)
def test_default_whole_npu_builds_and_meets_timing(tmp_path, name, array, floor):
    """Issue #9's acceptance: the board's default config (the whole NPU with the gate unit and the
    UART: 16x16 on the ULX3S-85F, 4x4 on the iCEBreaker, where an 8x8 does not fit) closes its default
    clock; the report parses back and the estimator is within 15% of it."""
    from hw.boards import get_board
    from hw.build import BuildReport, TimingError
    from hw.estimate import estimate

    board = get_board(name)
    cfg = board.default_config()
    assert (cfg.rows, cfg.cols) == (array, array) and board.default_mhz >= floor
    try:
        rep = build(cfg, board, None, tmp_path, progress=False)
    except TimingError as e:  # the report is still written and must parse
        rep = e.report
    again = BuildReport.from_json((tmp_path / "report.json").read_text())
    assert again == rep and (tmp_path / "report.txt").read_text().startswith(f"shiftnpu build for {name}")
    used = rep.resources["logic"][0]
    est = estimate(cfg, board)
    assert "gate unit" in est.blocks  # the LSTM path is in
    assert abs(est.logic - used) <= 0.15 * used, (est.logic, used)
    assert abs(est.bram - rep.resources["bram"][0]) <= 1, (est.bram, rep.resources["bram"])
    assert rep.timing_met and rep.fmax >= floor, rep.text()
