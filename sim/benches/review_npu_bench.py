"""cocotb bench (review): like npu_bench, plus status checks (error bit, running/done, cycles) per scenario.

Each scenario may set ``expect_error`` (the program holds an unknown opcode: the sequencer must stop
with done and error set). After every run the bench also checks that ``running`` is low, that the
cycle counter is non-zero and stays frozen while idle.
"""

from __future__ import annotations

import json
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge

# The host-port helpers are npu_bench's (only these names: its own test stays in its module).
from npu_bench import REGIONS, read_region, write_region  # noqa: E402

from quant.config import NPUConfig
from quant.device_model import DeviceModel


@cocotb.test()
async def run_programs(dut):
    p = json.loads(os.environ["SHIFTNPU_PARAMS"])
    cfg = NPUConfig.from_dict(p["config"])
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns", impl="gpi").start())
    dut.rst.value = 1
    dut.host_we.value = 0
    dut.start.value = 0
    await RisingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    failures = []
    for sc_i, sc in enumerate(p["scenarios"]):
        tag = f"scenario {sc_i} ({sc['name']})"
        model = DeviceModel(cfg, p["prog_depth"])
        for name, words in sc["images"].items():
            getattr(model, name)[: len(words)] = [int(w) for w in words]
            await write_region(dut, REGIONS[name], words)
        if not sc.get("expect_error"):
            model.run()
        dut.start.value = 1
        await FallingEdge(dut.clk)
        dut.start.value = 0
        waited = 0
        while not (int(dut.status.value) & 2):
            await RisingEdge(dut.clk)
            waited += 1
            if waited > sc.get("max_cycles", 200_000):
                failures.append(f"{tag}: program did not finish")
                break
        if waited > sc.get("max_cycles", 200_000):
            break
        await FallingEdge(dut.clk)
        status = int(dut.status.value)
        cyc = int(dut.cycles.value)
        for _ in range(5):
            await FallingEdge(dut.clk)
        if int(dut.cycles.value) != cyc:
            failures.append(f"{tag}: cycle counter moved while idle ({cyc} -> {int(dut.cycles.value)})")
        if status & 1:
            failures.append(f"{tag}: still running after done (status {status})")
        if bool(status & 4) != bool(sc.get("expect_error")):
            failures.append(f"{tag}: error bit {bool(status & 4)}, expected {bool(sc.get('expect_error'))}")
        if cyc == 0:
            failures.append(f"{tag}: cycle counter is 0")
        if not sc.get("expect_error"):
            n = sc["check_words"]
            got = await read_region(dut, 0, n)
            bad = [i for i in range(n) if got[i] != model.feature[i]]
            dut._log.info(f"{tag}: {cyc} cycles, {len(bad)} bad words")
            if bad:
                failures.append(
                    f"{tag}: {len(bad)} feature words differ, first at {bad[:5]}: "
                    f"got {[hex(got[i]) for i in bad[:3]]} want {[hex(model.feature[i]) for i in bad[:3]]}"
                )
    assert not failures, "; ".join(failures)
