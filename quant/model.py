"""The versioned shiftnpu model file: integer layers, their weight codes, requantizers and config.

A model file is what training exports and what the golden model, the packer and the host driver
read. It needs numpy only (no torch), so a small host can load it. The byte layout is documented in
``docs/model-format.md``::

    header   "SHIFTNPU" | version u16 | reserved u16 | manifest length u32 | manifest CRC-32 u32
    manifest UTF-8 JSON: config, input, layers, arrays (dtype, shape, offset, size, sha256), metadata
    padding  zero bytes up to a multiple of 8
    data     raw little-endian arrays, each starting at a multiple of 8

Every field is validated on load (and before saving): a truncated, corrupt, wrong-version or
inconsistent file raises :class:`ModelFormatError` with a message naming the problem.

Layer kinds are registered in :data:`LAYER_KINDS`; a new kind (``"lstm"``, ``"gru"``) adds a class
with the same small interface (``kind``, ``arrays()``, ``to_manifest()``, ``from_manifest()``,
``output_shape()``, ``validate()``) and registers it with :func:`register_layer_kind`.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from . import codes as weight_codes
from .config import ConfigError, NPUConfig
from .fixed import N_MAX, sat, signed_width

__all__ = [
    "MAGIC",
    "FORMAT_VERSION",
    "ModelFormatError",
    "InputSpec",
    "DenseLayer",
    "Conv2dLayer",
    "ReluLayer",
    "MaxPool2dLayer",
    "FlattenLayer",
    "ArgmaxLayer",
    "LSTMLayer",
    "GRULayer",
    "LAYER_KINDS",
    "register_layer_kind",
    "NPUModel",
    "accumulator_bound",
    "accumulator_range",
    "save_model",
    "load_model",
]

MAGIC = b"SHIFTNPU"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sHHII")  # magic, version, reserved, manifest length, manifest CRC-32
_ALIGN = 8
#: dtypes an array in the file may have (always stored little-endian).
_DTYPES = {"uint8": np.uint8, "int8": np.int8, "uint16": np.uint16, "int16": np.int16, "int32": np.int32}


class ModelFormatError(ValueError):
    """A model file (or an in-memory model) is malformed, corrupt or inconsistent."""


def _fail(msg: str) -> None:
    raise ModelFormatError(msg)


def _field(d: dict, key: str, typ, where: str):
    """``d[key]`` checked for presence and type (bool is not accepted as int)."""
    if not isinstance(d, dict):
        _fail(f"{where}: expected a JSON object, got {type(d).__name__}")
    if key not in d:
        _fail(f"{where}: missing field {key!r}")
    v = d[key]
    types = typ if isinstance(typ, tuple) else (typ,)
    if isinstance(v, bool) and bool not in types:
        _fail(f"{where}: field {key!r} must be {'/'.join(t.__name__ for t in types)}, got {v!r}")
    if not isinstance(v, types):
        _fail(f"{where}: field {key!r} must be {'/'.join(t.__name__ for t in types)}, got {v!r}")
    return v


def _int_list(d: dict, key: str, where: str, length: int | None = None) -> tuple[int, ...]:
    v = _field(d, key, list, where)
    if any(not isinstance(x, int) or isinstance(x, bool) for x in v):
        _fail(f"{where}: field {key!r} must be a list of ints, got {v!r}")
    if length is not None and len(v) != length:
        _fail(f"{where}: field {key!r} must have {length} entries, got {len(v)}")
    return tuple(v)


def _check_array(where: str, name: str, a: np.ndarray, dtype, shape: tuple[int, ...]) -> None:
    if not isinstance(a, np.ndarray):
        _fail(f"{where}: {name} must be a numpy array")
    if a.dtype != np.dtype(dtype):
        _fail(f"{where}: {name} has dtype {a.dtype}, expected {np.dtype(dtype)}")
    if tuple(a.shape) != tuple(shape):
        _fail(f"{where}: {name} has shape {tuple(a.shape)}, expected {tuple(shape)}")


# -- input ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputSpec:
    """How raw input values become the int8 tensor the first layer reads.

    ``q = sat(raw * multiplier, 8)``: an exact integer map (digits pixels 0..16 times 7 give 0..112,
    so a pixel of 16 stands for the real value ``112 * scale = 1.0``). ``shape`` excludes the batch
    axis; images are NHWC (``(8, 8, 1)``), vectors ``(64,)``.
    """

    shape: tuple[int, ...]
    multiplier: int = 7
    raw_max: int = 16
    scale: float = 1.0 / 112

    def validate(self) -> None:
        if not self.shape or any(not isinstance(s, int) or s < 1 for s in self.shape):
            _fail(f"input: shape must be positive ints, got {self.shape!r}")
        if not 1 <= self.multiplier <= 127:
            _fail(f"input: multiplier must be in [1, 127], got {self.multiplier}")
        if self.raw_max < 0:
            _fail(f"input: raw_max must be >= 0, got {self.raw_max}")
        if not (np.isfinite(self.scale) and self.scale > 0):
            _fail(f"input: scale must be positive, got {self.scale!r}")

    def quantize(self, raw) -> np.ndarray:
        """Map raw inputs (shape ``[B, prod(shape)]`` or ``[B, *shape]``; one sample may leave out ``B``)
        to int8 ``[B, *shape]``."""
        r = np.asarray(raw)
        if not np.issubdtype(r.dtype, np.integer):
            if not np.all(r == np.round(r)):
                raise ValueError("input: raw values must be integers (digits pixels are 0..16)")
        # sat(raw * multiplier, 8) is the same for every |raw| >= 128 (multiplier >= 1): clamping
        # first keeps huge values (1e30, 2**62, a uint64 above 2**63) from wrapping in int64
        r = np.minimum(r, 256) if r.dtype.kind == "u" else np.clip(r, -256, 256)
        r = r.astype(np.int64)
        size = int(np.prod(self.shape))
        # Only [B, size] or [B, *shape], or one sample as [size] or [*shape]: any other shape whose
        # size happens to divide (digits [360, 64] for a [4, 12] input) would be cut into the wrong
        # samples silently.
        one = r.shape in (tuple(self.shape), (size,))
        if not one and (r.ndim < 2 or r.shape[1:] not in (tuple(self.shape), (size,))):
            shapes = list(dict.fromkeys([f"[B, {size}]", f"[B, {', '.join(map(str, self.shape))}]"]))
            raise ValueError(
                f"input: cannot reshape raw input of shape {list(r.shape)}: expected {' or '.join(shapes)} "
                "(or one sample without the B)"
            )
        q = sat(r.astype(np.int64) * self.multiplier, 8)
        return q.reshape((-1, *self.shape)).astype(np.int8)

    def to_manifest(self) -> dict:
        return {"shape": list(self.shape), "multiplier": self.multiplier, "raw_max": self.raw_max, "scale": self.scale}

    @classmethod
    def from_manifest(cls, d: dict) -> InputSpec:
        w = "input"
        return cls(
            shape=_int_list(d, "shape", w),
            multiplier=_field(d, "multiplier", int, w),
            raw_max=_field(d, "raw_max", int, w),
            scale=float(_field(d, "scale", (int, float), w)),
        )


# -- layers --------------------------------------------------------------------------------------


def accumulator_bound(codes: np.ndarray, bits: int) -> int:
    """Worst-case ``|acc|`` of a GEMM with these codes (``[K, N]``) over any int8 input: ``128 * max_c sum_k |w|``."""
    w = np.abs(weight_codes.decode(codes.reshape(-1, codes.shape[-1]), bits))
    return int(128 * w.sum(axis=0).max()) if w.size else 0


def accumulator_range(codes: np.ndarray, bits: int) -> tuple[int, int]:
    """Exact lowest and highest ``acc`` of a GEMM with these codes (``[..., N]``) over int8 inputs.

    An input is in [-128, 127], so a column's largest sum takes 127 on its positive weights and
    -128 on its negative ones: ``127 * P + 128 * Q`` with ``P``, ``Q`` the sums of its positive and
    negative ``|w|``; its smallest is ``-(128 * P + 127 * Q)``. This is the worst case SPEC §3 asks
    the compiler to check (``128 * sum |w|`` would also refuse some layers that cannot overflow).
    """
    w = weight_codes.decode(codes.reshape(-1, codes.shape[-1]), bits)
    if not w.size:
        return 0, 0
    pos, neg = np.where(w > 0, w, 0).sum(axis=0), np.where(w < 0, -w, 0).sum(axis=0)
    return int((-(128 * pos + 127 * neg)).min()), int((127 * pos + 128 * neg).max())


@dataclass(eq=False)
class _GemmLayer:
    """Shared part of dense and conv2d: codes, per-channel (M, n), int32 bias, fused ReLU."""

    name: str
    codes: np.ndarray
    M: np.ndarray
    n: np.ndarray
    bias: np.ndarray
    relu: bool
    out_scale: float = 0.0

    @property
    def out_channels(self) -> int:
        return int(self.codes.shape[-1])

    @property
    def reduction(self) -> int:
        """Reduction length K of the layer's GEMM."""
        return int(np.prod(self.codes.shape[:-1]))

    def gemm_codes(self) -> np.ndarray:
        """The codes as the ``[K, N]`` matrix of the GEMM (im2col order for conv)."""
        return self.codes.reshape(self.reduction, self.out_channels)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"codes": self.codes, "M": self.M, "n": self.n, "bias": self.bias}

    def _common_manifest(self) -> dict:
        return {"name": self.name, "kind": self.kind, "relu": self.relu, "out_scale": self.out_scale}

    def validate(self, config: NPUConfig) -> None:
        w = f"layer {self.name!r} ({self.kind})"
        N = self.out_channels
        _check_array(w, "codes", self.codes, np.uint8, self.codes.shape)
        _check_array(w, "M", self.M, np.uint16, (N,))
        _check_array(w, "n", self.n, np.uint8, (N,))
        _check_array(w, "bias", self.bias, np.int32, (N,))
        bits = config.weight_bits
        if self.codes.size and int(self.codes.max()) >= 1 << bits:
            _fail(f"{w}: weight code {int(self.codes.max())} does not fit the config's {bits}-bit weights")
        # M is any unsigned 16-bit value (SPEC §3), 0 included (the channel's output is then 0): the
        # uint16 dtype above is the whole check
        if np.any(self.n > N_MAX):
            _fail(f"{w}: requantization shift n must be in [0, {N_MAX}], got {int(self.n.max())}")
        if not isinstance(self.relu, bool):
            _fail(f"{w}: relu must be true or false")
        # The array has no overflow detection: refuse any layer whose worst case cannot fit.
        lo, hi = accumulator_range(self.gemm_codes(), bits)
        need = signed_width(lo, hi)
        if need > config.acc_width:
            _fail(
                f"{w}: worst-case accumulator range [{lo}, {hi}] needs {need} bits, but the config's "
                f"accumulator is {config.acc_width} bits (max_k={config.max_k}); raise max_k or shrink the layer"
            )
        bound = accumulator_bound(self.gemm_codes(), bits)
        worst = bound + int(np.abs(self.bias.astype(np.int64)).max(initial=0))
        if signed_width(-worst, worst) > 33:
            _fail(f"{w}: acc + bias can reach {worst}, beyond the 33-bit requantizer input")


