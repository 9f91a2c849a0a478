"""The digits task: sklearn's bundled 8x8 digit images with one fixed train/test split.

The split is ``train_test_split(load_digits(), test_size=0.2, random_state=0)``: 1437 training and
360 test images, the same for every seed, model and tool. Pixels are integers 0..16; models map them
to int8 with :meth:`quant.model.InputSpec.quantize` (``q = 7 * pixel``, so 16 stands for 1.0).
Nothing is downloaded: the images ship with scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DigitsSplit", "load_split", "TEST_SIZE", "SPLIT_SEED", "PIXEL_MAX"]

TEST_SIZE = 0.2
SPLIT_SEED = 0
PIXEL_MAX = 16


@dataclass(frozen=True)
class DigitsSplit:
    """Pixels as int64 ``[N, 64]`` (row-major 8x8), labels as int64 ``[N]``."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_split() -> DigitsSplit:
    """The fixed digits split (needs scikit-learn, imported here so the rest of quant stays light)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = d.data.astype(np.int64)
    y = d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=TEST_SIZE, random_state=SPLIT_SEED)
    return DigitsSplit(xtr, ytr, xte, yte)
