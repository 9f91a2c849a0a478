"""``shiftnpu eval``: test accuracy of a model file's integer network (golden model, no torch)."""

from __future__ import annotations

import argparse

__all__ = ["HELP", "add_arguments", "run"]

HELP = "accuracy of a model file's integer network on the digits test split (golden model; no torch, the digits come from scikit-learn)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model file (.npu)")
    p.add_argument("-v", "--verbose", action="store_true", help="print the layers and the config")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from . import golden
    from .digits import load_split
    from .model import NPUModel

    model = NPUModel.load(args.model)
    if int(np.prod(model.input.shape)) != 64:
        raise ValueError(
            f"{args.model} takes inputs of shape {list(model.input.shape)}: eval measures accuracy on the 8x8 digits "
            "only (run other inputs with `shiftnpu infer --input`)"
        )
    data = load_split()
    pred = golden.predict(model, data.x_test)
    correct = int((pred == data.y_test).sum())
    acc = correct / len(data.y_test)
    meta = model.metadata
    print(
        f"{args.model}: {meta.get('task', '?')}, {meta.get('weights', '?')}, config weight_bits={model.config.weight_bits}"
    )
    if args.verbose:
        shapes = model.shapes()
        for layer, shape in zip(model.layers, shapes, strict=True):
            extra = f" relu={layer.relu}" if hasattr(layer, "relu") else ""
            print(f"  {layer.name:<8} {layer.kind:<9} -> {shape}{extra}")
        print(model.config.summary())
    print(f"integer model test accuracy: {100 * acc:.2f}% ({correct}/{len(data.y_test)})")
    if "test_accuracy" in meta:
        same = abs(meta["test_accuracy"] - acc) < 1e-12
        print(f"accuracy recorded at training: {100 * meta['test_accuracy']:.2f}% ({'same' if same else 'DIFFERENT'})")
        if not same:
            return 1
    return 0
