"""``shiftnpu train``: train a digits model with DenseShift (or int8) weights and export it."""

from __future__ import annotations

import argparse

__all__ = ["HELP", "add_arguments", "run"]

HELP = "train a digits MLP/CNN or sequential-digits LSTM with DenseShift (or int8) weights and export the model file"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--task", choices=("digits-mlp", "digits-cnn", "seq-digits"), default="digits-mlp", help="model and data set"
    )
    p.add_argument(
        "--bits", type=int, default=3, choices=(2, 3, 4, 8), help="weight bits: 2, 3, 4 (DenseShift) or 8 (int8)"
    )
    p.add_argument("-o", "--output", required=True, help="model file to write (e.g. model.npu)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--epochs", type=int, help="epochs of quantization-aware training (default: per task)")
    p.add_argument("--exact-epochs", type=int, help="epochs with the integer forward pass (default: per task)")
    p.add_argument("--hidden", type=int, default=32, help="seq-digits: LSTM hidden units (default 32)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("generator config the model is built for (default: the standard config)")
    g.add_argument("--rows", type=int, help="array rows")
    g.add_argument("--cols", type=int, help="array columns")
    g.add_argument("--max-k", type=int, dest="max_k", help="longest reduction (sets the accumulator width)")
    g.add_argument("--mem-width", type=int, dest="mem_width", help="weight memory word width")


def run(args: argparse.Namespace) -> int:
    import torch

    from .. import golden
    from ..config import NPUConfig
    from ..digits import SPLIT_SEED, TEST_SIZE, load_split
    from ..model import NPUModel
    from .export import export_model
    from .trainer import TrainConfig, train

    over = {k: getattr(args, k) for k in ("rows", "cols", "max_k", "mem_width") if getattr(args, k) is not None}
    config = NPUConfig(weight_bits=args.bits, **over)
    if args.task == "seq-digits":
        return _run_seq(args, config)
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
    tc = SeqTrainConfig(kind=kind, bits=args.bits, hidden=args.hidden, seed=args.seed, threads=args.threads)
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
        f"seq-digits, {meta['weights']}, H={c.hidden}, seed {c.seed}: {c.epochs} + {c.exact_epochs} epochs in {r.seconds:.1f} s"
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
