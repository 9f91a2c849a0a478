"""Weight-memory images: a model's codes, requantization multipliers and biases as memory words.

The image is what the RTL takes as weight-memory init at build time (``$readmemh`` text from
:meth:`WeightImage.to_memh`) or what the host uploads (:meth:`WeightImage.to_bytes`). Word width is
the config's ``mem_width``; the layout is in ``docs/model-format.md``:

- **Codes**, per GEMM layer (conv2d as its im2col matrix ``[K, N]``), tile by tile: output tiles of
  ``cols`` channels outermost, then reduction tiles of ``rows`` inputs, then the ``rows`` rows of the
  tile (row ``r`` = input ``k0 + r``). A row is the ``cols`` codes of channels ``n0 .. n0 + cols - 1``,
  packed little-endian by :func:`quant.codes.pack` into ``ceil(cols / codes_per_word)`` words.
  Padding (past ``K`` or ``N``) is code 0: the activations fed for rows past ``K`` are 0, and columns
  past ``N`` are discarded, so the padding value never reaches an output.
- **Requantization records** after all codes, layer by layer, one per output channel: a 55-bit
  little-endian record ``bias[0:32] | M[32:48] | n[48:54] | relu[54]`` (bias two's complement),
  split into ``ceil(55 / mem_width)`` words, low word first.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import codes as weight_codes
from .config import NPUConfig
from .model import NPUModel

__all__ = ["RECORD_BITS", "LayerImage", "WeightImage", "pack_model", "pack_record", "unpack_record"]

#: Bits of one requantization record: bias (32), M (16), n (6), relu (1).
RECORD_BITS = 55
_FIELDS = (("bias", 0, 32), ("M", 32, 16), ("n", 48, 6), ("relu", 54, 1))


def pack_record(bias: int, M: int, n: int, relu: bool) -> int:
    """One requantization record as a 55-bit integer."""
    if not -(1 << 31) <= bias < 1 << 31:
        raise ValueError(f"pack_record: bias {bias} does not fit int32")
    if not 0 <= M < 1 << 16 or not 0 <= n < 1 << 6:
        raise ValueError(f"pack_record: M={M} or n={n} out of range (16-bit, 6-bit)")
    return (bias & 0xFFFFFFFF) | (M << 32) | (n << 48) | (int(bool(relu)) << 54)


def unpack_record(rec: int) -> tuple[int, int, int, bool]:
    """Inverse of :func:`pack_record`: ``(bias, M, n, relu)``."""
    f = {name: (rec >> lo) & ((1 << width) - 1) for name, lo, width in _FIELDS}
    bias = f["bias"] - (1 << 32) if f["bias"] >> 31 else f["bias"]
    return bias, f["M"], f["n"], bool(f["relu"])


def _split(value: int, width: int, count: int) -> list[int]:
    mask = (1 << width) - 1
    return [(value >> (i * width)) & mask for i in range(count)]


def _join(words, width: int) -> int:
    return sum(int(w) << (i * width) for i, w in enumerate(words))


@dataclass(frozen=True)
class LayerImage:
    """Where one GEMM layer lives in the image (word addresses) and how it is tiled."""

    name: str
    K: int
    N: int
    k_tiles: int
    n_tiles: int
    words_per_row: int
    code_base: int
    code_words: int
    param_base: int
    param_words: int
    relu: bool

    def tile_base(self, k_tile: int, n_tile: int, rows: int) -> int:
        """Word address of tile ``(k_tile, n_tile)``."""
        if not (0 <= k_tile < self.k_tiles and 0 <= n_tile < self.n_tiles):
            raise ValueError(f"tile ({k_tile}, {n_tile}) outside {self.k_tiles} x {self.n_tiles}")
        return self.code_base + (n_tile * self.k_tiles + k_tile) * rows * self.words_per_row


@dataclass(frozen=True)
class WeightImage:
    """Words of ``config.mem_width`` bits (Python ints) and the layer table that locates them."""

    config: NPUConfig
    words: tuple[int, ...]
    layers: tuple[LayerImage, ...]

    @property
    def words_per_record(self) -> int:
        return -(-RECORD_BITS // self.config.mem_width)

    def layer_table(self) -> list[dict]:
        return [asdict(la) for la in self.layers]

    # -- serializations --------------------------------------------------------------------------

    def to_memh(self) -> str:
        """``$readmemh`` text: one word per line, ``ceil(mem_width / 4)`` hex digits."""
        digits = -(-self.config.mem_width // 4)
        return "".join(f"{w:0{digits}x}\n" for w in self.words)

    def write_memh(self, path) -> None:
        Path(path).write_text(self.to_memh())

    @staticmethod
    def words_from_memh(text: str, mem_width: int) -> list[int]:
        out = []
        for i, line in enumerate(text.splitlines()):
            line = line.split("//")[0].strip()
            if not line:
                continue
            try:
                w = int(line, 16)
            except ValueError:
                raise ValueError(f"memh line {i + 1}: {line!r} is not a hex word") from None
            if w >> mem_width:
                raise ValueError(f"memh line {i + 1}: {line} is wider than {mem_width} bits")
            out.append(w)
        return out

    def to_bytes(self) -> bytes:
        """Little-endian words of ``ceil(mem_width / 8)`` bytes each (for a host upload)."""
        nb = -(-self.config.mem_width // 8)
        return b"".join(w.to_bytes(nb, "little") for w in self.words)

    @staticmethod
    def words_from_bytes(data: bytes, mem_width: int) -> list[int]:
        nb = -(-mem_width // 8)
        if len(data) % nb:
            raise ValueError(f"image of {len(data)} bytes is not a whole number of {nb}-byte words")
        return [int.from_bytes(data[i : i + nb], "little") for i in range(0, len(data), nb)]

    # -- reading back ----------------------------------------------------------------------------

    def unpack_layer(self, name: str, words=None) -> dict:
        """Codes ``[K, N]``, ``M``, ``n``, ``bias`` and ``relu`` of layer ``name``, read from ``words``."""
        words = self.words if words is None else list(words)
        cfg = self.config
        try:
            la = next(la for la in self.layers if la.name == name)
        except StopIteration:
            raise ValueError(f"no layer {name!r} in the image") from None
        rows, cols = cfg.rows, cfg.cols
        W = np.zeros((la.k_tiles * rows, la.n_tiles * cols), dtype=np.int64)
        for nt in range(la.n_tiles):
            for kt in range(la.k_tiles):
                base = la.tile_base(kt, nt, rows)
                for r in range(rows):
                    row = words[base + r * la.words_per_row : base + (r + 1) * la.words_per_row]
                    W[kt * rows + r, nt * cols : (nt + 1) * cols] = weight_codes.unpack(
                        row, cfg.weight_bits, cfg.mem_width, cols
                    )
        wpr = self.words_per_record
        recs = [
            unpack_record(_join(words[la.param_base + c * wpr : la.param_base + (c + 1) * wpr], cfg.mem_width))
            for c in range(la.N)
        ]
        return {
            "codes": W[: la.K, : la.N],
            "bias": np.array([r[0] for r in recs], dtype=np.int64),
            "M": np.array([r[1] for r in recs], dtype=np.int64),
            "n": np.array([r[2] for r in recs], dtype=np.int64),
            "relu": {r[3] for r in recs} == {True},
        }


def pack_model(model: NPUModel) -> WeightImage:
    """The weight-memory image of every dense/conv2d layer of ``model`` for ``model.config``.

    Raises ``ValueError`` if the image does not fit ``config.weight_depth`` words.
    """
    model.validate()
    cfg = model.config
    rows, cols, bits, width = cfg.rows, cfg.cols, cfg.weight_bits, cfg.mem_width
    wpr = -(-cols // cfg.codes_per_word)
    wprec = -(-RECORD_BITS // width)
    words: list[int] = []
    placed = []
    for layer in model.gemm_layers():
        W = layer.gemm_codes().astype(np.int64)
        K, N = W.shape
        kt, nt = -(-K // rows), -(-N // cols)
        padded = np.zeros((kt * rows, nt * cols), dtype=np.int64)
        padded[:K, :N] = W
        base = len(words)
        for j in range(nt):
            for i in range(kt):
                for r in range(rows):
                    row = padded[i * rows + r, j * cols : (j + 1) * cols]
                    words.extend(int(w) for w in weight_codes.pack(row, bits, width))
        placed.append((layer, K, N, kt, nt, base, len(words) - base))
    layers = []
    for layer, K, N, kt, nt, base, count in placed:
        pbase = len(words)
        for c in range(N):
            rec = pack_record(int(layer.bias[c]), int(layer.M[c]), int(layer.n[c]), layer.relu)
            words.extend(_split(rec, width, wprec))
        layers.append(LayerImage(layer.name, K, N, kt, nt, wpr, base, count, pbase, len(words) - pbase, layer.relu))
    if len(words) > cfg.weight_depth:
        raise ValueError(
            f"weight image needs {len(words)} words of {width} bits, but the config's weight_depth is {cfg.weight_depth}"
        )
    return WeightImage(cfg, tuple(words), tuple(layers))
