"""Protocol fuzzing of the link RTL (Verilator, byte port) against the reference model."""

import json

from hw.linktest import LinkTestTop
from quant.config import NPUConfig
from sim.runner import run_cocotb

FUZZ_CONFIG = NPUConfig(act_depth=64, weight_depth=128, chan_depth=32, max_payload=64)
FUZZ_TIMEOUT = 64


def run_fuzz(frames: int, seed: int, report=None, *, ebr_model: bool = False):
    cfg = FUZZ_CONFIG
    params = {"config": cfg.to_dict(), "idle_timeout": FUZZ_TIMEOUT, "ebr_model": ebr_model}
    bench = dict(params, frames=frames, seed=seed, report=str(report) if report else None)
    run_cocotb(
        "linkfuzz_ebr" if ebr_model else "linkfuzz",
        params,
        lambda: LinkTestTop(cfg, idle_timeout=FUZZ_TIMEOUT, ebr_model=ebr_model),
        "link_fuzz_bench",
        bench_params=bench,
    )


def test_fuzz_10000_frames(tmp_path):
    report = tmp_path / "fuzz.json"
    run_fuzz(10_000, seed=7, report=report)
    r = json.loads(report.read_text())
    assert r["bursts"] >= 10_000 and r["mismatches"] == 0
    # The counters account for everything: one reply per request that reached the parser's end.
    c = r["counters"]
    assert c["bad_crc"] > 100 and c["timeout"] > 100 and c["oversize"] > 50 and c["sync_discards"] > 1000


def test_fuzz_through_the_ice40_block_ram_model(tmp_path):
    """The iCE40 path of hw/byteram.py (SB_RAM40_4K wiring, packed INFO/ID contents) behaves the same."""
    report = tmp_path / "fuzz.json"
    run_fuzz(2_000, seed=11, report=report, ebr_model=True)
    r = json.loads(report.read_text())
    assert r["bursts"] >= 2_000 and r["mismatches"] == 0 and r["kinds"]["valid"] > 500
