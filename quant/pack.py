"""The packer: a model file turned into the NPU's memory images.

:func:`pack_model` compiles a model (:func:`quant.npu_compile.compile_model`) for a batch size and
returns the words of every memory the model occupies on the device -- the weight codes, the
per-channel requantization words and the layer program -- at the widths of the NPU memory map
(:func:`quant.memmap.npu_memory_map`). These are the very words the host driver uploads, so an image
written here and loaded into a bitstream's memories at build time (``$readmemh``) runs exactly like
an upload. The feature memory holds inputs and intermediate results written at run time; it is
part of the image only for a model with an LSTM layer, whose PWL tables (copied into the gate unit
by the program) live in the feature memory from load time on.

On disk (:meth:`DeviceImage.write`, :func:`read_image`) an image is a directory with one
``<region>.memh`` file per memory (one hex word per line, ``$readmemh`` text) and ``image.json``
(the config, batch size, and per region its index, width, depth, word count and SHA-256), so a
truncated or edited file is caught when it is read back. Layouts: docs/model-format.md.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import codes as wcodes
from .config import NPUConfig
from .memmap import npu_memory_map
from .model import NPUModel
from .npu_compile import compile_model
from .program import Op, decode_program

__all__ = ["RegionImage", "DeviceImage", "GemmPlacement", "pack_model", "read_image", "IMAGE_FORMAT"]

#: Format tag of ``image.json``.
IMAGE_FORMAT = "shiftnpu-image-1"

_IMAGE_REGIONS = ("weight", "channel", "program")


@dataclass(frozen=True)
class RegionImage:
    """The initial words of one device memory (Python ints of ``width`` bits)."""

    name: str
    index: int
    width: int
    depth: int
    words: tuple[int, ...]

    def __post_init__(self):
        if len(self.words) > self.depth:
            raise ValueError(f"region {self.name!r}: {len(self.words)} words do not fit its depth of {self.depth}")
        for i, w in enumerate(self.words):
            if not 0 <= w < 1 << self.width:
                raise ValueError(f"region {self.name!r}: word {i} = {w:#x} is not a {self.width}-bit value")

    @property
    def digits(self) -> int:
        return -(-self.width // 4)

    def to_memh(self) -> str:
        """``$readmemh`` text: one word per line, ``ceil(width / 4)`` hex digits, from address 0."""
        return "".join(f"{w:0{self.digits}x}\n" for w in self.words)

    def to_bytes(self) -> bytes:
        """Little-endian words of ``ceil(width / 8)`` bytes each."""
        nb = -(-self.width // 8)
        return b"".join(w.to_bytes(nb, "little") for w in self.words)

    def sha256(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()

    @staticmethod
    def words_from_memh(text: str, width: int) -> list[int]:
        """Words of ``$readmemh`` text (``//`` comments and blank lines allowed; no ``@`` addresses)."""
        out = []
        for i, line in enumerate(text.splitlines()):
            line = line.split("//")[0].strip()
            if not line:
                continue
            try:
                w = int(line, 16)
            except ValueError:
                raise ValueError(f"memh line {i + 1}: {line!r} is not a hex word") from None
            if w >> width:
                raise ValueError(f"memh line {i + 1}: {line} is wider than {width} bits")
            out.append(w)
        return out


@dataclass(frozen=True)
class GemmPlacement:
    """Where one GEMM's weights and channel words sit (decoded from the program)."""

    wgt_base: int
    chan_base: int
    k_tiles: int
    n_tiles: int
    n: int
    relu: bool


@dataclass(frozen=True)
class DeviceImage:
    """A model's device memories for one config and batch size."""

    config: NPUConfig
    batch: int
    regions: tuple[RegionImage, ...]

    def region(self, name: str) -> RegionImage:
        for r in self.regions:
            if r.name == name:
                return r
        raise KeyError(f"no region {name!r} in the image (has {[r.name for r in self.regions]})")

    def gemms(self) -> list[GemmPlacement]:
        """The distinct GEMM weight blocks the program uses, in program order.

        A layer split into several GEMM instructions (batch groups) shares one weight block, so it
        appears once.
        """
        seen, out = set(), []
        for ins in decode_program(list(self.region("program").words)):
            if ins.op != Op.GEMM:
                continue
            a = ins.args
            if a["wgt_base"] in seen:
                continue
            seen.add(a["wgt_base"])
            out.append(GemmPlacement(a["wgt_base"], a["chan_base"], a["kt"], a["nt"], a["n"], ins.relu))
        return out

    def unpack_gemm(self, g: GemmPlacement) -> dict[str, np.ndarray]:
        """Codes ``[k_tiles * rows, n]`` (rows past the layer's K are padding) and ``bias``, ``M``, ``n``."""
        cfg = self.config
        R, C, b = cfg.rows, cfg.cols, cfg.weight_bits
        wmem, cmem = self.region("weight").words, self.region("channel").words
        W = np.zeros((g.k_tiles * R, g.n_tiles * C), dtype=np.int64)
        for nt in range(g.n_tiles):
            for kt in range(g.k_tiles):
                for r in range(R):
                    word = wmem[g.wgt_base + (nt * g.k_tiles + kt) * R + r]
                    W[kt * R + r, nt * C : (nt + 1) * C] = wcodes.unpack([word], b, C * b, C)
        ch = np.array(cmem[g.chan_base : g.chan_base + g.n], dtype=object)
        bias = np.array([(int(w) & 0xFFFFFFFF) - ((int(w) >> 31 & 1) << 32) for w in ch], dtype=np.int64)
        M = np.array([(int(w) >> 32) & 0xFFFF for w in ch], dtype=np.int64)
        n = np.array([(int(w) >> 48) & 0x3F for w in ch], dtype=np.int64)
        return {"codes": W[:, : g.n], "bias": bias, "M": M, "n": n}

    # -- files ----------------------------------------------------------------------------------

    def write(self, directory) -> Path:
        """Write ``<region>.memh`` files and ``image.json`` into ``directory`` (created if needed)."""
        from .cliargs import write_atomically

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        manifest = {
            "format": IMAGE_FORMAT,
            "config": self.config.to_dict(),
            "batch": self.batch,
            "regions": [],
        }
        for r in self.regions:
            write_atomically(d / f"{r.name}.memh", r.to_memh())
            manifest["regions"].append(
                {
                    "name": r.name,
                    "index": r.index,
                    "width": r.width,
                    "depth": r.depth,
                    "words": len(r.words),
                    "file": f"{r.name}.memh",
                    "sha256": r.sha256(),
                }
            )
        write_atomically(d / "image.json", json.dumps(manifest, indent=2) + "\n")
        return d


def pack_model(model: NPUModel, batch: int = 1, config: NPUConfig | None = None) -> DeviceImage:
    """Compile ``model`` for ``batch`` samples per run and return its device memory images.

    Raises :class:`quant.compile.CompileError` (a ``ValueError``) when the model does not fit the
    config's memories, and ``ValueError`` for a model that fails validation.
    """
    cfg = model.config if config is None else config
    compiled = compile_model(model, batch=batch, config=cfg, prog_depth=cfg.prog_depth)
    regions = {r.name: (i, r) for i, r in enumerate(npu_memory_map(cfg))}
    images = []
    if compiled.feature_init:  # load-time feature areas (an LSTM's PWL tables), zeros in between
        index, reg = regions["feature"]
        words = [0] * max(base + len(ws) for base, ws in compiled.feature_init)
        for base, ws in compiled.feature_init:
            words[base : base + len(ws)] = ws
        images.append(RegionImage("feature", index, reg.width, reg.depth, tuple(int(w) for w in words)))
    for name in _IMAGE_REGIONS:
        index, reg = regions[name]
        images.append(RegionImage(name, index, reg.width, reg.depth, tuple(int(w) for w in getattr(compiled, name))))
    return DeviceImage(cfg, batch, tuple(images))


def read_image(directory) -> DeviceImage:
    """Read an image written by :meth:`DeviceImage.write`, checking every file against ``image.json``."""
    d = Path(directory)
    try:
        manifest = json.loads((d / "image.json").read_text())
    except FileNotFoundError:
        raise ValueError(f"{d}: no image.json (not a shiftnpu image directory)") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{d / 'image.json'}: corrupt ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != IMAGE_FORMAT:
        raise ValueError(f"{d / 'image.json'}: not a {IMAGE_FORMAT} manifest")
    try:
        cfg = NPUConfig.from_dict(manifest["config"])
        batch = int(manifest["batch"])
        entries = list(manifest["regions"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{d / 'image.json'}: missing or bad field ({e})") from None
    expected = {r.name: (i, r) for i, r in enumerate(npu_memory_map(cfg))}
    regions = []
    for e in entries:
        name = e.get("name")
        if name not in expected:
            raise ValueError(f"{d / 'image.json'}: unknown region {name!r}")
        index, reg = expected[name]
        if (e.get("index"), e.get("width"), e.get("depth")) != (index, reg.width, reg.depth):
            raise ValueError(f"{d / 'image.json'}: region {name!r} does not match the config's memory map")
        path = d / e.get("file", f"{name}.memh")
        try:
            words = RegionImage.words_from_memh(path.read_text(), reg.width)
        except FileNotFoundError:
            raise ValueError(f"{path}: missing") from None
        if len(words) != e.get("words"):
            raise ValueError(f"{path}: {len(words)} words, image.json says {e.get('words')} (truncated?)")
        img = RegionImage(name, index, reg.width, reg.depth, tuple(words))
        if img.sha256() != e.get("sha256"):
            raise ValueError(f"{path}: contents do not match the checksum in image.json")
        regions.append(img)
    return DeviceImage(cfg, batch, tuple(regions))