@dataclass(eq=False)
class DenseLayer(_GemmLayer):
    """``y = requant(x @ W + bias)``; ``codes`` is ``[K, N]`` (input features x output features)."""

    kind: ClassVar[str] = "dense"

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if self.codes.ndim != 2:
            _fail(f"layer {self.name!r} (dense): codes must be 2-D [K, N], got shape {self.codes.shape}")
        if len(in_shape) != 1 or in_shape[0] != self.codes.shape[0]:
            _fail(f"layer {self.name!r} (dense): input shape {in_shape} does not match weights {self.codes.shape}")
        return (self.out_channels,)

    def to_manifest(self) -> dict:
        return self._common_manifest() | {"in_features": self.reduction, "out_features": self.out_channels}

    @classmethod
    def from_manifest(cls, d: dict, arrays: dict[str, np.ndarray]) -> DenseLayer:
        w = f"layer {d.get('name')!r} (dense)"
        layer = cls(
            name=_field(d, "name", str, w),
            relu=_field(d, "relu", bool, w),
            out_scale=float(_field(d, "out_scale", (int, float), w)),
            **arrays,
        )
        K, N = _field(d, "in_features", int, w), _field(d, "out_features", int, w)
        if layer.codes.shape != (K, N):
            _fail(f"{w}: codes have shape {layer.codes.shape}, but the layer says {K} -> {N} features")
        return layer


