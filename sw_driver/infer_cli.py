"""``shiftnpu infer``: run a model file on a device (a board's serial port, or the simulated NPU).

The inputs are the digits test split (the default), or an array file of your own (``--input``):
raw values that the model's input map turns into int8 (``q = raw * multiplier``; for the digits
models, pixels 0..16), or with ``--int8`` the int8 tensor itself. Values the map would saturate,
or that do not fit int8, are refused, never clipped or wrapped. ``--output`` writes the device's
logits and classes.
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

import numpy as np

from .cli import check_output_file, positive_float, positive_int
from .transport import BOARD_TIMEOUT, SIM_TIMEOUT, default_reply_timeout

__all__ = ["HELP", "add_arguments", "run", "load_inputs", "save_outputs", "INPUT_SUFFIXES", "OUTPUT_SUFFIXES"]

HELP = "run a model on a device (--device sim or a serial URL) and check it against the golden model"

INPUT_SUFFIXES = (".npy", ".npz", ".csv", ".txt")
OUTPUT_SUFFIXES = (".npy", ".npz", ".csv")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model file (.npu), e.g. examples/digits_mlp_3bit.npu")
    p.add_argument(
        "--device",
        default="sim",
        help="'sim' (the RTL under Verilator; default), or a serial port / pyserial URL: /dev/ttyUSB1, "
        "socket://host:port",
    )
    p.add_argument("--baud", type=positive_int, default=115200, help="serial baud rate (default 115200)")
    p.add_argument(
        "--batch",
        type=positive_int,
        default=None,
        help="samples per device run (default: the largest that fits, at most 16)",
    )
    p.add_argument("--limit", type=positive_int, default=None, help="only the first N samples (default: all)")
    p.add_argument(
        "--timeout",
        type=positive_float,
        default=None,
        help=f"seconds to wait for each reply (default {SIM_TIMEOUT:g} for sim and socket:// URLs, "
        f"{BOARD_TIMEOUT:g} for a serial port)",
    )
    p.add_argument(
        "--input",
        default=None,
        help="inputs from an array file instead of the digits test split: .npy, .npz (one array), .csv/.txt "
        "(one sample per line); shape [N, *input shape] or [N, input size]; raw values for the model's input map "
        "(digits: pixels 0..16) unless --int8",
    )
    p.add_argument("--int8", action="store_true", help="the --input file holds the int8 input tensor itself")
    p.add_argument(
        "--output",
        default=None,
        help="write the device's int8 logits (.npy), logits and classes (.npz), or one line per sample "
        "'class,logit0,logit1,...' (.csv; without the class for a model without argmax)",
    )
    p.add_argument("--no-check", action="store_true", help="do not compare with the golden model")


def _read_array(path: Path) -> np.ndarray:
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                if len(f.files) != 1:
                    raise ValueError(f"input file {str(path)!r} holds {len(f.files)} arrays {f.files}; expected one")
                return f[f.files[0]]
        rows = [line for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]
        if not rows:
            raise ValueError(f"input file {str(path)!r} holds no samples")
        delim = "," if "," in rows[0] else None
        return np.loadtxt(rows, delimiter=delim, dtype=np.float64, ndmin=2)
    except ValueError as e:
        if str(e).startswith("input file"):
            raise
        raise ValueError(f"input file {str(path)!r} is not a readable {suffix} array: {e}") from None
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise ValueError(f"input file {str(path)!r} is not a readable {suffix} array: {e}") from None


def load_inputs(path, model, *, int8: bool = False) -> np.ndarray:
    """Read an input file and return the int8 tensor ``[N, *model.input.shape]`` for ``model``.

    Refuses (``ValueError`` naming the problem) a missing or unreadable file, a wrong shape, a
    non-numeric or non-integer array, an empty one, and values that would not survive exactly:
    int8 inputs outside -128..127, raw inputs the input map would saturate.
    """
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"input file {str(p)!r} is a directory")
    if not p.is_file():
        raise ValueError(f"input file {str(p)!r} does not exist")
    if p.suffix.lower() not in INPUT_SUFFIXES:
        raise ValueError(f"input file {str(p)!r}: unknown type {p.suffix!r}; use one of {', '.join(INPUT_SUFFIXES)}")
    a = _read_array(p)
    if a.dtype.kind not in "iuf":
        raise ValueError(f"input file {str(p)!r}: expected numbers, got an array of {a.dtype}")
    shape = tuple(model.input.shape)
    size = int(np.prod(shape))
    if a.size == 0:
        raise ValueError(f"input file {str(p)!r} holds no samples")
    if a.shape in (shape, (size,)):
        a = a[np.newaxis]  # one sample
    if a.ndim < 2 or a.shape[1:] not in (shape, (size,)):
        takes = f"[N, {', '.join(map(str, shape))}]" + (f" or [N, {size}]" if len(shape) > 1 else "")
        raise ValueError(f"input file {str(p)!r} has shape {list(a.shape)}; the model takes {takes}")
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)):
            raise ValueError(f"input file {str(p)!r} holds NaN or infinite values")
        if not np.all(a == np.round(a)):
            bad = a[a != np.round(a)].flat[0]
            raise ValueError(
                f"input file {str(p)!r} holds non-integer values (e.g. {bad}); the NPU's inputs are integers "
                f"({'int8' if int8 else 'raw values for the model input map'})"
            )
    lo, hi = a.min(), a.max()
    if int8:
        if lo < -128 or hi > 127:
            raise ValueError(
                f"input file {str(p)!r}: values {lo:g}..{hi:g} do not fit int8 (-128..127); they are not clipped"
            )
        return a.astype(np.int64).reshape((-1, *shape)).astype(np.int8)
    m = model.input.multiplier
    q_lo, q_hi = int(lo) * m, int(hi) * m
    if q_lo < -128 or q_hi > 127:
        raise ValueError(
            f"input file {str(p)!r}: raw values {lo:g}..{hi:g} times the input multiplier {m} leave int8 "
            f"(raw values must lie in {-(128 // m)}..{127 // m}; the model was trained on 0..{model.input.raw_max}); "
            "pass --int8 if the file holds int8 inputs already"
        )
    return model.input.quantize(a.astype(np.int64).reshape(len(a), -1))


def save_outputs(path, logits: np.ndarray, classes: np.ndarray | None) -> None:
    """Write ``logits`` (and ``classes``) to ``path`` (.npy, .npz or .csv) through a temporary file,
    so an interrupted run never leaves a half-written output."""
    import io

    from quant.cliargs import write_atomically

    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise ValueError(f"output file {str(p)!r}: unknown type {p.suffix!r}; use one of {', '.join(OUTPUT_SUFFIXES)}")
    logits = np.asarray(logits).reshape(len(logits), -1)
    buf = io.BytesIO()
    if suffix == ".npy":
        np.save(buf, logits)
    elif suffix == ".npz":
        np.savez(buf, logits=logits, **({} if classes is None else {"classes": np.asarray(classes)}))
    else:
        first = [[int(c)] for c in classes] if classes is not None else [[] for _ in logits]
        lines = [",".join(map(str, [*c, *map(int, row)])) for c, row in zip(first, logits, strict=True)]
        buf.write(("\n".join(lines) + "\n").encode())
    write_atomically(p, buf.getvalue())


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
    from quant.model import NPUModel

    from .device import Device
    from .npu import NPURunner

    if args.int8 and not args.input:
        raise ValueError("--int8 describes an --input file; give --input too")
    if args.output:
        check_output_file(args.output)
        if Path(args.output).suffix.lower() not in OUTPUT_SUFFIXES:
            raise ValueError(f"--output {args.output}: use one of {', '.join(OUTPUT_SUFFIXES)}")
    model = NPUModel.load(args.model)
    if args.input:
        xq, y = load_inputs(args.input, model, int8=args.int8), None
    else:
        from quant.digits import load_split

        if int(np.prod(model.input.shape)) != 64:
            raise ValueError(
                f"{args.model} takes inputs of shape {list(model.input.shape)}, not 8x8 digits: give them with --input"
            )
        split = load_split()
        xq, y = model.input.quantize(split.x_test), split.y_test
    if args.limit:
        xq = xq[: args.limit]
        y = y[: args.limit] if y is not None else None
    timeout = args.timeout or default_reply_timeout(args.device)
    with (
        open_device_url(args.device, model.config) as url,
        Device(url, timeout=timeout, baud=args.baud, progress=True) as dev,
    ):
        batch = args.batch
        if batch is None:  # an LSTM's batch is bounded by the gate unit's cells
            from quant.npu_compile import largest_batch

            batch = largest_batch(model, limit=16)
        runner = NPURunner(dev, batch=batch)
        runner.load(model)
        r = runner.infer(xq, progress=True)
    n = len(xq)
    if y is not None:
        acc = float(np.mean(r.classes == y)) if r.classes is not None else float("nan")
        print(f"{n} samples: accuracy {acc:.2%}, {r.cycles / n:.0f} device cycles per sample")
    else:
        shown = "" if r.classes is None else f"; classes {r.classes[:16].tolist()}{' ...' if n > 16 else ''}"
        print(f"{n} samples: {r.cycles / n:.0f} device cycles per sample{shown}")
    if args.output:
        save_outputs(args.output, r.logits, r.classes)
        print(f"wrote {args.output}")
    if args.no_check:
        return 0
    trace = golden.forward(model, xq, intermediates=True)
    if r.classes is None:  # no argmax: the last layer's outputs are the logits
        ok = np.array_equal(r.logits, trace[-1][1].reshape(n, -1))
    else:
        ok = np.array_equal(r.logits, trace[-2][1].reshape(n, -1)) and np.array_equal(r.classes, trace[-1][1])
    print(f"bit-exact with the golden model: {'yes' if ok else 'NO'}")
    return 0 if ok else 1
