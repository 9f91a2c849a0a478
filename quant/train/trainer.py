"""Training loop for the digits networks: deterministic, CPU, a progress bar per run.

Recipe (the paper's ImageNet recipe is SGD lr 0.1, momentum 0.9, weight decay 1e-4, cosine, 200
epochs; ours is tuned for these small tasks): SGD with momentum 0.9, weight decay 1e-4, batch 64,
cosine learning-rate decay to 0 over all epochs. Learning rates per weight kind (:data:`LEARNING_RATES`)
were picked on a validation split (20% of the training images, ``random_state=1``, seeds 0 and 1),
never on the test split: FP32 and int8 weights train best at 0.2; DenseShift's latents need a large
rate (5.0: they start at N(0, 1e-3**2) and their gradients are small; at 0.05 the 4-bit MLP lost about
2.6 points) with 0.05 for BatchNorm; the with-zero baseline does best at 0.05 for both.
Quantized networks train ``epochs`` epochs in the ``qat`` phase and then ``exact_epochs`` in the
``exact`` phase (BatchNorm frozen and folded, the forward pass being the integer network), so the
accuracy reported at the end is the integer model's.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..digits import DigitsSplit, load_split
from .network import DigitsNet

__all__ = ["TrainConfig", "TrainResult", "train", "to_tensor", "default_epochs", "LEARNING_RATES"]

#: weight kind -> (lr of weights and BatchNorm, lr of the sign/scale latents)
LEARNING_RATES = {"fp32": (0.2, None), "int8": (0.2, None), "denseshift": (0.05, 5.0), "pot-zero": (0.05, 0.05)}


def default_epochs(task: str) -> tuple[int, int]:
    """``(qat epochs, exact epochs)`` of the default recipe for a task."""
    return (40, 10) if task == "digits-mlp" else (30, 8)


@dataclass
class TrainConfig:
    """One training run. ``kind`` is ``fp32``, ``int8``, ``denseshift`` or ``pot-zero``."""

    task: str = "digits-mlp"
    kind: str = "denseshift"
    bits: int = 3
    seed: int = 0
    epochs: int | None = None
    exact_epochs: int | None = None
    lr: float | None = None
    latent_lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 64
    threads: int = 1

    def resolved(self) -> TrainConfig:
        e, x = default_epochs(self.task)
        c = TrainConfig(**asdict(self))
        if self.kind not in LEARNING_RATES:
            raise ValueError(f"unknown weight kind {self.kind!r}; expected one of {sorted(LEARNING_RATES)}")
        lr, latent_lr = LEARNING_RATES[self.kind]
        c.lr = lr if self.lr is None else self.lr
        c.latent_lr = latent_lr if self.latent_lr is None else self.latent_lr
        c.epochs = e if self.epochs is None else self.epochs
        c.exact_epochs = (0 if self.kind == "fp32" else x) if self.exact_epochs is None else self.exact_epochs
        if self.kind == "fp32":
            c.exact_epochs = 0
        return c


@dataclass
class TrainResult:
    net: DigitsNet
    config: TrainConfig
    test_accuracy: float
    qat_accuracy: float
    seconds: float
    history: list = field(default_factory=list)


def to_tensor(net: DigitsNet, pixels: np.ndarray) -> torch.Tensor:
    """Digits pixels ``[B, 64]`` (0..16) as the network's int8 input (the model file's input map) in float."""
    from ..model import InputSpec

    return torch.tensor(InputSpec(shape=net.input_shape()).quantize(pixels), dtype=torch.float32)


def _accuracy(net: DigitsNet, x: torch.Tensor, y: torch.Tensor) -> float:
    # count / total in Python floats, the same number numpy gives for the golden model
    return int((net.predict(x) == y).sum()) / len(y)


def run_epoch(net, opt, base_lrs, xtr, ytr, gen, batch_size: int, step: int, total: int) -> tuple[float, int]:
    """One shuffled epoch of cross-entropy training with the cosine learning-rate schedule.

    Returns the mean training loss and the updated global step; shared by every training task.
    """
    net.train()
    perm = torch.randperm(len(xtr), generator=gen)
    total_loss = 0.0
    for i in range(math.ceil(len(xtr) / batch_size)):
        idx = perm[i * batch_size : (i + 1) * batch_size]
        for g, b in zip(opt.param_groups, base_lrs, strict=True):
            g["lr"] = b * 0.5 * (1 + math.cos(math.pi * step / total))
        loss = F.cross_entropy(net(xtr[idx]), ytr[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total_loss += float(loss.detach()) * len(idx)
        step += 1
    return total_loss / len(xtr), step


def train(cfg: TrainConfig, data: DigitsSplit | None = None, *, progress: bool = True) -> TrainResult:
    """Train one network from scratch; deterministic for a given config."""
    from tqdm import tqdm

    cfg = cfg.resolved()
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True)
    data = data or load_split()
    net = DigitsNet(cfg.task, cfg.kind, cfg.bits)
    xtr, ytr = to_tensor(net, data.x_train), torch.tensor(data.y_train)
    xte, yte = to_tensor(net, data.x_test), torch.tensor(data.y_test)

    latents = [p for n, p in net.named_parameters() if ".weight." in n and cfg.kind in ("denseshift", "pot-zero")]
    ids = {id(p) for p in latents}
    others = [p for p in net.parameters() if id(p) not in ids]
    groups = [{"params": others, "lr": cfg.lr}]
    if latents:
        groups.append({"params": latents, "lr": cfg.latent_lr})
    opt = torch.optim.SGD(groups, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    base = [g["lr"] for g in opt.param_groups]

    gen = torch.Generator().manual_seed(cfg.seed)
    steps_per_epoch = math.ceil(len(xtr) / cfg.batch_size)
    total = (cfg.epochs + cfg.exact_epochs) * steps_per_epoch
    step, t0, history, qat_acc = 0, time.perf_counter(), [], float("nan")
    desc = f"{cfg.task} {cfg.kind}{'' if cfg.kind in ('fp32', 'int8') else f'-{cfg.bits}b'} seed {cfg.seed}"
    bar = tqdm(range(cfg.epochs + cfg.exact_epochs), desc=desc, disable=not progress, leave=False)
    for epoch in bar:
        if epoch == cfg.epochs and cfg.exact_epochs:
            qat_acc = _accuracy(net, xte, yte)
            net.set_phase("exact")
        loss, step = run_epoch(net, opt, base, xtr, ytr, gen, cfg.batch_size, step, total)
        history.append({"epoch": epoch, "phase": net.phase, "loss": loss})
        bar.set_postfix(phase=net.phase, loss=f"{loss:.3f}")
    acc = _accuracy(net, xte, yte)
    if not cfg.exact_epochs:
        qat_acc = acc
    history[-1]["test_accuracy"] = acc
    return TrainResult(net, cfg, acc, qat_acc, time.perf_counter() - t0, history)
