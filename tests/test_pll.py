"""PLL divider arithmetic: every setting inside the primitive's ranges, the clock it claims, exact where possible."""

import pytest

from hw.pll import ecp5_pll, ice40_pll, pll_for


@pytest.mark.parametrize("f_out", [17, 20, 24, 30, 33.3, 40, 42, 48, 50, 60, 64, 72, 80, 96, 100, 120, 200, 275])
def test_ice40_dividers_in_range(f_out):
    p = ice40_pll(12.0, f_out)
    d = p.params
    assert 0 <= d["DIVR"] <= 15 and 0 <= d["DIVF"] <= 127 and 1 <= d["DIVQ"] <= 6 and 1 <= d["FILTER_RANGE"] <= 6
    f_pfd = 12.0 / (d["DIVR"] + 1)
    assert 10 <= f_pfd <= 133
    assert 533 <= p.f_vco_mhz <= 1066
    assert p.f_out_mhz == pytest.approx(f_pfd * (d["DIVF"] + 1) / 2 ** d["DIVQ"])
    assert 0.95 * f_out <= p.f_out_mhz <= f_out + 1e-9  # never faster than asked


def test_ice40_known_settings():
    # 12 MHz -> 48 MHz exactly: VCO 768 MHz / 16 (the iCEBreaker default)
    p = ice40_pll(12.0, 48.0)
    assert p.f_out_mhz == 48.0 and p.params == {"DIVR": 0, "DIVF": 63, "DIVQ": 4, "FILTER_RANGE": 1}
    assert ice40_pll(12.0, 40.0).f_out_mhz == pytest.approx(39.75)  # 40 is not reachable from 12 MHz


@pytest.mark.parametrize("f_in", [25.0, 48.0])
@pytest.mark.parametrize("f_out", [10, 25, 40, 50, 62.5, 75, 80, 100, 120, 125, 133, 150, 200, 300])
def test_ecp5_dividers_in_range(f_in, f_out):
    p = ecp5_pll(f_in, f_out)
    d = p.params
    assert 1 <= d["CLKI_DIV"] <= 128 and 1 <= d["CLKFB_DIV"] <= 80 and 1 <= d["CLKOP_DIV"] <= 128
    assert d["CLKOP_CPHASE"] == d["CLKOP_DIV"] - 1
    assert 3.125 <= f_in / d["CLKI_DIV"] <= 400
    assert 400 <= p.f_vco_mhz <= 800
    assert p.f_out_mhz == pytest.approx(f_in / d["CLKI_DIV"] * d["CLKFB_DIV"])
    assert 0.95 * f_out <= p.f_out_mhz <= f_out + 1e-9


def test_ecp5_exact_from_25():
    for f in (50, 75, 100, 125, 150):
        assert ecp5_pll(25.0, f).f_out_mhz == pytest.approx(f)


def test_bad_requests_are_clear_errors():
    with pytest.raises(ValueError, match="16..275"):
        ice40_pll(12.0, 500)
    with pytest.raises(ValueError, match="3.125..400"):
        ecp5_pll(25.0, 1000)
    with pytest.raises(ValueError, match="family"):
        pll_for("gowin", 27.0, 50.0)
