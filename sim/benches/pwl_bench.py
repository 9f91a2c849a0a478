"""cocotb bench: PWLUnit on every int16 input of each table, against quant.pwl, with stalls.

Table 0 is built in (``init``); the others are written by the host through the write port before
the sweep, so both ways of loading a table are exercised. The driver offers every input of every
table with random bubbles; the consumer applies random backpressure; the checker compares every
result in order with :meth:`quant.pwl.PWLTable.evaluate`.
"""

from __future__ import annotations

import json
import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from hw.pwl import PWLUnit
from quant.config import NPUConfig
from quant.pwl import PWLTable


@cocotb.test()
async def exhaustive(dut):
    p = json.loads(os.environ["SHIFTNPU_PARAMS"])
    cfg = NPUConfig.from_dict(p["config"])
    tables = [PWLTable.from_dict(d) for d in p["tables"]]
    unit = PWLUnit(cfg, tables=len(tables))  # address map only
    rng = random.Random(p.get("seed", 0))
    bubble, stall = p.get("bubble", 0.1), p.get("stall", 0.1)

    grid = np.arange(-32768, 32768, dtype=np.int64)
    inputs = [(t, int(z)) for t in range(len(tables)) for z in grid]
    expected = np.concatenate([tab(grid) for tab in tables])

    cocotb.start_soon(Clock(dut.clk, 10, unit="ns", impl="gpi").start())
    dut.rst.value = 1
    dut.i_stream__valid.value = 0
    dut.o_stream__ready.value = 0
    dut.w_en.value = 0
    await RisingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    for t in range(1, len(tables)):
        for a, v in unit.table_writes(t, tables[t]):
            dut.w_en.value = 1
            dut.w_addr.value = a
            dut.w_data.value = v & 0xFFFF
            await FallingEdge(dut.clk)
    dut.w_en.value = 0

    sent = got = errors = 0
    first = []
    n = len(inputs)
    cycles = 0
    while got < n:
        cycles += 1
        # drive after the falling edge, sample the handshake just before the rising edge
        offer = sent < n and rng.random() >= bubble
        if offer:
            t, z = inputs[sent]
            dut.i_stream__payload.value = (z & 0xFFFF) | (t << 16)
        dut.i_stream__valid.value = int(offer)
        dut.o_stream__ready.value = int(rng.random() >= stall)
        await ReadOnly()
        if offer and int(dut.i_stream__ready.value):
            sent += 1
        if int(dut.o_stream__valid.value) and int(dut.o_stream__ready.value):
            y = int(dut.o_stream__payload.value)
            y = y - 65536 if y >= 32768 else y
            if y != int(expected[got]):
                errors += 1
                if len(first) < 5:
                    first.append((inputs[got], y, int(expected[got])))
            got += 1
        await FallingEdge(dut.clk)
    dut._log.info(f"{n} inputs over {len(tables)} tables in {cycles} cycles, {errors} mismatches")
    assert errors == 0, f"{errors} of {n} results differ; first (table, z), got, expected: {first}"
