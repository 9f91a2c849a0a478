"""``shiftnpu train``: train a digits model with DenseShift (or int8) weights and export it."""

from __future__ import annotations

import argparse
import dataclasses

__all__ = ["HELP", "add_arguments", "run"]

HELP = (
    "train a digits MLP/CNN, a sequential-digits LSTM/GRU or a char-LM with DenseShift (or int8) weights and export it"
)


#: Options that only some tasks use, with those tasks: given to another task they are refused
#: (a silently ignored option would make a user believe it took effect).
_TASK_OPTIONS = {
    "hidden": ("seq-digits", "charlm"),
    "cell": ("seq-digits", "charlm"),
    "layer_norm": ("seq-digits", "charlm"),
    "pwl_pieces": ("seq-digits", "charlm"),
    "adaptive_pwl": ("seq-digits",),
    "fixed_pwl": ("charlm",),
    "steps": ("charlm",),
    "epochs": ("digits-mlp", "digits-cnn", "seq-digits"),
    "exact_epochs": ("digits-mlp", "digits-cnn", "seq-digits"),
    "rows": ("digits-mlp", "digits-cnn", "seq-digits"),
    "cols": ("digits-mlp", "digits-cnn", "seq-digits"),
    "max_k": ("digits-mlp", "digits-cnn", "seq-digits"),
    "mem_width": ("digits-mlp", "digits-cnn", "seq-digits"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..cliargs import nonnegative_int, positive_int

    p.add_argument(
        "--task",
        choices=("digits-mlp", "digits-cnn", "seq-digits", "charlm"),
        default="digits-mlp",
        help="model and data set (default digits-mlp)",
    )
    p.add_argument(
        "--bits",
        type=int,
        default=3,
        choices=(2, 3, 4, 8),
        help="weight bits: 2, 3, 4 (DenseShift) or 8 (int8) (default 3)",
    )
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help="model file to write (e.g. model.npu; charlm: integer arrays, a .npz); written when training ends, "
        "through a temporary file (an interrupted run leaves no partial file)",
    )
    p.add_argument("--seed", type=nonnegative_int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--epochs",
        type=positive_int,
        help="epochs of quantization-aware training (default: digits-mlp 40, digits-cnn 30, seq-digits 80)",
    )
    p.add_argument(
        "--exact-epochs",
        type=nonnegative_int,
        help="epochs with the integer forward pass, after the QAT epochs (default: digits-mlp 10, digits-cnn 8, "
        "seq-digits 20)",
    )
    p.add_argument("--hidden", type=positive_int, help="seq-digits / charlm: RNN hidden units (default 32 / 128)")
    r = p.add_argument_group("recurrent tasks (seq-digits, charlm)")
    r.add_argument("--cell", choices=("lstm", "gru"), default=None, help="recurrent cell (default lstm)")
    r.add_argument("--layer-norm", action="store_true", help="integer layer norm on the gate pre-activations")
    r.add_argument("--pwl-pieces", type=positive_int, default=None, help="pieces per PWL table (default 16)")
    r.add_argument("--adaptive-pwl", action="store_true", help="seq-digits: refit the PWL knots from histograms")
    r.add_argument("--fixed-pwl", action="store_true", help="charlm: keep the non-adaptive tables")
    r.add_argument("--steps", type=positive_int, help="charlm: training steps (default 600)")
    p.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("generator config the model is built for (default: the standard config)")
    g.add_argument("--rows", type=int, help="array rows")
    g.add_argument("--cols", type=int, help="array columns")
    g.add_argument("--max-k", type=int, dest="max_k", help="longest reduction (sets the accumulator width)")
    g.add_argument("--mem-width", type=int, dest="mem_width", help="weight memory word width")


def check_args(args: argparse.Namespace):
    """Everything about the options that can be refused before torch loads and training starts:
    options of another task, an output that cannot be written, the generator config.
    Returns the :class:`~quant.config.NPUConfig` the model is built for."""
    from ..cliargs import check_output_file
    from ..config import NPUConfig

    for dest, tasks in _TASK_OPTIONS.items():
        v = getattr(args, dest, None)
        if v is not None and v is not False and args.task not in tasks:
            opt = "--" + dest.replace("_", "-")
            raise ValueError(f"{opt} applies to --task {' / '.join(tasks)}, not {args.task}")
    out = str(args.output)
    if args.task == "charlm" and not out.endswith(".npz"):
        raise ValueError(f"--task charlm writes a .npz of integer arrays: name the output *.npz, not {out!r}")
    if args.task != "charlm" and out.endswith(".npz"):
        raise ValueError(f"--task {args.task} writes a model file (.npu), not a .npz: {out!r}")
    check_output_file(out)
    over = {k: getattr(args, k) for k in ("rows", "cols", "max_k", "mem_width") if getattr(args, k) is not None}
    config = NPUConfig(weight_bits=args.bits, **over)
    if args.task in ("seq-digits", "charlm"):  # the PWL table size is checked by the config
        config = dataclasses.replace(config, pwl_pieces=args.pwl_pieces or 16)
    return config


def run(args: argparse.Namespace) -> int:
    config = check_args(args)

    import torch

    from .. import golden
    from ..digits import SPLIT_SEED, TEST_SIZE, load_split
    from ..model import NPUModel
    from .export import export_model
    from .trainer import TrainConfig, train

    if args.task == "seq-digits":
        return _run_seq(args, config)
    if args.task == "charlm":
        return _run_charlm(args)
    kind = "int8" if args.bits == 8 else "denseshift"
    tc = TrainConfig(
        task=args.task,
        kind=kind,
        bits=args.bits,
        seed=args.seed,
        epochs=args.epochs,
        exact_epochs=args.exact_epochs,
        threads=args.threads,
    )
    data = load_split()
    r = train(tc, data, progress=not args.no_progress)
    c = r.config
    correct = round(r.test_accuracy * len(data.y_test))
    meta = {
        "task": c.task,
        "weights": kind if kind == "int8" else f"denseshift-{c.bits}bit",
        "seed": c.seed,
        "recipe": {
            "optimizer": "SGD",
            "lr": c.lr,
            "latent_lr": c.latent_lr,
            "momentum": c.momentum,
            "weight_decay": c.weight_decay,
            "batch_size": c.batch_size,
            "schedule": "cosine",
            "qat_epochs": c.epochs,
            "exact_epochs": c.exact_epochs,
        },
        "split": f"sklearn load_digits, train_test_split(test_size={TEST_SIZE}, random_state={SPLIT_SEED})",
        "test_samples": len(data.y_test),
        "test_correct": correct,
        "test_accuracy": r.test_accuracy,
        "torch": torch.__version__,
    }
    model = export_model(r.net, config, meta)
    model.save(args.output)
    acc = golden.accuracy(NPUModel.load(args.output), data.x_test, data.y_test)
    print(f"{args.task}, {meta['weights']}, seed {c.seed}: {c.epochs} + {c.exact_epochs} epochs in {r.seconds:.1f} s")
    print(f"  fake-quant test accuracy before freezing BatchNorm: {100 * r.qat_accuracy:.2f}%")
    print(f"  integer network test accuracy (end of training):    {100 * r.test_accuracy:.2f}% ({correct}/360)")
    print(f"  wrote {args.output}; golden model on the file:       {100 * acc:.2f}%")
    if acc != r.test_accuracy:
        print("  ERROR: the exported model does not reproduce the training accuracy")
        return 1
    return 0


def _run_seq(args: argparse.Namespace, config) -> int:
    """``--task seq-digits``: the integer-only LSTM of :mod:`quant.train.seq_digits`."""
    import torch

    from .. import golden
    from ..digits import SPLIT_SEED, TEST_SIZE, load_split
    from ..model import NPUModel
    from .seq_digits import SeqTrainConfig, export_seq_model, train_seq

    kind = "int8" if args.bits == 8 else "denseshift"
    tc = SeqTrainConfig(
        kind=kind,
        bits=args.bits,
        hidden=args.hidden or 32,
        cell=args.cell or "lstm",
        layer_norm=args.layer_norm,
        pwl_pieces=config.pwl_pieces,
        adaptive_pwl=args.adaptive_pwl,
        seed=args.seed,
        threads=args.threads,
    )
    if args.epochs is not None:
        tc.epochs = args.epochs
    if args.exact_epochs is not None:
        tc.exact_epochs = args.exact_epochs
    data = load_split()
    r = train_seq(tc, data, progress=not args.no_progress)
    c = r.config
    correct = round(r.test_accuracy * len(data.y_test))
    meta = {
        "task": "seq-digits",
        "weights": kind if kind == "int8" else f"denseshift-{c.bits}bit",
        "seed": c.seed,
        "hidden": c.hidden,
        "cell": c.cell,
        "layer_norm": c.layer_norm,
        "pwl": {"pieces": c.pwl_pieces, "adaptive": c.adaptive_pwl},
        "input_map": "q = 7 * pixel as Q0.7, image rows are the 8 time steps",
        "recipe": {
            "optimizer": "Adam",
            "lr": c.lr,
            "batch_size": c.batch_size,
            "schedule": "cosine",
            "qat_epochs": c.epochs,
            "exact_epochs": c.exact_epochs,
        },
        "split": f"sklearn load_digits, train_test_split(test_size={TEST_SIZE}, random_state={SPLIT_SEED})",
        "test_samples": len(data.y_test),
        "test_correct": correct,
        "test_accuracy": r.test_accuracy,
        "torch": torch.__version__,
    }
    model = export_seq_model(r.net, config, meta)
    model.save(args.output)
    acc = golden.accuracy(NPUModel.load(args.output), data.x_test, data.y_test)
    print(
        f"seq-digits {c.cell}, {meta['weights']}, H={c.hidden}, seed {c.seed}: {c.epochs} + {c.exact_epochs} epochs in {r.seconds:.1f} s"
    )
    print(f"  test accuracy before freezing BatchNorm:        {100 * r.qat_accuracy:.2f}%")
    print(
        f"  integer network test accuracy (end of training): {100 * r.test_accuracy:.2f}% ({correct}/{len(data.y_test)})"
    )
    print(f"  wrote {args.output}; golden model on the file:    {100 * acc:.2f}%")
    if acc != r.test_accuracy:
        print("  ERROR: the exported model does not reproduce the training accuracy")
        return 1
    return 0


def _run_charlm(args: argparse.Namespace) -> int:
    """``--task charlm``: the integer-only char-LM of :mod:`quant.train.charlm`; writes its integer arrays (.npz)."""
    import json

    import numpy as np
    import torch

    from .charlm import CharTrainConfig, export_charlm, golden_bpc, load_charlm, train_charlm

    kind = "int8" if args.bits == 8 else "denseshift"
    tc = CharTrainConfig(
        kind=kind,
        bits=args.bits,
        cell=args.cell or "lstm",
        hidden=args.hidden or CharTrainConfig.hidden,
        layer_norm=args.layer_norm,
        pwl_pieces=args.pwl_pieces or 16,
        adaptive_pwl=not args.fixed_pwl,
        seed=args.seed,
        threads=args.threads,
    )
    if args.steps is not None:
        tc.steps = args.steps
        tc.warmup_steps = min(tc.warmup_steps, args.steps // 2)
    data = load_charlm()
    r = train_charlm(tc, data, progress=not args.no_progress)
    arrays = export_charlm(r.net)
    meta = {
        "task": "charlm",
        "weights": kind if kind == "int8" else f"denseshift-{args.bits}bit",
        "config": {k: v for k, v in vars(r.config).items()},
        "text_sha256": data.sha256,
        "split": "pydoc_data.topics in sorted key order joined by newlines; 90 / 5 / 5 % by position",
        "valid_bpc": r.valid_bpc,
        "test_bpc": r.test_bpc,
        "torch": torch.__version__,
    }
    _savez_atomically(args.output, metadata=np.array(json.dumps(meta)), **arrays)
    with np.load(args.output) as f:
        loaded = {k: f[k] for k in f.files}
    g = golden_bpc(loaded, data.test, tc.seq_len)
    print(
        f"charlm {tc.cell}, {meta['weights']}, E={tc.embed} H={tc.hidden}, seed {tc.seed}: {tc.steps} steps "
        f"in {r.seconds:.0f} s ({r.cpu_seconds:.0f} s CPU)"
    )
    print(f"  integer model: valid {r.valid_bpc:.4f} bpc, test {r.test_bpc:.4f} bpc")
    print(f"  wrote {args.output}; golden model on the file: test {g:.4f} bpc")
    if abs(g - r.test_bpc) > 1e-4:
        print("  ERROR: the exported arrays do not reproduce the training bpc")
        return 1
    return 0


def _savez_atomically(path: str, **arrays) -> None:
    """``np.savez(path, ...)`` through a temporary file and a rename: never a half-written .npz."""
    import io

    import numpy as np

    from ..cliargs import write_atomically

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_atomically(path, buf.getvalue())