@dataclass(eq=False)
class Conv2dLayer(_GemmLayer):
    """2-D convolution, stride 1, zero padding, NHWC; ``codes`` is ``[kh, kw, C_in, C_out]`` (HWIO).

    Flattened to ``[kh * kw * C_in, C_out]`` it is the GEMM matrix for :func:`quant.golden.im2col`.
    """

    kind: ClassVar[str] = "conv2d"
    padding: int = 0

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        w = f"layer {self.name!r} (conv2d)"
        if self.codes.ndim != 4:
            _fail(f"{w}: codes must be 4-D [kh, kw, C_in, C_out], got shape {self.codes.shape}")
        kh, kw, cin, cout = self.codes.shape
        if len(in_shape) != 3 or in_shape[2] != cin:
            _fail(f"{w}: input shape {in_shape} (H, W, C) does not match {cin} input channels")
        ho, wo = in_shape[0] + 2 * self.padding - kh + 1, in_shape[1] + 2 * self.padding - kw + 1
        if ho < 1 or wo < 1:
            _fail(f"{w}: a {kh}x{kw} kernel does not fit the {in_shape[0]}x{in_shape[1]} input")
        return (ho, wo, cout)

    def validate(self, config: NPUConfig) -> None:
        super().validate(config)
        if not 0 <= self.padding <= 8:
            _fail(f"layer {self.name!r} (conv2d): padding must be in [0, 8], got {self.padding}")

    def to_manifest(self) -> dict:
        kh, kw, cin, cout = self.codes.shape
        return self._common_manifest() | {
            "kernel": [kh, kw],
            "in_channels": cin,
            "out_channels": cout,
            "stride": 1,
            "padding": self.padding,
            "layout": "NHWC",
        }

    @classmethod
    def from_manifest(cls, d: dict, arrays: dict[str, np.ndarray]) -> Conv2dLayer:
        w = f"layer {d.get('name')!r} (conv2d)"
        if _field(d, "stride", int, w) != 1:
            _fail(f"{w}: only stride 1 is supported, got {d['stride']}")
        if _field(d, "layout", str, w) != "NHWC":
            _fail(f"{w}: only the NHWC layout is supported, got {d['layout']!r}")
        layer = cls(
            name=_field(d, "name", str, w),
            relu=_field(d, "relu", bool, w),
            out_scale=float(_field(d, "out_scale", (int, float), w)),
            padding=_field(d, "padding", int, w),
            **arrays,
        )
        kh, kw = _int_list(d, "kernel", w, 2)
        shape = (kh, kw, _field(d, "in_channels", int, w), _field(d, "out_channels", int, w))
        if layer.codes.shape != shape:
            _fail(f"{w}: codes have shape {layer.codes.shape}, but the layer says {shape}")
        return layer


