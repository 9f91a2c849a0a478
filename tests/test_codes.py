import numpy as np
import pytest

from quant.codes import all_codes, decode, encode, k_max, max_abs_weight, pack, unpack


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_every_code_is_nonzero_power_of_two(bits):
    v = decode(all_codes(bits), bits)
    assert len(set(v.tolist())) == 2**bits  # no code wasted
    assert np.all(v != 0)
    expect = sorted([2**k for k in range(k_max(bits) + 1)] + [-(2**k) for k in range(k_max(bits) + 1)])
    assert sorted(v.tolist()) == expect
    assert max_abs_weight(bits) == 2 ** k_max(bits)


def test_three_bit_values():
    assert decode(np.arange(8), 3).tolist() == [1, 2, 4, 8, -1, -2, -4, -8]


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_encode_decode_roundtrip(bits):
    c = all_codes(bits)
    assert np.array_equal(encode(decode(c, bits), bits), c)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_encode_nearest_in_log_domain_and_clamped(bits):
    km = k_max(bits)
    assert decode(encode([0.0], bits), bits)[0] == 1  # no zero code: zero becomes +1
    assert decode(encode([1e-9], bits), bits)[0] == 1
    assert decode(encode([1e9], bits), bits)[0] == 2**km
    assert decode(encode([-1e9], bits), bits)[0] == -(2**km)
    assert decode(encode([-0.3], bits), bits)[0] == -1
    # log-domain midpoint between 2 and 4 is 2*sqrt(2) ~ 2.83
    if km >= 2:
        assert decode(encode([2.8], bits), bits)[0] == 2
        assert decode(encode([2.9], bits), bits)[0] == 4


def test_encode_int8():
    v = np.array([-200, -128, -0.6, 0, 0.4, 127, 300])
    assert decode(encode(v, 8), 8).tolist() == [-128, -128, -1, 0, 0, 127, 127]
    assert np.array_equal(encode(decode(all_codes(8), 8), 8), all_codes(8))


def test_encode_rejects_nonfinite_and_bad_bits():
    with pytest.raises(ValueError):
        encode([np.nan], 3)
    with pytest.raises(ValueError):
        encode([1.0], 5)
    with pytest.raises(ValueError):
        decode([8], 3)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("word", [8, 16, 32, 64, 96])
def test_pack_unpack_roundtrip_every_code(bits, word):
    rng = np.random.default_rng(bits * 100 + word)
    codes = np.concatenate([all_codes(bits), rng.integers(0, 2**bits, size=37)])
    words = pack(codes, bits, word)
    assert len(words) == -(-len(codes) // (word // bits))
    assert all(0 <= int(w) < 2**word for w in words)
    assert np.array_equal(unpack(words, bits, word, len(codes)), codes)


def test_pack_layout_little_endian():
    assert pack([1, 2, 3], 4, 8).tolist() == [0x21, 0x03]


def test_unpack_too_many():
    with pytest.raises(ValueError):
        unpack([0], 3, 8, 3)
