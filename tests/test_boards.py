"""Board table: short names, amaranth-boards class names, clear errors."""

import pytest

from hw.boards import BOARDS, DEVICES, get_board


def test_named_boards():
    b = get_board("icebreaker")
    assert b.device == "iCE40UP5K" and b.family == "ice40" and b.clk_mhz == 12.0
    assert get_board("ulx3s-85f").resources.dsp == 156
    assert get_board("orangecrab-85f").clk_mhz == 48.0
    for b in BOARDS.values():
        assert b.device in DEVICES


def test_platform_class_names():
    # a class in the table resolves to its entry; one that is not is built from the platform
    assert get_board("ICEBreakerPlatform").name == "icebreaker"
    b = get_board("ULX3S_12F_Platform")
    assert b.device == "LFE5U-12F" and b.clk == "clk25" and b.clk_mhz == 25.0 and b.family == "ecp5"


def test_unknown_board_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown board"):
        get_board("no-such-board")
    with pytest.raises(ValueError, match="device"):
        get_board("ArtyA7_35Platform")  # exists in amaranth-boards, but a Xilinx part