@dataclass(eq=False)
class _ShapeLayer:
    """A layer without arrays (ReLU, pooling, flatten, argmax)."""

    name: str

    def arrays(self) -> dict[str, np.ndarray]:
        return {}

    def validate(self, config: NPUConfig) -> None:
        pass

    def to_manifest(self) -> dict:
        return {"name": self.name, "kind": self.kind}

    @classmethod
    def from_manifest(cls, d: dict, arrays: dict[str, np.ndarray]):
        if arrays:
            _fail(f"layer {d.get('name')!r} ({cls.kind}): takes no arrays, got {sorted(arrays)}")
        return cls(name=_field(d, "name", str, f"layer ({cls.kind})"))


@dataclass(eq=False)
class ReluLayer(_ShapeLayer):
    """A standalone ReLU on int8 (usually fused into the previous requantizer instead)."""

    kind: ClassVar[str] = "relu"

    def output_shape(self, in_shape):
        return in_shape


@dataclass(eq=False)
class MaxPool2dLayer(_ShapeLayer):
    """Max pooling over ``size x size`` windows with stride ``size`` (NHWC, no padding)."""

    kind: ClassVar[str] = "maxpool2d"
    size: int = 2

    def output_shape(self, in_shape):
        w = f"layer {self.name!r} (maxpool2d)"
        if not 1 <= self.size <= 8:
            _fail(f"{w}: size must be in [1, 8], got {self.size}")
        if len(in_shape) != 3 or in_shape[0] % self.size or in_shape[1] % self.size:
            _fail(f"{w}: input shape {in_shape} is not an (H, W, C) tensor divisible by {self.size}")
        return (in_shape[0] // self.size, in_shape[1] // self.size, in_shape[2])

    def to_manifest(self) -> dict:
        return super().to_manifest() | {"size": self.size, "stride": self.size}

    @classmethod
    def from_manifest(cls, d, arrays):
        w = f"layer {d.get('name')!r} (maxpool2d)"
        if arrays:
            _fail(f"{w}: takes no arrays, got {sorted(arrays)}")
        size = _field(d, "size", int, w)
        if _field(d, "stride", int, w) != size:
            _fail(f"{w}: stride must equal size")
        return cls(name=_field(d, "name", str, w), size=size)


@dataclass(eq=False)
class FlattenLayer(_ShapeLayer):
    """Flatten an (H, W, C) tensor in NHWC order (channel fastest)."""

    kind: ClassVar[str] = "flatten"

    def output_shape(self, in_shape):
        return (int(np.prod(in_shape)),)


@dataclass(eq=False)
class ArgmaxLayer(_ShapeLayer):
    """The index of the largest int8 logit (the first one on ties); must be the last layer."""

    kind: ClassVar[str] = "argmax"

    def output_shape(self, in_shape):
        if len(in_shape) != 1:
            _fail(f"layer {self.name!r} (argmax): input must be a vector, got shape {in_shape}")
        return ()


@dataclass(eq=False)
class _RecurrentLayer:
    """Shared file layout, validation and golden parameters of :class:`LSTMLayer` and :class:`GRULayer`."""

    kind: ClassVar[str] = ""
    TABLES: ClassVar[tuple[str, ...]] = ()
    #: weight rows per hidden unit
    ROWS: ClassVar[int] = 0

    name: str
    W: np.ndarray
    U: np.ndarray
    bias: np.ndarray
    M: np.ndarray
    n: np.ndarray
    tables: dict = field(default_factory=dict)
    ln_gamma: np.ndarray | None = None
    ln_beta: np.ndarray | None = None

    @property
    def hidden(self) -> int:
        return int(self.U.shape[1]) if self.U.ndim == 2 else 0

    @property
    def layer_norm(self) -> bool:
        return self.ln_gamma is not None

    @classmethod
    def from_params(cls, name: str, p) -> _RecurrentLayer:
        """From a :class:`quant.rnn.RNNParams` of this layer's kind (with or without layer norm)."""
        if p.kind != cls.kind:
            raise ValueError(f"{cls.__name__}.from_params needs RNNParams of kind {cls.kind!r}, got {p.kind!r}")
        ln = {}
        if p.ln_gamma is not None:
            ln = {"ln_gamma": p.ln_gamma.astype(np.int16), "ln_beta": p.ln_beta.astype(np.int16)}
        return cls(
            name=name,
            W=p.W.astype(np.uint8),
            U=p.U.astype(np.uint8),
            bias=p.b.astype(np.int32),
            M=p.M.astype(np.uint16),
            n=p.n.astype(np.uint8),
            tables={k: p.tables[k] for k in cls.TABLES},
            **ln,
        )

    def params(self, config: NPUConfig):
        """The layer as :class:`quant.rnn.RNNParams` for the golden model."""
        from .rnn import RNNParams

        return RNNParams(
            self.kind,
            self.W,
            self.U,
            self.bias,
            self.M,
            self.n,
            config.weight_bits,
            dict(self.tables),
            ln_gamma=None if self.ln_gamma is None else self.ln_gamma.astype(np.int64),
            ln_beta=None if self.ln_beta is None else self.ln_beta.astype(np.int64),
        )

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"W": self.W, "U": self.U, "bias": self.bias, "M": self.M, "n": self.n}
        for k in self.TABLES:
            t = self.tables[k]
            out |= {
                f"{k}_knots": t.knots.astype(np.int16),
                f"{k}_y": t.y.astype(np.int16),
                f"{k}_m": t.m.astype(np.int16),
            }
        if self.layer_norm:
            out |= {"ln_gamma": self.ln_gamma, "ln_beta": self.ln_beta}
        return out

    def to_manifest(self) -> dict:
        d = {
            "name": self.name,
            "kind": self.kind,
            "inputs": int(self.W.shape[1]),
            "hidden": self.hidden,
            "return": "last",
            "pwl": {
                k: {"shift": int(t.shift), "func": t.func, "in_frac_bits": int(t.in_frac_bits)}
                for k, t in self.tables.items()
            },
        }
        if self.layer_norm:
            d["layer_norm"] = True
        return d

    @classmethod
    def from_manifest(cls, d: dict, arrays: dict[str, np.ndarray]) -> _RecurrentLayer:
        from .pwl import PWLTable

        w = f"layer {d.get('name')!r} ({cls.kind})"
        if _field(d, "return", str, w) != "last":
            _fail(f"{w}: only 'return': 'last' is supported, got {d['return']!r}")
        pwl = _field(d, "pwl", dict, w)
        tables = {}
        for k in cls.TABLES:
            spec = _field(pwl, k, dict, f"{w} pwl")
            try:
                tables[k] = PWLTable(
                    knots=arrays.pop(f"{k}_knots"),
                    y=arrays.pop(f"{k}_y"),
                    m=arrays.pop(f"{k}_m"),
                    shift=_field(spec, "shift", int, f"{w} pwl {k}"),
                    func=_field(spec, "func", str, f"{w} pwl {k}"),
                    in_frac_bits=_field(spec, "in_frac_bits", int, f"{w} pwl {k}"),
                )
            except KeyError as e:
                _fail(f"{w}: missing array {e.args[0]!r}")
            except ValueError as e:
                _fail(f"{w}: bad PWL table {k!r}: {e}")
        ln = d.get("layer_norm", False)
        if not isinstance(ln, bool):
            _fail(f"{w}: field 'layer_norm' must be true or false, got {ln!r}")
        if ln != ("ln_gamma" in arrays or "ln_beta" in arrays):
            _fail(
                f"{w}: 'layer_norm' is {str(ln).lower()} but the arrays ln_gamma/ln_beta are {'missing' if ln else 'present'}"
            )
        layer = cls(name=_field(d, "name", str, w), tables=tables, **arrays)
        n_in, H = _field(d, "inputs", int, w), _field(d, "hidden", int, w)
        R = cls.ROWS
        if layer.W.shape != (R * H, n_in) or layer.U.shape != (R * H, H):
            _fail(f"{w}: W {layer.W.shape} / U {layer.U.shape} do not match inputs={n_in}, hidden={H}")
        return layer

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        n_in = int(self.W.shape[1])
        if len(in_shape) != 2 or in_shape[1] != n_in:
            _fail(f"layer {self.name!r} ({self.kind}): input must be a sequence (T, {n_in}), got shape {in_shape}")
        return (self.hidden,)

    def validate(self, config: NPUConfig) -> None:
        w = f"layer {self.name!r} ({self.kind})"
        if self.W.ndim != 2 or self.U.ndim != 2:
            _fail(f"{w}: W and U must be 2-D")
        H, n_in, R = self.hidden, int(self.W.shape[1]), self.ROWS
        _check_array(w, "W", self.W, np.uint8, (R * H, n_in))
        _check_array(w, "U", self.U, np.uint8, (R * H, H))
        _check_array(w, "bias", self.bias, np.int32, (4, H))
        _check_array(w, "M", self.M, np.uint16, (4, H))
        _check_array(w, "n", self.n, np.uint8, (4, H))
        if (self.ln_gamma is None) != (self.ln_beta is None):
            _fail(f"{w}: layer norm needs both ln_gamma and ln_beta")
        if self.layer_norm:
            _check_array(w, "ln_gamma", self.ln_gamma, np.int16, (4, H))
            _check_array(w, "ln_beta", self.ln_beta, np.int16, (4, H))
        bits = config.weight_bits
        for name, a in (("W", self.W), ("U", self.U)):
            if a.size and int(a.max()) >= 1 << bits:
                _fail(f"{w}: {name} code {int(a.max())} does not fit the config's {bits}-bit weights")
        if np.any(self.n > N_MAX):
            _fail(f"{w}: requantization shift n must be in [0, {N_MAX}], got {int(self.n.max())}")
        missing = [k for k in self.TABLES if k not in self.tables]
        if missing:
            _fail(f"{w}: missing PWL table(s) {missing}")
        if "tanh_cell" in self.TABLES and self.tables["tanh_cell"].in_frac_bits != config.cell_frac_bits:
            _fail(
                f"{w}: the tanh_cell table reads Q.{self.tables['tanh_cell'].in_frac_bits}, "
                f"but the config's cell has {config.cell_frac_bits} fraction bits"
            )
        # |acc| <= 128 * (sum |W row| + sum |U row|) + |bias| must fit the 33-bit requantizer input
        wa = np.abs(weight_codes.decode(self.W, bits)).sum(axis=1) + np.abs(weight_codes.decode(self.U, bits)).sum(
            axis=1
        )
        worst = 128 * int(wa.max(initial=0)) + int(np.abs(self.bias.astype(np.int64)).max(initial=0))
        if signed_width(-worst, worst) > 33:
            _fail(f"{w}: acc + bias can reach {worst}, beyond the 33-bit requantizer input")


