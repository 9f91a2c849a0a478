"""``shiftnpu demo``: the main job, end to end.

1. The model: a shipped, trained 3-bit DenseShift digits model (``examples/``; ``--task lstm``:
   an integer LSTM reading each digit as 8 steps of 8 pixels), or one trained now if the file is
   missing (``--train`` forces it; one to two minutes on 2 cores).
2. The device: the NPU's RTL (hw/npu.py) under Verilator behind a TCP socket -- the same link
   protocol a board speaks over its USB serial port.
3. The digits test set (360 images) through the host driver: load (config check, upload, read-back
   verify), then batched inference. Every output is compared with the integer golden model.
4. Accuracy, device cycles per inference, and the projected latency and throughput at
   the design clock and the UART's speed, and the committed board builds.

Exits non-zero on any mismatch.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

__all__ = ["main"]

_REPO = Path(__file__).resolve().parent.parent
EXAMPLES = _REPO / "examples"


def _npu_build_figures() -> str | None:
    """The committed whole-NPU builds of each board's default config (bench/results/boards.json), as
    one line."""
    import json

    p = _REPO / "bench" / "results" / "boards.json"
    if not p.exists():
        return None
    from hw.boards import get_board
    from quant.config import NPUConfig

    runs = []
    for r in json.loads(p.read_text()).values():
        if r.get("design") != "npu" or not r.get("fits") or "resources" not in r:
            continue
        cfg, board = NPUConfig.from_dict(r["config"]), get_board(r["board"])
        if cfg.replace(clk_hz=board.default_config().clk_hz) != board.default_config():
            continue
        logic, bram = r["resources"]["logic"], r["resources"].get("bram", (0, 0))
        met = "met" if r.get("timing_met") else "NOT met"
        runs.append(
            f"{board.name} {cfg.rows}x{cfg.cols}: {logic[0]}/{logic[1]} logic, {bram[0]} block RAM, "
            f"Fmax {r['fmax_mhz']:.1f} MHz ({r['clock_mhz']:g} {met})"
        )
    if not runs:
        return None
    return "board defaults, whole NPU: " + "; ".join(runs) + f" ({p.relative_to(_REPO)})"


def main(args: argparse.Namespace) -> int:
    from quant import golden
    from quant.digits import load_split
    from quant.model import ModelFormatError, NPUModel
    from sim.npu_device import simulated_npu
    from sw_driver.device import Device
    from sw_driver.npu import NPURunner

    task = getattr(args, "task", "mlp")
    stem = "seq_digits_lstm_3bit" if task == "lstm" else f"digits_{task}_3bit"
    train_task = "seq-digits" if task == "lstm" else f"digits-{task}"
    path = EXAMPLES / f"{stem}.npu"
    model = None
    if path.exists() and not getattr(args, "train", False):
        try:
            model = NPUModel.load(path)
        except (ModelFormatError, ValueError) as e:
            print(f"[1/4] shipped model {path.name} is unusable ({e}); training a new one")
    if model is None:
        from sw_driver.cli import main as cli_main

        out = _REPO / "build" / f"{stem}.npu"
        out.parent.mkdir(parents=True, exist_ok=True)
        print(f"[1/4] training a 3-bit DenseShift digits {task.upper()} (about a minute) ...", flush=True)
        if cli_main(["train", "--task", train_task, "--bits", "3", "-o", str(out)]) != 0:
            print("FAIL: training did not reproduce its accuracy")
            return 1
        model = NPUModel.load(out)
        path = out
    else:
        print(f"[1/4] model {path.relative_to(_REPO)}")
    cfg = model.config
    gemms = model.gemm_layers() + [la for la in model.layers if la.kind == "lstm"]  # an LSTM's gates too
    print(
        f"      {len(model.layers)} layers, {len(gemms)} on the array, {cfg.weight_bits}-bit DenseShift weights, "
        f"trained accuracy {model.metadata.get('test_accuracy', float('nan')):.2%}"
    )

    split = load_split()
    x, y = split.x_test, split.y_test
    if getattr(args, "limit", None):
        x, y = x[: args.limit], y[: args.limit]
    xq = model.input.quantize(x)
    from quant.npu_compile import largest_batch

    batch = largest_batch(model, limit=32)  # an LSTM: bounded by the gate unit's cell memory

    print(
        f"[2/4] starting the simulated NPU ({cfg.rows}x{cfg.cols} shift array; Verilator, first build 1-3 min) ...",
        flush=True,
    )
    t0 = time.monotonic()
    with simulated_npu(cfg) as url, Device(url, timeout=60.0) as dev:
        print(f"      device up after {time.monotonic() - t0:.0f} s at {url}")
        runner = NPURunner(dev, batch=batch)
        t1 = time.monotonic()
        runner.load(model)
        load_bytes = dev.stats["bytes_out"] + dev.stats["bytes_in"]
        print(f"      model loaded and verified ({load_bytes} bytes over the link, {time.monotonic() - t1:.1f} s)")
        print(f"[3/4] {len(x)} test digits through the driver, {batch} per device run ...", flush=True)
        before = dev.stats["bytes_out"] + dev.stats["bytes_in"]
        r = runner.infer(xq, progress=True)
        infer_bytes = dev.stats["bytes_out"] + dev.stats["bytes_in"] - before

    trace = golden.forward(model, xq, intermediates=True)
    logits_ok = np.array_equal(r.logits, trace[-2][1].reshape(len(x), -1))
    classes_ok = np.array_equal(r.classes, trace[-1][1])
    acc = float(np.mean(r.classes == y))
    runs = -(-len(x) // batch)
    cyc_run = r.cycles / runs
    print(f"      accuracy {acc:.2%} ({int(np.sum(r.classes == y))}/{len(x)})")
    print(f"      {cyc_run:.0f} device cycles per run of {batch}, {r.cycles / len(x):.0f} cycles per inference")
    print(
        f"      bit-exact with the golden model (logits and classes of every sample): "
        f"{'YES' if logits_ok and classes_ok else 'NO'}"
    )

    # Projected at the config's design clock (the 8x8 whole NPU fits the ECP5 boards; the UP5K's logic
    # holds it only at 4x4, its board default)
    fmax, src = cfg.clk_hz / 1e6, "the config's design clock"
    baud = cfg.baud
    compute_s = cyc_run / (fmax * 1e6)
    link_s = infer_bytes / runs * 10 / baud
    print(f"[4/4] projected at {fmax:.1f} MHz ({src}) and {baud} baud over the UART:")
    print(
        f"      compute {compute_s * 1e6:.0f} us per run of {batch} ({compute_s / batch * 1e6:.1f} us per digit, "
        f"{batch / compute_s:,.0f} digits/s on the array)"
    )
    print(
        f"      link {link_s * 1e3:.1f} ms per run ({infer_bytes / len(x):.0f} bytes per digit): end to end "
        f"{(compute_s + link_s) / batch * 1e3:.2f} ms per digit, {batch / (compute_s + link_s):,.0f} digits/s; "
        f"at 3 Mbaud {batch / (compute_s + link_s * baud / 3e6):,.0f} digits/s"
    )
    figures = _npu_build_figures()
    if figures:
        print(f"      synthesized: {figures}")
    if not (logits_ok and classes_ok):
        print("FAIL: the device's results differ from the golden model")
        return 1
    return 0
