"""cocotb bench: the Requantizer alone under a simulator, against quant.fixed.requant."""

from __future__ import annotations

import json
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge

from quant.config import NPUConfig
from quant.fixed import requant


@cocotb.test()
async def requant_cases(dut):
    p = json.loads(os.environ["SHIFTNPU_PARAMS"])
    cfg = NPUConfig.from_dict(p["config"])
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns", impl="gpi").start())
    dut.rst.value = 1
    dut.i_stream__valid.value = 0
    dut.o_stream__ready.value = 1
    await RisingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    aw = cfg.acc_width
    got, bad = [], []
    cases = p["cases"]
    for i in range(len(cases) + 8):
        if i < len(cases):
            acc, bias, mult, shift, relu = cases[i]
            word = (acc & ((1 << aw) - 1)) | ((bias & 0xFFFFFFFF) << aw) | (mult << (aw + 32)) | (shift << (aw + 48))
            word |= relu << (aw + 54)
            dut.i_stream__payload.value = word
            dut.i_stream__valid.value = 1
        else:
            dut.i_stream__valid.value = 0
        await RisingEdge(dut.clk)
        if int(dut.o_stream__valid.value):
            got.append(dut.o_stream__payload.value.to_signed())
        await FallingEdge(dut.clk)
    for c, g in zip(cases, got, strict=False):
        e = requant(c[0], c[1], c[2], c[3], relu=bool(c[4]))
        if g != e:
            bad.append((c, g, e))
    assert len(got) == len(cases), f"{len(got)} results for {len(cases)} inputs"
    assert not bad, f"{len(bad)} mismatches, first {bad[:3]}"