@dataclass(eq=False)
class LSTMLayer(_RecurrentLayer):
    """An integer-only LSTM (SPEC §4) over an input sequence ``(T, I)``; outputs the last h ``(H,)`` (Q0.7).

    Arrays: ``W`` ``(4H, I)`` and ``U`` ``(4H, H)`` weight codes (uint8; rows ``g*H + j`` for gates
    i, f, g, o), ``bias`` ``(4, H)`` int32 in accumulator units, ``M`` ``(4, H)`` uint16 and ``n``
    ``(4, H)`` uint8 (accumulator -> Q3.12), and for each PWL table ``t`` in ``sigmoid``, ``tanh``
    (Q3.12 in) and ``tanh_cell`` (cell format in) the int16 arrays ``t_knots``, ``t_y``, ``t_m``; the
    tables' slope shifts are in the manifest. :func:`quant.rnn.rnn_layer` is its exact semantics.

    Optional integer layer norm (:func:`quant.rnn.layer_norm`): int16 Q3.12 arrays ``ln_gamma`` and
    ``ln_beta`` ``(4, H)`` and ``"layer_norm": true`` in the manifest. A layer without it is written
    exactly as before the field existed.
    """

    kind: ClassVar[str] = "lstm"
    TABLES: ClassVar[tuple[str, ...]] = ("sigmoid", "tanh", "tanh_cell")
    #: weight rows per hidden unit (gates i, f, g, o)
    ROWS: ClassVar[int] = 4


