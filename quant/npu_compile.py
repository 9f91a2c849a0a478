"""Model file -> NPU memory images and layer program (what ``Device.load`` uploads).

The compiler walks the model's layers and keeps track of where the current activation tensor
lives in the feature memory and in which layout:

* a *matrix* (``M`` rows x ``K`` features, ``K``-tiles of ``rows`` lanes: word ``kt*M + m``), which
  dense layers read and write (``M`` is the batch);
* a *feature map* of one image (``H x W`` pixels x ``C`` channels, channel tiles of ``rows`` lanes:
  word ``ct*H*W + p``), which conv2d layers write and max-pool / im2col read.

Dense and conv2d become engine GEMMs (the first conv's im2col is done on the host, later 3x3
padding-1 convs by the on-chip IM2COL3), max-pool 2x2 is MAXPOOL2, flatten is free (the weights of
the following dense layer are re-laid to the feature-map word order), and argmax is ARGMAX. Every
GEMM goes through :func:`quant.compile.plan_gemm`, so a model that cannot fit is refused here,
before anything is uploaded, with the resource named.

An LSTM layer (the model's first layer, input ``(T, I)``) becomes ``PWL_LOAD`` + ``LSTM``: its
gate weights ``[W; U]`` are one GEMM's ``(XT + HT) * rows x 4H`` weight matrix with the gate
columns interleaved per unit (column ``4j + g``, gates i, f, g, o), its PWL tables a feature-memory
area the host writes at load time (:attr:`CompiledModel.feature_init`), and its last ``h`` the
``M x H`` matrix the next dense layer reads (docs/architecture.md, "The LSTM path").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import golden
from .compile import CompileError, plan_gemm
from .config import NPUConfig
from .gate_map import cell_depth, entry_words, lstm_supported, table_entries
from .model import (
    ArgmaxLayer,
    Conv2dLayer,
    DenseLayer,
    FlattenLayer,
    LSTMLayer,
    MaxPool2dLayer,
    NPUModel,
    ReluLayer,
)
from .program import Instr, Op, encode_program
from .tiling import channel_words, feature_words, tiles, unpack_features, weight_words

__all__ = ["CompiledModel", "compile_model", "largest_batch"]


@dataclass
class CompiledModel:
    """Memory images and program of a model for one batch size, plus where inputs and outputs go."""

    config: NPUConfig
    batch: int
    weight: list[int]
    channel: list[int]
    program: list[int]
    feature_words: int  # feature-memory words the program touches
    #: per input group: (base address, first sample, sample count)
    inputs: list[tuple[int, int, int]] = field(default_factory=list)
    input_mode: str = "matrix"  # "matrix" (dense first), "im2col" (conv first, host im2col) or "sequence" (LSTM)
    first_conv: Conv2dLayer | None = None
    #: per input group: (logits base, rows, N) of the last GEMM
    logits: list[tuple[int, int, int]] = field(default_factory=list)
    #: per input group: argmax base (one byte per row), or None without an argmax layer
    classes: list[int | None] = field(default_factory=list)
    n_out: int = 0
    #: feature-memory areas written once at load time (the LSTM's PWL tables): (base, words)
    feature_init: list[tuple[int, list[int]]] = field(default_factory=list)

    def input_images(self, x_int8: np.ndarray) -> list[tuple[int, list[int]]]:
        """Feature-memory writes for a batch of int8 inputs ``[batch, *input_shape]``."""
        x = np.asarray(x_int8, dtype=np.int64)
        if x.shape[0] != self.batch:
            raise ValueError(f"this program was compiled for batch {self.batch}, got {x.shape[0]} samples")
        writes = []
        for base, first, count in self.inputs:
            xs = x[first : first + count]
            if self.input_mode == "sequence":  # step t's K-tiles at base + t * XT * count
                words = []
                for t in range(xs.shape[1]):
                    words += feature_words(xs[:, t, :], self.config.rows)
                writes.append((base, words))
                continue
            if self.input_mode == "matrix":
                A = xs.reshape(count, -1)
            else:
                kh, kw = self.first_conv.codes.shape[:2]
                A = golden.im2col(xs, kh, kw, self.first_conv.padding).reshape(-1, kh * kw * xs.shape[-1])
            writes.append((base, feature_words(A, self.config.rows)))
        return writes

    def read_plan(self) -> list[tuple[int, int]]:
        """(base, count) feature-memory ranges the driver reads back after a run."""
        out = []
        for (base, rows, n), cls in zip(self.logits, self.classes, strict=True):
            out.append((base, tiles(n, self.config.cols) * rows))
            if cls is not None:
                out.append((cls, tiles(rows, self.config.rows)))
        return out

    def decode_outputs(self, reads: list[list[int]]) -> tuple[np.ndarray, np.ndarray | None]:
        """Logits ``[batch, N]`` (int8) and classes ``[batch]`` from the words of :meth:`read_plan`."""
        logits, classes = [], []
        it = iter(reads)
        for (_, rows, n), cls in zip(self.logits, self.classes, strict=True):
            logits.append(unpack_features(next(it), rows, n, self.config.cols))
            if cls is not None:
                words = next(it)
                classes += [
                    (int(words[i // self.config.rows]) >> (8 * (i % self.config.rows))) & 0xFF for i in range(rows)
                ]
        return np.concatenate(logits), (np.array(classes) if classes else None)


class _Alloc:
    def __init__(self, depth: int):
        self.next, self.depth = 0, depth

    def take(self, words: int, what: str) -> int:
        base = self.next
        if base + words > self.depth:
            raise CompileError(f"{what}: the feature memory has {self.depth} words, the model needs more than that")
        self.next += words
        return base


def _gemm_params(layer, w_dev: np.ndarray):
    return w_dev, channel_words(layer.bias, layer.M, layer.n)


def compile_model(
    model: NPUModel, batch: int = 1, config: NPUConfig | None = None, prog_depth: int = 256
) -> CompiledModel:
    """Compile ``model`` for ``batch`` samples per run on a device with ``config`` (default: the model's)."""
    cfg = config or model.config
    if batch < 1:
        raise CompileError("batch must be >= 1")
    if cfg.rows != cfg.cols:
        raise CompileError(
            f"the NPU needs a square array (a layer's results are the next layer's activations), "
            f"got {cfg.rows}x{cfg.cols}"
        )
    model.shapes()  # validates the chain
    for i, la in enumerate(model.layers):
        if la.kind == "gru":
            raise CompileError(f"layer {la.name!r}: GRU layers are not mapped to the NPU yet")
        if isinstance(la, LSTMLayer) and la.layer_norm:
            raise CompileError(
                f"layer {la.name!r}: integer layer norm runs in the golden model only, not on the NPU yet"
            )
        if isinstance(la, LSTMLayer) and i != 0:
            raise CompileError(f"layer {la.name!r}: the NPU runs an LSTM only as the model's first layer")
    L = cfg.rows
    layers = list(model.layers)
    is_map = len(model.input.shape) == 3
    if is_map and not isinstance(layers[0], Conv2dLayer):
        raise CompileError("a model with an image input must start with a conv2d layer")
    is_seq = isinstance(layers[0], LSTMLayer)
    if is_seq:
        _check_lstm(cfg, layers[0], batch)
    gemm_idx = [i for i, la in enumerate(layers) if isinstance(la, (DenseLayer, Conv2dLayer, LSTMLayer))]
    if not gemm_idx:
        raise CompileError("the model has no dense or conv2d layer to run on the array")
    first_gemm = gemm_idx[0]
    for la in layers[:first_gemm]:
        if not isinstance(la, FlattenLayer):
            raise CompileError(f"layer {la.name!r}: only flatten may come before the first dense layer")

    weights: list[int] = []
    chans: list[int] = []
    # Lay out every GEMM layer's weights once; the per-image programs share them.
    layer_mem: dict[int, tuple[int, int, np.ndarray]] = {}
    shape = tuple(model.input.shape)
    on_chip_conv_shapes = {}
    flatten_from: tuple | None = None
    for i, layer in enumerate(layers):
        in_shape = shape
        shape = tuple(layer.output_shape(shape))
        if isinstance(layer, DenseLayer):
            K, N = layer.reduction, layer.out_channels
            w = layer.gemm_codes()
            if flatten_from is not None:  # re-lay rows to the feature-map word order
                H, W, C = flatten_from
                CT = tiles(C, L)
                dev = np.zeros((CT * H * W * L, N), dtype=np.int64)
                for ct in range(CT):
                    for p in range(H * W):
                        for lane in range(L):
                            c = ct * L + lane
                            if c < C:
                                dev[(ct * H * W + p) * L + lane] = w[p * C + c]
                w = dev
                flatten_from = None
        elif isinstance(layer, Conv2dLayer):
            kh, kw, cin, cout = layer.codes.shape
            if i == first_gemm:
                w = layer.gemm_codes()
            else:
                if (kh, kw, layer.padding) != (3, 3, 1):
                    raise CompileError(
                        f"layer {layer.name!r}: on-chip im2col supports 3x3 kernels with padding 1, "
                        f"not {kh}x{kw} with padding {layer.padding}"
                    )
                CT = tiles(cin, L)
                g = layer.gemm_codes()  # rows in (tap, cin) order
                w = np.zeros((9 * CT * L, cout), dtype=np.int64)
                for tap in range(9):
                    for c in range(cin):
                        w[(tap * CT + c // L) * L + c % L] = g[tap * cin + c]
                on_chip_conv_shapes[i] = (in_shape, CT)
        elif isinstance(layer, FlattenLayer):
            if len(in_shape) == 3:  # a feature map: the next dense layer reads it in word order
                flatten_from = in_shape
            continue
        elif isinstance(layer, LSTMLayer):
            w, ch = lstm_gemm_params(cfg, layer)
            wb, cb = len(weights), len(chans)
            weights += weight_words(w, cfg)
            chans += ch
            layer_mem[i] = (wb, cb, w)
            continue
        else:
            continue
        wb, cb = len(weights), len(chans)
        weights += weight_words(w, cfg)
        chans += channel_words(layer.bias, layer.M, layer.n)
        layer_mem[i] = (wb, cb, w)

    alloc = _Alloc(cfg.act_depth)
    prog: list[Instr] = []
    out = CompiledModel(
        cfg,
        batch,
        weights,
        chans,
        [],
        0,
        input_mode="im2col" if is_map else ("sequence" if is_seq else "matrix"),
        first_conv=layers[0] if is_map else None,
        n_out=0,
    )
    if is_seq:  # the PWL tables: written once with the model, copied into the gate unit by PWL_LOAD
        tw = entry_words(cfg, table_entries(cfg, layers[0].tables))
        out.feature_init.append((alloc.take(len(tw), f"PWL tables of layer {layers[0].name!r}"), tw))
    groups = [(s, 1) for s in range(batch)] if is_map else [(0, batch)]
    for first, count in groups:
        shape = tuple(model.input.shape)
        cur = None  # (base, M rows) of the current matrix, or base of the current map
        last_gemm = None
        for i, layer in enumerate(layers):
            in_shape = shape
            shape = tuple(layer.output_shape(shape))
            if isinstance(layer, LSTMLayer):
                wb, cb, w = layer_mem[i]
                T, n_in = model.input.shape
                H = layer.hidden
                XT, HT, NT = tiles(n_in, L), tiles(H, L), tiles(4 * H, cfg.cols)
                x_base = alloc.take(T * XT * count, f"input sequences of layer {layer.name!r}")
                out.inputs.append((x_base, first, count))
                act = alloc.take((XT + HT) * count, f"step inputs [x_t | h] of layer {layer.name!r}")
                z_base = alloc.take(2 * NT * count, f"gate pre-activations of layer {layer.name!r}")
                # the gate GEMM's shape, checked like any other (accumulator range, memories, fields)
                plan_gemm(
                    cfg,
                    count,
                    w.shape[0],
                    4 * H,
                    act_base=act,
                    out_base=z_base,
                    wgt_base=wb,
                    chan_base=cb,
                    relu=False,
                    w_codes=w,
                    what=f"layer {layer.name!r}",
                )
                tbl_base, tbl_words = out.feature_init[0]
                prog.append(Instr(Op.PWL_LOAD, {"src": tbl_base, "count": len(tbl_words)}))
                args = {"m": count, "hidden": H, "steps": T, "x_base": x_base, "act_base": act, "z_base": z_base}
                args |= {"wgt_base": wb, "chan_base": cb, "xt": XT, "h_base": act + XT * count}
                prog.append(Instr(Op.LSTM, args))
                cur = (act + XT * count, count)
                continue
            if isinstance(layer, (DenseLayer, Conv2dLayer)):
                wb, cb, w = layer_mem[i]
                if i == first_gemm:
                    K = w.shape[0]
                    M = count if not is_map else shape[0] * shape[1]
                    base = alloc.take(tiles(K, L) * M, f"input of layer {layer.name!r}")
                    out.inputs.append((base, first, count))
                    act = base
                elif isinstance(layer, Conv2dLayer):
                    (H, W, _), CT = on_chip_conv_shapes[i]
                    act = alloc.take(9 * CT * H * W, f"im2col of layer {layer.name!r}")
                    prog.append(Instr(Op.IM2COL3, {"src": cur, "dst": act, "h": H, "w": W, "ct": CT}))
                    M = H * W
                else:
                    act, M = cur if isinstance(cur, tuple) else (cur, 1)
                N = layer.out_channels
                obase = alloc.take(tiles(N, L) * M, f"output of layer {layer.name!r}")
                plan = plan_gemm(
                    cfg,
                    M,
                    w.shape[0],
                    N,
                    act_base=act,
                    out_base=obase,
                    wgt_base=wb,
                    chan_base=cb,
                    relu=layer.relu,
                    w_codes=w,
                    what=f"layer {layer.name!r}",
                )
                cmd = plan.command()
                relu = bool(cmd.pop("relu"))
                prog.append(Instr(Op.GEMM, cmd, relu=relu))
                last_gemm = (obase, M, N)
                cur = obase if isinstance(layer, Conv2dLayer) else (obase, M)
            elif isinstance(layer, ReluLayer):
                if not prog or prog[-1].op != Op.GEMM:
                    raise CompileError(f"layer {layer.name!r}: a ReLU must follow a dense or conv2d layer")
                prog[-1] = Instr(Op.GEMM, prog[-1].args, relu=True)
            elif isinstance(layer, MaxPool2dLayer):
                H, W, C = in_shape
                if layer.size != 2 or H % 2 or W % 2:
                    raise CompileError(
                        f"layer {layer.name!r}: on-chip max-pool is 2x2 over even sizes, got {layer.size} on {H}x{W}"
                    )
                CT = tiles(C, L)
                dst = alloc.take(CT * (H // 2) * (W // 2), f"output of layer {layer.name!r}")
                prog.append(Instr(Op.MAXPOOL2, {"src": cur, "dst": dst, "h": H, "w": W, "ct": CT}))
                cur = dst
            elif isinstance(layer, FlattenLayer):
                if len(in_shape) == 3:  # one image's feature map becomes a 1-row matrix
                    cur = (cur, 1)
            elif isinstance(layer, ArgmaxLayer):
                if not prog or prog[-1].op != Op.GEMM:
                    raise CompileError(
                        f"layer {layer.name!r}: the NPU's argmax reads the result of a dense or conv2d layer, "
                        f"but it follows {layers[i - 1].kind!r}"
                    )
                base, M, N = last_gemm
                if N > 256:
                    raise CompileError(
                        f"layer {layer.name!r}: argmax over {N} classes; the device stores a class in one byte (at most 256)"
                    )
                dst = alloc.take(tiles(M, L), "argmax output")
                prog.append(Instr(Op.ARGMAX, {"src": base, "dst": dst, "m": M, "n": N, "nt": tiles(N, L)}))
                out.classes.append(dst)
            else:
                raise CompileError(f"layer {layer.name!r}: kind {layer.kind!r} has no NPU mapping yet")
        if last_gemm is None or not (prog and prog[-1].op in (Op.GEMM, Op.ARGMAX)):
            raise CompileError(
                "the model must end in a dense or conv2d layer (optionally followed by ReLU and argmax), "
                f"not in {layers[-1].kind!r}"
            )
        out.logits.append(last_gemm)
        if len(out.classes) < len(out.logits):
            out.classes.append(None)
        out.n_out = last_gemm[2]
    out.program = encode_program(prog)
    if len(out.program) > prog_depth:
        raise CompileError(f"the program needs {len(out.program)} words, the program memory has {prog_depth}")
    if len(weights) > cfg.weight_depth:
        raise CompileError(f"the weights need {len(weights)} words, the weight memory has {cfg.weight_depth}")
    if len(chans) > cfg.chan_depth:
        raise CompileError(f"the channel parameters need {len(chans)} words, the channel memory has {cfg.chan_depth}")
    out.feature_words = alloc.next
    return out


def _check_lstm(cfg: NPUConfig, layer: LSTMLayer, batch: int) -> None:
    what = f"layer {layer.name!r} (lstm)"
    R = cfg.rows
    if not lstm_supported(cfg):
        raise CompileError(
            f"{what}: the LSTM path needs a square power-of-two array of at least 4x4 (a unit's four int16 "
            f"gates fill whole feature words), got {R}x{cfg.cols}"
        )
    H = layer.hidden
    if batch * H > cell_depth(cfg):
        raise CompileError(
            f"{what}: {batch} sequences x {H} units need {batch * H} cells, the gate unit holds {cell_depth(cfg)}"
        )
    try:
        table_entries(cfg, layer.tables)
    except ValueError as e:
        raise CompileError(f"{what}: {e}") from None


def lstm_gemm_params(cfg: NPUConfig, layer: LSTMLayer) -> tuple[np.ndarray, list[int]]:
    """The gate GEMM of an LSTM layer: weight codes ``(XT + HT) * rows x 4H`` and its channel words.

    Rows: ``x`` (``XT`` K-tiles), then ``h`` (``HT`` K-tiles), each padded to whole tiles (codes 0
    there meet zero activations). Column ``4j + g`` is gate ``g`` (i, f, g, o) of unit ``j``, so the
    gate GEMM's result row holds each unit's four gates in one feature word (from 8x8 on) or in the
    row's two words (4x4: i, f in the first, g, o in the second).
    """
    R = cfg.rows
    H, n_in = layer.hidden, int(layer.W.shape[1])
    XT, HT = tiles(n_in, R), tiles(H, R)
    w = np.zeros(((XT + HT) * R, 4 * H), dtype=np.int64)
    for g in range(4):
        cols = 4 * np.arange(H) + g
        w[:n_in, cols] = np.asarray(layer.W, np.int64)[g * H : (g + 1) * H].T
        w[XT * R : XT * R + H, cols] = np.asarray(layer.U, np.int64)[g * H : (g + 1) * H].T
    order = lambda a: np.asarray(a, np.int64).T.reshape(-1)  # noqa: E731 - (4, H) -> column 4j + g
    return w, channel_words(order(layer.bias), order(layer.M), order(layer.n))


def largest_batch(model: NPUModel, config: NPUConfig | None = None, limit: int = 64) -> int:
    """The largest batch (1 .. ``limit``) whose compiled program fits the device memories."""
    cfg = config or model.config

    def fits(b: int) -> bool:
        try:
            compile_model(model, b, cfg, prog_depth=cfg.prog_depth)
            return True
        except CompileError:
            return False

    if not fits(1):
        compile_model(model, 1, cfg, prog_depth=cfg.prog_depth)  # raises, naming the resource
    lo, hi = 1, limit  # memory use grows with the batch: binary search for the last size that fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo
