import json
import struct
import zlib

import numpy as np
import pytest
from model_factory import random_cnn, random_mlp

from quant import golden
from quant.config import NPUConfig
from quant.model import FORMAT_VERSION, DenseLayer, InputSpec, ModelFormatError, NPUModel

HEADER = struct.Struct("<8sHHII")


def split(buf: bytes):
    magic, version, res, mlen, crc = HEADER.unpack_from(buf)
    manifest = json.loads(buf[HEADER.size : HEADER.size + mlen])
    start = HEADER.size + mlen + (-(HEADER.size + mlen) % 8)
    return manifest, buf[start:]


def rebuild(manifest: dict, data: bytes, version: int = FORMAT_VERSION) -> bytes:
    """A file with an edited manifest and a valid CRC (so the error must come from validation)."""
    m = json.dumps(manifest).encode()
    head = HEADER.pack(b"SHIFTNPU", version, 0, len(m), zlib.crc32(m))
    return head + m + bytes(-(len(head) + len(m)) % 8) + data


def assert_same(a: NPUModel, b: NPUModel):
    assert a.config == b.config and a.input == b.input and a.metadata == b.metadata
    assert [la.kind for la in a.layers] == [la.kind for la in b.layers]
    for x, y in zip(a.layers, b.layers, strict=True):
        assert x.name == y.name and x.to_manifest() == y.to_manifest()
        for k, v in x.arrays().items():
            assert v.dtype == y.arrays()[k].dtype and np.array_equal(v, y.arrays()[k])


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_roundtrip(tmp_path, bits):
    m = random_cnn(bits, NPUConfig(weight_bits=bits))
    p = tmp_path / "m.npu"
    m.save(p)
    m2 = NPUModel.load(p)
    assert_same(m, m2)
    x = np.random.default_rng(1).integers(0, 17, (20, 64))
    assert np.array_equal(golden.predict(m, x), golden.predict(m2, x))
    assert m2.to_bytes() == p.read_bytes()  # deterministic bytes


def test_config_is_carried(tmp_path):
    cfg = NPUConfig(rows=4, cols=4, weight_bits=4, mem_width=16)
    m = random_mlp(0, cfg)
    m2 = NPUModel.from_bytes(m.to_bytes())
    assert m2.config == cfg and m2.config.fingerprint == cfg.fingerprint


@pytest.mark.parametrize("cut", [0, 10, 19, 25, 400, -1, -17])
def test_truncated(cut):
    buf = random_cnn().to_bytes()
    with pytest.raises(ModelFormatError, match="truncated"):
        NPUModel.from_bytes(buf[:cut])


def test_trailing_bytes():
    with pytest.raises(ModelFormatError, match="unexpected bytes after the arrays"):
        NPUModel.from_bytes(random_cnn().to_bytes() + b"\0")


def test_bad_magic():
    buf = bytearray(random_cnn().to_bytes())
    buf[:8] = b"NOTMODEL"
    with pytest.raises(ModelFormatError, match="not a shiftnpu model file"):
        NPUModel.from_bytes(bytes(buf))


def test_wrong_version():
    buf = bytearray(random_cnn().to_bytes())
    buf[8:10] = (FORMAT_VERSION + 1).to_bytes(2, "little")
    with pytest.raises(ModelFormatError, match=f"unsupported model format version {FORMAT_VERSION + 1}"):
        NPUModel.from_bytes(bytes(buf))


def test_manifest_version_disagrees():
    man, data = split(random_cnn().to_bytes())
    man["version"] = 7
    with pytest.raises(ModelFormatError, match="disagrees"):
        NPUModel.from_bytes(rebuild(man, data))


def test_corrupt_manifest_byte():
    buf = bytearray(random_cnn().to_bytes())
    buf[HEADER.size + 30] ^= 0x01
    with pytest.raises(ModelFormatError, match="CRC-32"):
        NPUModel.from_bytes(bytes(buf))


def test_corrupt_array_byte():
    buf = bytearray(random_cnn().to_bytes())
    buf[-3] ^= 0x40
    with pytest.raises(ModelFormatError, match="fc/bias.*sha256"):
        NPUModel.from_bytes(bytes(buf))


def test_wrong_shape_same_size():
    man, data = split(random_cnn().to_bytes())
    man["arrays"]["fc/codes"]["shape"] = [32, 20]
    with pytest.raises(ModelFormatError, match=r"codes have shape \(32, 20\), but the layer says 64 -> 10"):
        NPUModel.from_bytes(rebuild(man, data))


def test_wrong_shape_size_mismatch():
    man, data = split(random_cnn().to_bytes())
    man["arrays"]["fc/codes"]["shape"] = [64, 11]
    with pytest.raises(ModelFormatError, match="fc/codes.*does not match shape"):
        NPUModel.from_bytes(rebuild(man, data))


def test_wrong_layer_chain():
    man, data = split(random_cnn().to_bytes())
    man["layers"][0]["kernel"] = [1, 9]
    man["arrays"]["conv1/codes"]["shape"] = [1, 9, 1, 4]
    with pytest.raises(ModelFormatError, match="fc.*input shape"):
        NPUModel.from_bytes(rebuild(man, data))


