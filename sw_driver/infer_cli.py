"""``shiftnpu infer``: run a model file on a device (a board's serial port, or the simulated NPU)."""

from __future__ import annotations

import argparse
import contextlib

import numpy as np

__all__ = ["HELP", "add_arguments", "run"]

HELP = "run a model on a device (--device sim or a serial URL) and check it against the golden model"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model file (.npu), e.g. examples/digits_mlp_3bit.npu")
    p.add_argument(
        "--device",
        default="sim",
        help="'sim' (the RTL under Verilator), or a serial port / pyserial URL: /dev/ttyUSB1, socket://host:port",
    )
    p.add_argument("--baud", type=int, default=115200, help="serial baud rate (default 115200)")
    p.add_argument(
        "--batch", type=int, default=None, help="samples per device run (default: the largest that fits, at most 16)"
    )
    p.add_argument("--limit", type=int, default=None, help="only the first N test digits")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each reply (default 30)")
    p.add_argument("--no-check", action="store_true", help="do not compare with the golden model")


@contextlib.contextmanager
def open_device_url(spec: str, config):
    if spec == "sim":
        from sim.npu_device import simulated_npu  # Amaranth and Verilator: only for the simulated device

        print("starting the simulated NPU (Verilator; the first build takes a minute or two) ...", flush=True)
        with simulated_npu(config) as url:
            yield url
    else:
        yield spec


def run(args: argparse.Namespace) -> int:
    from quant import golden
    from quant.digits import load_split
    from quant.model import NPUModel

    from .device import Device
    from .npu import NPURunner

    model = NPUModel.load(args.model)
    split = load_split()
    x, y = split.x_test, split.y_test
    if args.limit:
        x, y = x[: args.limit], y[: args.limit]
    xq = model.input.quantize(x)
    with open_device_url(args.device, model.config) as url, Device(url, timeout=args.timeout, baud=args.baud) as dev:
        batch = args.batch
        if batch is None:  # an LSTM's batch is bounded by the gate unit's cells
            from quant.npu_compile import largest_batch

            batch = largest_batch(model, limit=16)
        runner = NPURunner(dev, batch=batch)
        runner.load(model)
        r = runner.infer(xq, progress=True)
    acc = float(np.mean(r.classes == y)) if r.classes is not None else float("nan")
    print(f"{len(x)} samples: accuracy {acc:.2%}, {r.cycles / len(x):.0f} device cycles per sample")
    if args.no_check:
        return 0
    trace = golden.forward(model, xq, intermediates=True)
    ok = np.array_equal(r.logits, trace[-2][1].reshape(len(x), -1)) and np.array_equal(r.classes, trace[-1][1])
    print(f"bit-exact with the golden model: {'yes' if ok else 'NO'}")
    return 0 if ok else 1
