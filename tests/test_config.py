import pytest

from quant.config import ConfigError, NPUConfig


def test_default_roundtrip_json():
    c = NPUConfig()
    assert NPUConfig.from_json(c.to_json()) == c
    assert c.fingerprint == NPUConfig.from_dict(c.to_dict()).fingerprint


def test_acc_width_covers_worst_case():
    c = NPUConfig(weight_bits=3, max_k=1024)
    worst = 1024 * 128 * 8
    assert 2 ** (c.acc_width - 1) - 1 >= worst and 2 ** (c.acc_width - 2) - 1 < worst
    assert NPUConfig(weight_bits=8).max_abs_product == 128 * 128


@pytest.mark.parametrize(
    "kw",
    [
        dict(rows=0),
        dict(weight_bits=5),
        dict(max_k=2),
        dict(mem_width=2),
        dict(rows=True),
        dict(pwl_pieces=1),
        dict(clk_hz=100_000),
    ],
)
def test_rejects_bad(kw):
    with pytest.raises(ConfigError):
        NPUConfig(**kw)


def test_unknown_field_and_bad_json():
    with pytest.raises(ConfigError, match="unknown config field"):
        NPUConfig.from_dict({"rows": 4, "colz": 4})
    with pytest.raises(ConfigError, match="JSON"):
        NPUConfig.from_json("{not json")


def test_mismatch_names_fields():
    a, b = NPUConfig(), NPUConfig(rows=4, weight_bits=4)
    with pytest.raises(ConfigError, match="rows: 8 != 4.*weight_bits: 3 != 4"):
        a.check_matches(b)