@dataclass(eq=False)
class GRULayer(_RecurrentLayer):
    """An integer-only GRU (SPEC §4) over ``(T, I)``; outputs the last h ``(H,)`` (Q0.7).

    Same file layout as :class:`LSTMLayer` with ``W`` ``(3H, I)`` and ``U`` ``(3H, H)`` (rows z, r, n),
    four bias/requant slots per unit (z, r, nx, nh: ``W_n x`` and ``U_n h`` are requantized apart)
    and two tables, ``sigmoid`` and ``tanh`` (both Q3.12 in).
    """

    kind: ClassVar[str] = "gru"
    TABLES: ClassVar[tuple[str, ...]] = ("sigmoid", "tanh")
    ROWS: ClassVar[int] = 3


#: kind -> layer class
LAYER_KINDS: dict[str, type] = {}


def register_layer_kind(cls: type) -> type:
    """Add a layer class (with a ``kind`` class attribute) to the model format."""
    LAYER_KINDS[cls.kind] = cls
    return cls


for _cls in (DenseLayer, Conv2dLayer, ReluLayer, MaxPool2dLayer, FlattenLayer, ArgmaxLayer, LSTMLayer, GRULayer):
    register_layer_kind(_cls)


# -- model ---------------------------------------------------------------------------------------