def test_missing_field_and_wrong_type():
    man, data = split(random_cnn().to_bytes())
    del man["layers"][3]["relu"]
    with pytest.raises(ModelFormatError, match="missing field 'relu'"):
        NPUModel.from_bytes(rebuild(man, data))
    man, data = split(random_cnn().to_bytes())
    man["layers"][0]["padding"] = "1"
    with pytest.raises(ModelFormatError, match="'padding' must be int"):
        NPUModel.from_bytes(rebuild(man, data))


def test_unknown_kind_and_missing_array():
    man, data = split(random_cnn().to_bytes())
    man["layers"][1]["kind"] = "attention"
    with pytest.raises(ModelFormatError, match="unsupported layer kind 'attention'"):
        NPUModel.from_bytes(rebuild(man, data))
    man, data = split(random_cnn().to_bytes())
    man["layers"][3]["arrays"]["M"] = "nope/M"
    with pytest.raises(ModelFormatError, match="'nope/M' is not in the file"):
        NPUModel.from_bytes(rebuild(man, data))


def test_bad_config_in_file():
    man, data = split(random_cnn().to_bytes())
    man["config"]["weight_bits"] = 5
    with pytest.raises(ModelFormatError, match="bad config.*weight_bits"):
        NPUModel.from_bytes(rebuild(man, data))
    man["config"]["weight_bits"] = 3
    man["config"]["speed"] = 1
    with pytest.raises(ModelFormatError, match="unknown config field"):
        NPUModel.from_bytes(rebuild(man, data))


def test_weight_bits_disagree_with_codes():
    m = random_cnn(0, NPUConfig(weight_bits=4))
    m.layers[0].codes[0, 0, 0, 0] = 15
    m.config = NPUConfig(weight_bits=3)
    with pytest.raises(ModelFormatError, match="code 15 does not fit the config's 3-bit"):
        m.to_bytes()


@pytest.mark.parametrize(
    "field,value,msg",
    [("M", "int32", "M has dtype int32"), ("n", 64, "shift n"), ("bias", "int64", "bias has dtype int64")],
)
def test_bad_requant_fields(field, value, msg):
    m = random_mlp()
    la = m.layers[0]
    if isinstance(value, str):
        setattr(la, field, getattr(la, field).astype(value))
    else:
        getattr(la, field)[3] = value
    with pytest.raises(ModelFormatError, match=msg):
        m.validate()


def test_accumulator_overflow_is_refused():
    cfg = NPUConfig(rows=8, max_k=8, weight_bits=3)  # accumulator for 8 products of 128 * 8
    codes = np.full((64, 4), 3, np.uint8)  # +8 everywhere: 64 * 128 * 8 needs 18 bits
    la = DenseLayer(
        "big", codes, np.full(4, 1 << 15, np.uint16), np.full(4, 20, np.uint8), np.zeros(4, np.int32), False
    )
    m = NPUModel(cfg, InputSpec(shape=(64,)), [la])
    with pytest.raises(
        ModelFormatError, match=r"worst-case accumulator range \[-65536, 65024\] needs 17 bits.* 15 bits"
    ):
        m.validate()
    m.config = NPUConfig(weight_bits=3)
    m.validate()


def test_missing_file(tmp_path):
    with pytest.raises(ModelFormatError, match="does not exist"):
        NPUModel.load(tmp_path / "none.npu")


def test_duplicate_names_and_argmax_position():
    m = random_mlp()
    m.layers[1].name = "fc1"
    with pytest.raises(ModelFormatError, match="duplicate layer name"):
        m.validate()
    m = random_mlp()
    m.layers.insert(0, m.layers.pop())
    with pytest.raises(ModelFormatError, match="argmax must be the last layer"):
        m.validate()


def test_input_quantization():
    spec = InputSpec(shape=(8, 8, 1))
    pixels = np.arange(64) % 17
    q = spec.quantize(pixels.reshape(1, 64))
    assert q.dtype == np.int8 and q.shape == (1, 8, 8, 1)
    assert q.min() == 0 and q.max() == 112
    assert np.array_equal(q.reshape(-1), 7 * pixels)
    assert np.array_equal(q[0, 1, :, 0], 7 * pixels[8:16])  # row-major image, NHWC
    assert InputSpec(shape=(64,), multiplier=8).quantize([[16] * 64]).max() == 127  # saturates
    with pytest.raises(ValueError, match="cannot reshape"):
        spec.quantize(np.zeros((1, 63)))


def test_input_map_saturates_huge_raw_values_instead_of_wrapping():
    """q = sat(raw * multiplier, 8) for every raw integer: no int64 wrap on the way (1e30 was -128)."""
    spec = InputSpec(shape=(2,))  # multiplier 7
    assert spec.quantize(np.array([[1e30, -1e30]])).tolist() == [[127, -128]]
    assert spec.quantize(np.array([[2**62, -(2**62)]], np.int64)).tolist() == [[127, -128]]
    assert spec.quantize(np.array([[2**63 + 5, 18]], np.uint64)).tolist() == [[127, 126]]
    assert spec.quantize(np.array([[np.inf, -np.inf]])).tolist() == [[127, -128]]
    assert spec.quantize(np.array([[-19, 19]], np.int8)).tolist() == [[-128, 127]]  # -133, 133 saturate
    assert spec.quantize([[-18, 18]]).tolist() == [[-126, 126]]
