import numpy as np
import pytest
from model_factory import random_cnn, random_mlp

from quant.codes import pack
from quant.config import NPUConfig
from quant.pack import RECORD_BITS, WeightImage, pack_model, pack_record, unpack_record

CONFIGS = [
    NPUConfig(),
    NPUConfig(weight_bits=2, mem_width=16),
    NPUConfig(weight_bits=4, rows=4, cols=4, mem_width=24),
    NPUConfig(weight_bits=8, mem_width=64),
    NPUConfig(weight_bits=3, rows=8, cols=16, mem_width=32),
    NPUConfig(weight_bits=4, rows=3, cols=5, mem_width=7, weight_depth=4096),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"b{c.weight_bits}r{c.rows}c{c.cols}w{c.mem_width}")
@pytest.mark.parametrize("make", [random_cnn, random_mlp])
def test_image_roundtrip(cfg, make):
    m = make(7, cfg)
    img = pack_model(m)
    assert all(0 <= w < 1 << cfg.mem_width for w in img.words)
    for words in (
        img.words,
        WeightImage.words_from_memh(img.to_memh(), cfg.mem_width),
        WeightImage.words_from_bytes(img.to_bytes(), cfg.mem_width),
    ):
        assert tuple(words) == img.words
        for la in m.gemm_layers():
            u = img.unpack_layer(la.name, words)
            assert np.array_equal(u["codes"], la.gemm_codes())
            assert np.array_equal(u["M"], la.M) and np.array_equal(u["n"], la.n)
            assert np.array_equal(u["bias"], la.bias) and u["relu"] == la.relu


def test_layout_of_tiles_and_records():
    cfg = NPUConfig()  # 8x8, 3-bit, 32-bit words: 10 codes per word, one word per tile row
    m = random_mlp(2, cfg, sizes=(20, 12, 10))
    img = pack_model(m)
    fc1 = img.layers[0]
    assert (fc1.K, fc1.N, fc1.k_tiles, fc1.n_tiles, fc1.words_per_row) == (20, 12, 3, 2, 1)
    assert fc1.code_words == 3 * 2 * 8
    W = m.layers[0].codes
    # tile (k_tile=1, n_tile=1), row 2: inputs 10, channels 8..11 then code-0 padding
    row = np.zeros(8, np.int64)
    row[:4] = W[10, 8:12]
    assert img.words[fc1.tile_base(1, 1, 8) + 2] == int(pack(row, 3, 32)[0])
    # rows past K (k_tile 2 holds inputs 16..19 and 4 padding rows) are all code 0
    assert img.words[fc1.tile_base(2, 0, 8) + 5] == 0
    # records follow every layer's codes, two 32-bit words each
    assert fc1.param_base == sum(la.code_words for la in img.layers)
    assert fc1.param_words == 12 * 2
    rec = img.words[fc1.param_base + 2 * 3] | img.words[fc1.param_base + 2 * 3 + 1] << 32
    la = m.layers[0]
    assert unpack_record(rec) == (int(la.bias[3]), int(la.M[3]), int(la.n[3]), True)


@pytest.mark.parametrize("rec", [(-(1 << 31), 65535, 63, True), ((1 << 31) - 1, 0, 0, False), (-1, 1, 17, True)])
def test_record_corners(rec):
    v = pack_record(*rec)
    assert 0 <= v < 1 << RECORD_BITS
    assert unpack_record(v) == rec


def test_record_range_errors():
    with pytest.raises(ValueError, match="int32"):
        pack_record(1 << 31, 1, 1, False)
    with pytest.raises(ValueError, match="out of range"):
        pack_record(0, 1, 64, False)


def test_image_too_deep_is_refused():
    with pytest.raises(ValueError, match="weight_depth is 100"):
        pack_model(random_mlp(0, NPUConfig(weight_depth=100)))


def test_memh_errors():
    with pytest.raises(ValueError, match="wider than 8 bits"):
        WeightImage.words_from_memh("1ff\n", 8)
    with pytest.raises(ValueError, match="not a hex word"):
        WeightImage.words_from_memh("xyz\n", 8)
    with pytest.raises(ValueError, match="whole number"):
        WeightImage.words_from_bytes(b"\0\0\0", 32)