@dataclass(eq=False)
class NPUModel:
    """An integer network for one :class:`~quant.config.NPUConfig`.

    Parameters
    ----------
    config:
        The generator config the model was built for; the driver refuses a device that differs.
    input:
        Input shape and the raw -> int8 map.
    layers:
        The layers in order.
    metadata:
        Free-form JSON (task, training recipe, accuracy measured at the end of training, ...).
    """

    config: NPUConfig
    input: InputSpec
    layers: list
    metadata: dict = field(default_factory=dict)

    def shapes(self) -> list[tuple[int, ...]]:
        """The output shape (without batch axis) of every layer; validates the chain."""
        shape = tuple(self.input.shape)
        out = []
        for i, layer in enumerate(self.layers):
            if isinstance(layer, ArgmaxLayer) and i != len(self.layers) - 1:
                _fail(f"layer {layer.name!r}: argmax must be the last layer")
            shape = tuple(layer.output_shape(shape))
            out.append(shape)
        return out

    def gemm_layers(self) -> list:
        return [la for la in self.layers if isinstance(la, _GemmLayer)]

    def validate(self) -> None:
        """Raise :class:`ModelFormatError` naming the first inconsistency."""
        if not isinstance(self.config, NPUConfig):
            _fail("model: config must be an NPUConfig")
        self.input.validate()
        if not self.layers:
            _fail("model: no layers")
        names = [la.name for la in self.layers]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            _fail(f"model: duplicate layer name(s) {dup}")
        for layer in self.layers:
            if type(layer).kind not in LAYER_KINDS:
                _fail(f"layer {layer.name!r}: unknown kind {layer.kind!r}")
            if not isinstance(layer.name, str) or not layer.name or "/" in layer.name:
                _fail(f"layer name {layer.name!r} must be a non-empty string without '/'")
            layer.validate(self.config)
        self.shapes()
        try:
            json.dumps(self.metadata)
        except TypeError as e:
            _fail(f"model: metadata is not JSON-serializable: {e}")

    # -- bytes -----------------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        self.validate()
        blobs, table, offset = [], {}, 0
        layers = []
        for layer in self.layers:
            entry = layer.to_manifest()
            refs = {}
            for key, a in layer.arrays().items():
                name = f"{layer.name}/{key}"
                raw = np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
                pad = -len(raw) % _ALIGN
                table[name] = {
                    "dtype": a.dtype.name,
                    "shape": list(a.shape),
                    "offset": offset,
                    "nbytes": len(raw),
                    "sha256": hashlib.sha256(raw).hexdigest(),
                }
                refs[key] = name
                blobs.append(raw + bytes(pad))
                offset += len(raw) + pad
            if refs:
                entry["arrays"] = refs
            layers.append(entry)
        manifest = {
            "format": "shiftnpu-model",
            "version": FORMAT_VERSION,
            "config": self.config.to_dict(),
            "input": self.input.to_manifest(),
            "layers": layers,
            "arrays": table,
            "data_bytes": offset,
            "metadata": self.metadata,
        }
        mbytes = json.dumps(manifest, indent=1, sort_keys=True).encode()
        head = _HEADER.pack(MAGIC, FORMAT_VERSION, 0, len(mbytes), zlib.crc32(mbytes))
        pad = -(len(head) + len(mbytes)) % _ALIGN
        return head + mbytes + bytes(pad) + b"".join(blobs)

    @classmethod
    def from_bytes(cls, buf: bytes) -> NPUModel:
        size = len(buf)
        if size and not buf.startswith(MAGIC[: min(size, len(MAGIC))]):
            start = bytes(buf[:8])
            if start.lstrip()[:1] in (b"{", b"["):
                looks = " (it looks like JSON, e.g. a config or a build report, not a model)"
            elif start.startswith(b"PK"):
                looks = " (it looks like a zip or .npz archive, e.g. a charlm model's integer arrays)"
            elif start.startswith(b"\x93NUMPY"):
                looks = " (it looks like a .npy array)"
            elif all(32 <= c < 127 or c in b"\t\r\n" for c in start):
                looks = " (it looks like text)"
            else:
                looks = ""
            _fail(f"not a shiftnpu model file: it starts with {start!r}, expected {MAGIC!r}{looks}")
        if size == 0:
            _fail("truncated model file: it is empty (0 bytes)")
        if size < _HEADER.size:
            _fail(f"truncated model file: {size} bytes, the header alone is {_HEADER.size}")
        magic, version, _reserved, mlen, mcrc = _HEADER.unpack_from(buf)
        if magic != MAGIC:
            _fail(f"not a shiftnpu model file: magic is {magic!r}, expected {MAGIC!r}")
        if version != FORMAT_VERSION:
            _fail(f"unsupported model format version {version} (this reader supports version {FORMAT_VERSION})")
        data_start = _HEADER.size + mlen + (-(_HEADER.size + mlen) % _ALIGN)
        if size < _HEADER.size + mlen:
            _fail(f"truncated model file: {size} bytes, the manifest ends at byte {_HEADER.size + mlen}")
        mbytes = buf[_HEADER.size : _HEADER.size + mlen]
        if zlib.crc32(mbytes) != mcrc:
            _fail("corrupt model file: manifest CRC-32 mismatch")
        try:
            m = json.loads(mbytes.decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            _fail(f"corrupt model file: manifest is not valid JSON ({e})")
        if _field(m, "format", str, "manifest") != "shiftnpu-model":
            _fail(f"manifest: format is {m['format']!r}, expected 'shiftnpu-model'")
        if _field(m, "version", int, "manifest") != version:
            _fail(f"manifest: version {m['version']} disagrees with the header's {version}")
        data_bytes = _field(m, "data_bytes", int, "manifest")
        if size < data_start + data_bytes:
            _fail(f"truncated model file: {size} bytes, the arrays end at byte {data_start + data_bytes}")
        if size > data_start + data_bytes:
            _fail(f"corrupt model file: {size - data_start - data_bytes} unexpected bytes after the arrays")
        try:
            config = NPUConfig.from_dict(_field(m, "config", dict, "manifest"))
        except ConfigError as e:
            _fail(f"manifest: bad config: {e}")
        inp = InputSpec.from_manifest(_field(m, "input", dict, "manifest"))
        table = _field(m, "arrays", dict, "manifest")
        arrays = {name: _read_array(buf, data_start, data_bytes, name, spec) for name, spec in table.items()}
        used = set()
        layers = []
        for i, d in enumerate(_field(m, "layers", list, "manifest")):
            kind = _field(d, "kind", str, f"layer #{i}")
            if kind not in LAYER_KINDS:
                _fail(f"layer #{i}: unsupported layer kind {kind!r} (this reader knows {sorted(LAYER_KINDS)})")
            refs = d.get("arrays", {})
            if not isinstance(refs, dict):
                _fail(f"layer #{i}: 'arrays' must be an object")
            mine = {}
            for key, name in refs.items():
                if not isinstance(name, str):
                    _fail(f"layer #{i} ({kind}): array reference {key!r} must be a string, got {name!r}")
                if name not in arrays:
                    _fail(f"layer #{i} ({kind}): array {name!r} is not in the file")
                mine[key] = arrays[name]
                used.add(name)
            try:
                layers.append(LAYER_KINDS[kind].from_manifest(d, mine))
            except TypeError as e:  # missing or unexpected array keys
                _fail(f"layer #{i} ({kind}): wrong set of arrays {sorted(refs)}: {e}")
        unused = sorted(set(arrays) - used)
        if unused:
            _fail(f"manifest: array(s) {unused} are not used by any layer")
        meta = m.get("metadata", {})
        if not isinstance(meta, dict):
            _fail("manifest: metadata must be an object")
        model = cls(config=config, input=inp, layers=layers, metadata=meta)
        model.validate()
        return model

    def save(self, path) -> None:
        """Validate and write the model to ``path``: through a temporary file in the same directory
        and a rename, so an interrupted or failed write never leaves a truncated model behind (an
        existing file stays as it was)."""
        from .cliargs import write_atomically

        data = self.to_bytes()
        if Path(path).is_dir():
            raise ModelFormatError(f"cannot write the model to {str(path)!r}: it is a directory")
        write_atomically(path, data)

    @classmethod
    def load(cls, path) -> NPUModel:
        p = Path(path)
        if p.is_dir():
            raise ModelFormatError(f"model file {str(path)!r} is a directory, not a .npu file")
        try:
            buf = p.read_bytes()
        except FileNotFoundError:
            raise ModelFormatError(f"model file {str(path)!r} does not exist") from None
        except OSError as e:
            raise ModelFormatError(f"cannot read model file {str(path)!r}: {e.strerror or e}") from None
        try:
            return cls.from_bytes(buf)
        except ModelFormatError as e:
            raise ModelFormatError(f"{path}: {e}") from None


def _read_array(buf: bytes, data_start: int, data_bytes: int, name: str, spec: dict) -> np.ndarray:
    w = f"array {name!r}"
    dtype = _field(spec, "dtype", str, w)
    if dtype not in _DTYPES:
        _fail(f"{w}: unsupported dtype {dtype!r}")
    shape = _int_list(spec, "shape", w)
    if any(s < 0 for s in shape):
        _fail(f"{w}: negative dimension in shape {shape}")
    offset, nbytes = _field(spec, "offset", int, w), _field(spec, "nbytes", int, w)
    dt = np.dtype(_DTYPES[dtype]).newbyteorder("<")
    if nbytes != math.prod(shape) * dt.itemsize:  # exact Python ints: a huge shape cannot overflow
        _fail(f"{w}: size {nbytes} bytes does not match shape {list(shape)} of {dtype}")
    if offset < 0 or offset % _ALIGN or offset + nbytes > data_bytes:
        _fail(f"{w}: bytes [{offset}, {offset + nbytes}) lie outside the data section of {data_bytes} bytes")
    raw = buf[data_start + offset : data_start + offset + nbytes]
    if hashlib.sha256(raw).hexdigest() != _field(spec, "sha256", str, w):
        _fail(f"corrupt model file: {w} fails its sha256 check")
    return np.frombuffer(raw, dtype=dt).astype(_DTYPES[dtype]).reshape(shape)


def save_model(model: NPUModel, path) -> None:
    """Validate ``model`` and write it to ``path``."""
    model.save(path)


def load_model(path) -> NPUModel:
    """Read and validate a model file; raises :class:`ModelFormatError` naming the problem."""
    return NPUModel.load(path)
