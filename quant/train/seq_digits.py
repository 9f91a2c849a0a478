"""Sequential digits: an integer-only LSTM reads each 8x8 digit row by row, a dense layer classifies.

Task: the fixed digits split of :mod:`quant.digits`, each image read as T = 8 time steps of I = 8
pixels (row ``t`` is step ``t``). Input map: ``q = 7 * pixel`` (0..112) taken as **Q0.7**, i.e. the
real value ``7 p / 128`` (a pixel of 16 is 0.875): the LSTM's x format (SPEC §4). The model is
``LSTM(8 -> H) -> last h (Q0.7) -> dense(H -> 10) -> argmax``.

Phases (like :class:`quant.train.network.DigitsNet`):

``float``
    FP32 baseline (float LSTM, float dense with BatchNorm).
``qat``
    The LSTM in its exact integer form (:class:`~quant.train.rnn.QuantLSTM`), the dense head with
    quantized weights, BatchNorm on batch statistics and int8 fake-quantized logits.
``exact``
    BatchNorm frozen and folded: the whole forward pass is the integer network that
    :func:`export_seq_model` writes; the golden model on the file reproduces it bit for bit.

Training: Adam (lr 1e-2 for every parameter, DenseShift latents included: Adam's step does not
depend on the latents' tiny gradient scale), batch 64, cosine decay to 0, ``epochs`` + ``exact_epochs``;
the first ``warmup_epochs`` (at most ``epochs``) run the LSTM with quantized weights but float
activations. The reported accuracy is always that of the integer network.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from ..config import NPUConfig
from ..digits import DigitsSplit, load_split
from ..model import ArgmaxLayer, DenseLayer, GRULayer, InputSpec, LSTMLayer, NPUModel
from .layers import QuantLinear
from .network import QuantBlock
from .rnn import X_SCALE, QuantRNN
from .trainer import run_epoch

__all__ = ["SeqDigitsNet", "SeqTrainConfig", "SeqTrainResult", "train_seq", "export_seq_model", "to_sequence"]

STEPS, WIDTH = 8, 8


def to_sequence(pixels: np.ndarray) -> torch.Tensor:
    """Digits pixels ``[B, 64]`` (0..16) as the int8 Q0.7 sequence (the model file's input map), float ``[B, 8, 8]``."""
    from ..model import InputSpec

    return torch.tensor(InputSpec(shape=(STEPS, WIDTH)).quantize(pixels), dtype=torch.float32)


class SeqDigitsNet(nn.Module):
    """``QuantRNN(cell, 8, hidden) -> last h -> QuantBlock(dense hidden -> 10)`` (the RNN is ``self.lstm`` for either cell)."""

    task = "seq-digits"

    def __init__(
        self,
        kind: str = "denseshift",
        bits: int = 4,
        hidden: int = 32,
        config: NPUConfig | None = None,
        *,
        cell: str = "lstm",
        layer_norm: bool = False,
    ):
        super().__init__()
        self.kind, self.bits, self.hidden = kind, (8 if kind == "int8" else bits), hidden
        q = kind != "fp32"
        self.lstm = QuantRNN(cell, WIDTH, hidden, kind=kind, bits=bits, config=config, layer_norm=layer_norm)
        self.head = QuantBlock("fc", QuantLinear(hidden, 10, kind=kind, bits=bits), relu=False, quantized=q)
        self.phase = "qat" if q else "float"

    def set_phase(self, phase: str) -> None:
        if (self.kind == "fp32") != (phase == "float") or phase not in ("float", "qat", "exact"):
            raise ValueError(f"phase {phase!r} does not apply to a {self.kind} network")
        self.head.act.frozen = phase == "exact"
        self.phase = phase

    def forward(self, xs: torch.Tensor) -> torch.Tensor:
        """Logits (real-valued) for integer-valued ``xs`` ``[B, 8, 8]``."""
        h_r, _ = self.lstm(xs)
        if self.phase == "exact":
            q, s = self.head.exact_forward(h_r[:, -1] / X_SCALE, X_SCALE)
            return q * s
        return self.head.float_forward(h_r[:, -1])

    @torch.no_grad()
    def trace(self, xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact phase: (last h as int64 ``[B, H]``, int8 logits as int64 ``[B, 10]``)."""
        if self.phase != "exact":
            raise ValueError("trace needs the exact phase")
        _, h_i = self.lstm(xs)
        q, _ = self.head.exact_forward(h_i[:, -1].float(), X_SCALE)
        return h_i[:, -1], q.round().to(torch.int64)

    @torch.no_grad()
    def predict(self, xs: torch.Tensor) -> torch.Tensor:
        was = self.training
        self.eval()
        try:
            logits = self.trace(xs)[1] if self.phase == "exact" else self(xs)
            return torch.argmax(logits, dim=1)
        finally:
            self.train(was)


@dataclass
class SeqTrainConfig:
    """One run; ``kind`` is ``fp32``, ``int8`` or ``denseshift``."""

    kind: str = "denseshift"
    bits: int = 4
    hidden: int = 32
    cell: str = "lstm"
    layer_norm: bool = False
    pwl_pieces: int = 16
    adaptive_pwl: bool = False  # refit the PWL tables from the running histograms (exact epochs)
    refit_every: int = 10  # epochs between refits
    seed: int = 0
    epochs: int = 80
    exact_epochs: int = 20
    lr: float = 1e-2
    latent_lr: float | None = None  # DenseShift sign/scale latents; None: ``lr``
    warmup_epochs: int = 20  # first epochs with quantized weights but float LSTM activations
    batch_size: int = 64
    threads: int = 1


@dataclass
class SeqTrainResult:
    net: SeqDigitsNet
    config: SeqTrainConfig
    test_accuracy: float
    qat_accuracy: float
    seconds: float
    history: list = field(default_factory=list)


def _accuracy(net: SeqDigitsNet, x: torch.Tensor, y: torch.Tensor) -> float:
    return int((net.predict(x) == y).sum()) / len(y)


def train_seq(cfg: SeqTrainConfig, data: DigitsSplit | None = None, *, progress: bool = True) -> SeqTrainResult:
    """Train one sequential-digits network from scratch; deterministic for a given config."""
    from tqdm import tqdm

    cfg = SeqTrainConfig(**asdict(cfg))
    if cfg.kind == "fp32":
        cfg.exact_epochs = 0
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True)
    data = data or load_split()
    config = NPUConfig(weight_bits={"int8": 8, "denseshift": cfg.bits}.get(cfg.kind, 4), pwl_pieces=cfg.pwl_pieces)
    net = SeqDigitsNet(cfg.kind, cfg.bits, cfg.hidden, config, cell=cfg.cell, layer_norm=cfg.layer_norm)
    xtr, ytr = to_sequence(data.x_train), torch.tensor(data.y_train)
    xte, yte = to_sequence(data.x_test), torch.tensor(data.y_test)
    latents = [p for n, p in net.named_parameters() if ".weight." in n and cfg.kind == "denseshift"]
    ids = {id(p) for p in latents}
    groups = [{"params": [p for p in net.parameters() if id(p) not in ids], "lr": cfg.lr}]
    if latents:
        groups.append({"params": latents, "lr": cfg.latent_lr if cfg.latent_lr is not None else cfg.lr})
    opt = torch.optim.Adam(groups)
    base = [g["lr"] for g in opt.param_groups]
    gen = torch.Generator().manual_seed(cfg.seed)
    spe = math.ceil(len(xtr) / cfg.batch_size)
    total = (cfg.epochs + cfg.exact_epochs) * spe
    step, t0, history, qat_acc = 0, time.perf_counter(), [], float("nan")
    bar = tqdm(range(cfg.epochs + cfg.exact_epochs), desc=f"seq-digits {cfg.kind}", disable=not progress, leave=False)
    for epoch in bar:
        if epoch == cfg.epochs and cfg.exact_epochs:
            qat_acc = _accuracy(net, xte, yte)
            net.set_phase("exact")
        if cfg.kind != "fp32":
            # the warm-up never reaches into the exact epochs: the folded head trains on the integer LSTM
            net.lstm.phase = "float" if epoch < min(cfg.warmup_epochs, cfg.epochs) else "exact"
            exact = net.lstm.phase == "exact"
            net.lstm.collect = exact and cfg.adaptive_pwl
            e0 = min(cfg.warmup_epochs, cfg.epochs)
            if net.lstm.collect and epoch > e0 and (epoch - e0) % cfg.refit_every == 0:
                net.lstm.refit_tables(cfg.pwl_pieces)
        loss, step = run_epoch(net, opt, base, xtr, ytr, gen, cfg.batch_size, step, total)
        history.append({"epoch": epoch, "phase": net.phase, "loss": loss})
        bar.set_postfix(phase=net.phase, loss=f"{loss:.3f}")
    if cfg.kind != "fp32":
        net.lstm.phase = "exact"  # what is evaluated and exported is always the integer LSTM
        net.lstm.collect = False
    acc = _accuracy(net, xte, yte)
    if not cfg.exact_epochs:
        qat_acc = acc
    return SeqTrainResult(net, cfg, acc, qat_acc, time.perf_counter() - t0, history)


def export_seq_model(net: SeqDigitsNet, config: NPUConfig | None = None, metadata: dict | None = None) -> NPUModel:
    """The integer model ``lstm|gru -> dense -> argmax`` of an exact-phase ``net``."""
    if net.kind not in ("denseshift", "int8"):
        raise ValueError(f"cannot export a {net.kind} network: only DenseShift and int8 weights have hardware codes")
    config = config or net.lstm.config
    if config.weight_bits != net.bits:
        raise ValueError(f"the network has {net.bits}-bit weights but the config has weight_bits={config.weight_bits}")
    if config.cell_frac_bits != net.lstm.config.cell_frac_bits and net.lstm.cell == "lstm":
        raise ValueError("the config's cell format differs from the one the LSTM was trained with")
    from ..codes import decode, encode

    p = net.lstm.rnn_params()
    lstm = (LSTMLayer if p.kind == "lstm" else GRULayer).from_params(p.kind, p)
    f = net.head.fold(X_SCALE)
    v = f.v.round().to(torch.int64).numpy().T
    codes = encode(v, net.bits).astype(np.uint8)
    if not np.array_equal(decode(codes, net.bits), v):
        raise ValueError(f"head weights are not all representable as {net.bits}-bit codes")
    fc = DenseLayer(
        name="fc",
        codes=np.ascontiguousarray(codes),
        M=f.M.numpy().astype(np.uint16),
        n=f.n.numpy().astype(np.uint8),
        bias=f.bias.numpy().astype(np.int32),
        relu=False,
        out_scale=f.out_scale,
    )
    model = NPUModel(
        config=config,
        input=InputSpec(shape=(STEPS, WIDTH), multiplier=7, raw_max=16, scale=X_SCALE),
        layers=[lstm, fc, ArgmaxLayer("argmax")],
        metadata=dict(metadata or {}),
    )
    model.validate()
    return model
