"""Character-level language model on CPython's ``pydoc_data.topics``: an integer-only LSTM, bits per character.

Data (offline, on every machine with Python): the help texts of ``pydoc_data.topics.topics`` joined
in sorted key order with ``"\\n"`` between topics (465 048 characters on CPython 3.11.7; the text
differs between Python versions, so every result records its SHA-256). Fixed vocabulary of
:data:`VOCAB_SIZE` = 97 symbols: newline, the 95 printable ASCII characters (space .. ``~``) and one
"other" symbol for everything else (575 characters of 465k: curly quotes, dashes, ``ß``, ...).
Split by position: the first 90 % trains, the next 5 % is the validation split, the last 5 % the
test split (:func:`load_charlm`).

Model: ``embedding (97 x E, int8 Q0.7) -> LSTM (E -> H) -> dense (H -> 97) -> softmax``. The
embedding table holds the LSTM's int8 inputs directly (a lookup, no arithmetic). The head keeps its
int32 accumulators (as iRNN's last layer: no requantization to int8); the logits are
``a[v] * (acc[v] + bias[v])`` with one real scale per output row, used only by the softmax that
measures the loss. Everything before the softmax is integers: the embedding codes, the exact LSTM of
:class:`~quant.train.rnn.QuantRNN` and the head's integer dot products.

Training: random windows of ``seq_len + 1`` characters from the training split, every window from a
zero state; Adam, cosine decay; quantized models run the first ``warmup_steps`` with float LSTM
activations (quantized weights), then the exact integer LSTM. Evaluation: the split cut into
consecutive windows of ``seq_len``, each from a zero state, every character predicted (so the first
characters of a window have little context: the same for FP32 and the integer model).
bits per character = mean cross entropy / ln 2.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import NPUConfig
from .actquant import round_ste
from .rnn import X_SCALE, QuantRNN
from .weights import make_weight

__all__ = [
    "VOCAB_SIZE",
    "OTHER",
    "SPLIT",
    "CharData",
    "load_charlm",
    "encode_text",
    "CharLM",
    "CharTrainConfig",
    "CharTrainResult",
    "train_charlm",
    "evaluate_bpc",
    "export_charlm",
    "golden_charlm",
    "golden_bpc",
]

#: newline, space .. "~" (95), and "other"
VOCAB_SIZE = 97
OTHER = 96
#: fractions of the text: train, validation, test (in this order, by position)
SPLIT = (0.90, 0.05, 0.05)
_INT32 = (1 << 31) - 1


def encode_text(text: str) -> np.ndarray:
    """Symbol ids (uint8): ``"\\n"`` -> 0, ``chr(32 + k)`` -> 1 + k for k < 95, anything else -> :data:`OTHER`."""
    b = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    ids = np.where((b >= 32) & (b <= 126), b - 31, OTHER)
    ids[b == 10] = 0
    return ids.astype(np.uint8)


@dataclass
class CharData:
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    sha256: str
    chars: int


def load_charlm() -> CharData:
    """The fixed split of ``pydoc_data.topics`` (see the module docstring)."""
    from pydoc_data.topics import topics

    text = "\n".join(topics[k] for k in sorted(topics))
    ids = encode_text(text)
    n = len(ids)
    a, b = int(n * SPLIT[0]), int(n * (SPLIT[0] + SPLIT[1]))
    return CharData(ids[:a], ids[a:b], ids[b:], hashlib.sha256(text.encode()).hexdigest(), n)


class QuantHead(nn.Module):
    """Dense ``H -> V`` with a weight parametrization, a gain per row and a bias; int32 outputs in the exact phase."""

    def __init__(self, hidden: int, vocab: int, kind: str, bits: int):
        super().__init__()
        self.kind = kind
        self.weight = make_weight(kind, (vocab, hidden), bits)
        g0 = 1.0
        if kind == "denseshift":
            v0, _ = self.weight.integer()
            g0 = math.sqrt(1.0 / hidden) / float(v0.pow(2).mean().sqrt())
        self.log_gain = nn.Parameter(torch.full((vocab,), math.log(g0)))
        self.bias = nn.Parameter(torch.zeros(vocab))

    @torch.no_grad()
    def integer(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(v, a, b)``: integer weights (float64), real value of one accumulator unit per row, int32 bias."""
        v, alpha = self.weight.integer()
        a = torch.exp(self.log_gain.detach().double()) * alpha.double() * X_SCALE
        b = torch.clamp(torch.round(self.bias.detach().double() / a), -_INT32 - 1, _INT32).to(torch.int64)
        return v.double(), a, b

    def float_forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.log_gain) * (h @ self.weight().T) + self.bias

    def exact_forward(self, h_r: torch.Tensor, h_i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(real logits with straight-through gradients, int64 accumulators ``acc + bias``)."""
        v, a, b = self.integer()
        with torch.no_grad():
            acc = (h_i.double() @ v.T).round().to(torch.int64) + b
        logits = (acc.double() * a).float()
        return logits + (self.float_forward(h_r) - self.float_forward(h_r).detach()), acc


class CharLM(nn.Module):
    """``int8 embedding -> QuantRNN -> QuantHead``; ``kind`` is ``fp32``, ``int8`` or ``denseshift``."""

    def __init__(
        self,
        kind: str = "denseshift",
        bits: int = 4,
        embed: int = 32,
        hidden: int = 128,
        *,
        cell: str = "lstm",
        layer_norm: bool = False,
        config: NPUConfig | None = None,
    ):
        super().__init__()
        self.kind, self.bits = kind, (8 if kind == "int8" else bits)
        self.embed = nn.Parameter(torch.rand(VOCAB_SIZE, embed) - 0.5)
        self.rnn = QuantRNN(cell, embed, hidden, kind=kind, bits=bits, config=config, layer_norm=layer_norm)
        self.head = QuantHead(hidden, VOCAB_SIZE, kind, bits)

    def embed_codes(self) -> torch.Tensor:
        """The embedding as int8 Q0.7 codes (int64 ``[V, E]``)."""
        return torch.clamp(torch.round(self.embed.detach() * 128), -128, 127).to(torch.int64)

    def inputs(self, ids: torch.Tensor) -> torch.Tensor:
        """Integer-valued Q0.7 inputs ``[B, T, E]`` (real-valued for FP32) with straight-through rounding."""
        e = self.embed * 128
        if self.kind != "fp32":
            e = torch.clamp(round_ste(e), -128, 127)
        return e[ids]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, T, V]`` predicting ``ids[:, t + 1]`` from ``ids[:, :t + 1]``."""
        h_r, h_i = self.rnn(self.inputs(ids))
        if h_i is None:
            return self.head.float_forward(h_r)
        return self.head.exact_forward(h_r, h_i)[0]

    @torch.no_grad()
    def trace(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact phase: (every h as int64 ``[B, T, H]``, head accumulators int64 ``[B, T, V]``)."""
        if self.rnn.phase != "exact":
            raise ValueError("trace needs the exact phase")
        h_r, h_i = self.rnn(self.inputs(ids))
        return h_i, self.head.exact_forward(h_r, h_i)[1]

    def parameter_bytes(self) -> dict[str, int]:
        """Bytes of the parameters as stored: FP32 (4 bytes each) or integer (codes packed at ``bits`` bits).

        Integer form: embedding 1 byte per entry; LSTM weight codes at ``bits`` bits, bias int32, M
        uint16, n uint8 per slot, LN int16 per slot, PWL tables (int16 knots, y, m); head codes at
        ``bits`` bits, int32 bias and a 4-byte scale per row.
        """
        V, E = self.embed.shape
        r = self.rnn
        H, n_in, G = r.hidden, r.inputs, r.rows
        nw_rnn, nw_head = G * H * (n_in + H), V * H
        if self.kind == "fp32":
            slots = (4 * H) * (3 if r.layer_norm else 1)  # bias (+ LN gamma, beta)
            total = 4 * (V * E + nw_rnn + nw_head + slots + 2 * V)
            return {"weights": 4 * (nw_rnn + nw_head), "total": total}
        wbytes = math.ceil((nw_rnn + nw_head) * self.bits / 8)
        tables = sum(2 * (len(t.knots) + len(t.y) + len(t.m)) for t in r.tables.values())
        slots = 4 * H * (4 + 2 + 1 + (4 if r.layer_norm else 0))
        total = V * E + wbytes + slots + tables + V * (4 + 4)
        return {"weights": wbytes, "total": total}


@dataclass
class CharTrainConfig:
    """One char-LM run (default size: trains in a few minutes on one core)."""

    kind: str = "denseshift"
    bits: int = 4
    cell: str = "lstm"
    embed: int = 32
    hidden: int = 128
    layer_norm: bool = False
    pwl_pieces: int = 16
    adaptive_pwl: bool = True
    refit_every: int = 100  # steps between adaptive PWL refits (exact phase)
    seed: int = 0
    steps: int = 600
    warmup_steps: int = 300  # quantized models: float LSTM activations for these first steps
    seq_len: int = 64
    batch_size: int = 64
    lr: float = 5e-3
    threads: int = 1


@dataclass
class CharTrainResult:
    net: CharLM
    config: CharTrainConfig
    valid_bpc: float
    test_bpc: float
    seconds: float
    cpu_seconds: float
    history: list = field(default_factory=list)


def _windows(ids: np.ndarray, seq_len: int) -> torch.Tensor:
    n = (len(ids) - 1) // seq_len
    return torch.tensor(ids[: n * seq_len + 1].astype(np.int64))


@torch.no_grad()
def evaluate_bpc(net: CharLM, ids: np.ndarray, seq_len: int = 64, batch: int = 256) -> float:
    """Bits per character of ``net`` on ``ids`` (consecutive windows of ``seq_len``, each from a zero state)."""
    was = net.training
    net.eval()
    try:
        n = (len(ids) - 1) // seq_len
        x = torch.tensor(ids[: n * seq_len].astype(np.int64)).view(n, seq_len)
        y = torch.tensor(ids[1 : n * seq_len + 1].astype(np.int64)).view(n, seq_len)
        total = 0.0
        for i in range(0, n, batch):
            logits = net(x[i : i + batch])
            total += float(
                F.cross_entropy(logits.reshape(-1, VOCAB_SIZE), y[i : i + batch].reshape(-1), reduction="sum")
            )
        return total / (n * seq_len) / math.log(2)
    finally:
        net.train(was)


def train_charlm(cfg: CharTrainConfig, data: CharData | None = None, *, progress: bool = True) -> CharTrainResult:
    """Train one char-LM from scratch; deterministic for a given config."""
    from tqdm import tqdm

    cfg = CharTrainConfig(**asdict(cfg))
    if cfg.kind not in ("fp32", "int8", "denseshift"):
        raise ValueError(f"unknown weight kind {cfg.kind!r}; expected fp32, int8 or denseshift")
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True)
    data = data or load_charlm()
    config = NPUConfig(weight_bits={"int8": 8, "denseshift": cfg.bits}.get(cfg.kind, 4), pwl_pieces=cfg.pwl_pieces)
    net = CharLM(cfg.kind, cfg.bits, cfg.embed, cfg.hidden, cell=cfg.cell, layer_norm=cfg.layer_norm, config=config)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    train_ids = torch.tensor(data.train.astype(np.int64))
    span = len(train_ids) - cfg.seq_len - 1
    t0, c0, history = time.perf_counter(), time.process_time(), []
    quant = cfg.kind != "fp32"
    bar = tqdm(range(cfg.steps), desc=f"charlm {cfg.kind}", disable=not progress, leave=False)
    for step in bar:
        if quant:
            exact = step >= min(cfg.warmup_steps, cfg.steps - 1)
            net.rnn.phase = "exact" if exact else "float"
            net.rnn.collect = exact and cfg.adaptive_pwl
            if (
                exact
                and cfg.adaptive_pwl
                and step > cfg.warmup_steps
                and (step - cfg.warmup_steps) % cfg.refit_every == 0
            ):
                net.rnn.refit_tables(cfg.pwl_pieces)
        for g in opt.param_groups:
            g["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        starts = torch.randint(0, span, (cfg.batch_size,), generator=gen)
        win = train_ids[starts[:, None] + torch.arange(cfg.seq_len + 1)]
        logits = net(win[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, VOCAB_SIZE), win[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bpc = float(loss.detach()) / math.log(2)
        history.append(bpc)
        bar.set_postfix(phase=net.rnn.phase, bpc=f"{bpc:.3f}")
    if quant:
        net.rnn.phase, net.rnn.collect = "exact", False  # what is evaluated is always the integer model
    valid = evaluate_bpc(net, data.valid, cfg.seq_len)
    test = evaluate_bpc(net, data.test, cfg.seq_len)
    return CharTrainResult(net, cfg, valid, test, time.perf_counter() - t0, time.process_time() - c0, history)


def export_charlm(net: CharLM) -> dict[str, np.ndarray]:
    """The integer char-LM as named arrays (for ``np.savez``): what :func:`golden_charlm` runs.

    ``embed`` int8 ``[V, E]``; the RNN as in the model file's LSTM/GRU layer (``W``, ``U``, ``bias``,
    ``M``, ``n``, ``<table>_knots/_y/_m`` and ``<table>_shift``, optional ``ln_gamma``/``ln_beta``),
    ``cell`` and ``weight_bits`` as 0-d arrays; the head's codes ``head_codes`` ``[V, H]``, int32
    ``head_bias`` and float64 ``head_scale`` (the real value of one accumulator unit per row).
    """
    from ..codes import decode, encode

    if net.kind == "fp32":
        raise ValueError("an FP32 char-LM has no integer form")
    p = net.rnn.rnn_params()
    out: dict[str, np.ndarray] = {
        "cell": np.array(p.kind),
        "weight_bits": np.array(p.weight_bits),
        "cell_frac_bits": np.array(net.rnn.config.cell_frac_bits),
        "embed": net.embed_codes().numpy().astype(np.int8),
        "W": p.W.astype(np.uint8),
        "U": p.U.astype(np.uint8),
        "bias": p.b.astype(np.int32),
        "M": p.M.astype(np.uint16),
        "n": p.n.astype(np.uint8),
    }
    for k, t in p.tables.items():
        out |= {f"{k}_knots": t.knots, f"{k}_y": t.y, f"{k}_m": t.m, f"{k}_shift": np.array(t.shift)}
        out[f"{k}_in_frac_bits"] = np.array(t.in_frac_bits)
    if p.ln_gamma is not None:
        out |= {"ln_gamma": p.ln_gamma.astype(np.int16), "ln_beta": p.ln_beta.astype(np.int16)}
    v, a, b = net.head.integer()
    v = v.round().to(torch.int64).numpy()
    codes = encode(v, p.weight_bits).astype(np.uint8)
    if not np.array_equal(decode(codes, p.weight_bits), v):
        raise ValueError(f"head weights are not all representable as {p.weight_bits}-bit codes")
    out |= {"head_codes": codes, "head_bias": b.numpy().astype(np.int32), "head_scale": a.numpy()}
    return out


def golden_charlm(arrays: dict[str, np.ndarray], ids: np.ndarray) -> np.ndarray:
    """Head accumulators ``[B, T, V]`` (int64) of the exported char-LM on symbol ids ``[B, T]``: numpy only.

    Embedding lookup, :func:`quant.rnn.rnn_layer`, then ``codes @ h + bias`` per step.
    """
    from ..codes import decode
    from ..pwl import PWLTable
    from ..rnn import RNNParams, rnn_layer

    cell, bits = str(arrays["cell"]), int(arrays["weight_bits"])
    names = ("sigmoid", "tanh", "tanh_cell") if cell == "lstm" else ("sigmoid", "tanh")
    tables = {
        k: PWLTable(
            arrays[f"{k}_knots"],
            arrays[f"{k}_y"],
            arrays[f"{k}_m"],
            int(arrays[f"{k}_shift"]),
            func="sigmoid" if k == "sigmoid" else "tanh",
            in_frac_bits=int(arrays[f"{k}_in_frac_bits"]),
        )
        for k in names
    }
    ln = {}
    if "ln_gamma" in arrays:
        ln = {"ln_gamma": arrays["ln_gamma"].astype(np.int64), "ln_beta": arrays["ln_beta"].astype(np.int64)}
    p = RNNParams(cell, arrays["W"], arrays["U"], arrays["bias"], arrays["M"], arrays["n"], bits, tables, **ln)
    xs = arrays["embed"].astype(np.int64)[np.asarray(ids)]  # [B, T, E]
    config = NPUConfig(weight_bits=bits, cell_frac_bits=int(arrays["cell_frac_bits"]))
    hs, _, _, _ = rnn_layer(p, xs.transpose(1, 0, 2), config)  # [T, B, H]
    acc = hs.transpose(1, 0, 2) @ decode(arrays["head_codes"], bits).T + arrays["head_bias"].astype(np.int64)
    return acc


def golden_bpc(arrays: dict[str, np.ndarray], ids: np.ndarray, seq_len: int = 64) -> float:
    """Bits per character of the exported char-LM (windows as :func:`evaluate_bpc`), numpy only."""
    n = (len(ids) - 1) // seq_len
    x = ids[: n * seq_len].astype(np.int64).reshape(n, seq_len)
    y = ids[1 : n * seq_len + 1].astype(np.int64).reshape(n, seq_len)
    logits = golden_charlm(arrays, x) * arrays["head_scale"]
    logits = logits - logits.max(-1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, y[..., None], -1).mean()
    return float(nll / math.log(2))
