"""cocotb bench: NPUCore runs a layer program; its feature memory must equal the DeviceModel's.

The bench writes the memory images and the program through the host port, pulses start, waits
for done, reads the whole used feature range back and compares it word for word with
quant.device_model.DeviceModel after the same program; a scenario with a ``cycles`` entry also
checks the sequencer's cycle count against it.
"""

from __future__ import annotations

import json
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge

from quant.config import NPUConfig
from quant.device_model import DeviceModel

REGIONS = {"feature": 0, "weight": 1, "channel": 2, "program": 3}


async def write_region(dut, region, words):
    for i, w in enumerate(words):
        dut.host_region.value = region
        dut.host_addr.value = i
        dut.host_wdata.value = int(w)
        dut.host_we.value = 1
        await FallingEdge(dut.clk)
    dut.host_we.value = 0


async def read_region(dut, region, count):
    out = []
    dut.host_region.value = region
    for i in range(count):
        dut.host_addr.value = i
        await FallingEdge(dut.clk)
        out.append(int(dut.host_rdata.value))
    return out


@cocotb.test()
async def run_program(dut):
    p = json.loads(os.environ["SHIFTNPU_PARAMS"])
    cfg = NPUConfig.from_dict(p["config"])
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns", impl="gpi").start())
    dut.rst.value = 1
    dut.host_we.value = 0
    dut.start.value = 0
    await RisingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    for sc_i, sc in enumerate(p["scenarios"]):
        model = DeviceModel(cfg, p["prog_depth"])
        for name, words in sc["images"].items():
            getattr(model, name)[: len(words)] = [int(w) for w in words]
            await write_region(dut, REGIONS[name], words)
        model.run()
        dut.start.value = 1
        await FallingEdge(dut.clk)
        dut.start.value = 0
        waited = 0
        while not (int(dut.status.value) & 2):
            await RisingEdge(dut.clk)
            waited += 1
            assert waited < sc.get("max_cycles", 2_000_000), f"scenario {sc_i}: program did not finish"
        await FallingEdge(dut.clk)
        assert not (int(dut.status.value) & 4), f"scenario {sc_i}: sequencer reported an error"
        n = sc["check_words"]
        got = await read_region(dut, 0, n)
        bad = [i for i in range(n) if got[i] != model.feature[i]]
        dut._log.info(f"scenario {sc_i} ({sc['name']}): {int(dut.cycles.value)} cycles, {len(bad)} bad words")
        assert not bad, f"scenario {sc_i} ({sc['name']}): {len(bad)} feature words differ, first at {bad[:5]}"
        if "cycles" in sc:  # the cycle model's count (quant.lstm_perf.program_cycles), where the scenario has one
            got_cycles = int(dut.cycles.value)
            assert got_cycles == sc["cycles"], (
                f"scenario {sc_i} ({sc['name']}): {got_cycles} cycles, model {sc['cycles']}"
            )
