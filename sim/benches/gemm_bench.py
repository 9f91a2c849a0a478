"""cocotb bench: the GemmEngine against the golden GEMM, case by case.

For each case (M, K, N, relu, stall probabilities, seed) the bench writes A, W and the channel
parameters through the host port, sends the command, waits for ``done`` (taking it after a random
delay), reads the result region back and compares it with :func:`quant.tiling.gemm_reference`.
Optional random stalls freeze the compute pipeline and random backpressure holds the requantizer's
output stream. Cycles are recorded (command acceptance to done) for the cycle-model check.
"""

from __future__ import annotations

import json
import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge

from quant.config import NPUConfig
from quant.fixed import quantize_multiplier
from quant.tiling import channel_words, feature_words, gemm_reference, tiles, unpack_features, weight_words

FEATURE, WEIGHT, CHANNEL = 0, 1, 2


def make_case(cfg: NPUConfig, case: dict):
    rng = np.random.default_rng(case["seed"])
    M, K, N = case["m"], case["k"], case["n"]
    kind = case.get("data", "random")
    if kind == "extreme":
        A = rng.choice([-128, 127], size=(M, K))
    else:
        A = rng.integers(-128, 128, size=(M, K))
    W = rng.integers(0, 1 << cfg.weight_bits, size=(K, N))
    if kind == "extreme":  # largest weights, all the same sign as A: the accumulator's worst case
        km = (1 << cfg.weight_bits) - 1 if cfg.weight_bits == 8 else (1 << (cfg.weight_bits - 1)) - 1
        W = np.full((K, N), km if cfg.weight_bits != 8 else 0x80)
    lim = 2 ** (cfg.acc_width - 1) - 1
    bias = rng.integers(-(2**20), 2**20, size=N)
    if kind == "bias":  # biases near the accumulator limits
        bias = rng.choice([lim, -lim - 1, lim // 2, -(lim // 2)], size=N)
    scales = np.exp(rng.uniform(np.log(1e-5), np.log(0.05), size=N))
    mn = [quantize_multiplier(s) for s in scales]
    mult = np.array([x[0] for x in mn])
    shift = np.array([x[1] for x in mn])
    return A, W, bias, mult, shift


async def host_write(dut, region, base, words):
    for i, w in enumerate(words):
        dut.host_region.value = region
        dut.host_addr.value = base + i
        dut.host_wdata.value = int(w)
        dut.host_we.value = 1
        await FallingEdge(dut.clk)
    dut.host_we.value = 0


async def host_read(dut, region, base, count, latency=1):
    # The address set at a falling edge is read at the next rising edge; the word is there at the
    # falling edge after it (``latency`` 2: one falling edge later still).
    out = []
    dut.host_region.value = region
    for i in range(count + latency - 1):
        if i < count:
            dut.host_addr.value = base + i
        await FallingEdge(dut.clk)
        if i >= latency - 1:
            out.append(int(dut.host_rdata.value))
    return out


async def toggler(dut, stall_p, out_stall_p, seed, stop):
    rnd = random.Random(seed)
    while not stop["done"]:
        dut.stall.value = int(rnd.random() < stall_p)
        dut.out_stall.value = int(rnd.random() < out_stall_p)
        await FallingEdge(dut.clk)
    dut.stall.value = 0
    dut.out_stall.value = 0


@cocotb.test()
async def gemm_cases(dut):
    p = json.loads(os.environ["SHIFTNPU_PARAMS"])
    cfg = NPUConfig.from_dict(p["config"])
    lat = p.get("host_read_latency", 1)
    R, C = cfg.rows, cfg.cols
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns", impl="gpi").start())
    dut.rst.value = 1
    for sig in (dut.cmd__valid, dut.done__ready, dut.host_we, dut.stall, dut.out_stall):
        sig.value = 0
    await RisingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    rnd = random.Random(p.get("seed", 0))

    report = []
    failures = []
    for ci, case in enumerate(p["cases"]):
        M, K, N = case["m"], case["k"], case["n"]
        KT, NT = tiles(K, R), tiles(N, C)
        A, W, bias, mult, shift = make_case(cfg, case)
        relu = bool(case.get("relu", False))
        act_base = case.get("act_base", 0)
        out_base = act_base + KT * M
        wgt_base = case.get("wgt_base", 0)
        chan_base = case.get("chan_base", 0)
        if not case.get("skip_load", False):
            await host_write(dut, FEATURE, act_base, feature_words(A, R))
            await host_write(dut, WEIGHT, wgt_base, weight_words(W, cfg))
            await host_write(dut, CHANNEL, chan_base, channel_words(bias, mult, shift))
        # poison the result region so stale data cannot pass
        await host_write(dut, FEATURE, out_base, [0x5A5A5A5A5A5A5A5A & ((1 << (8 * R)) - 1)] * (NT * M))

        fields = [
            (M, 16),
            (KT, 16),
            (NT, 16),
            (N, 16),
            (act_base, 16),
            (out_base, 16),
            (wgt_base, 16),
            (chan_base, 16),
            (int(relu), 1),
        ]
        word, pos = 0, 0
        for v, w in fields:
            word |= (v & ((1 << w) - 1)) << pos
            pos += w
        dut.cmd__payload.value = word
        dut.cmd__valid.value = 1
        stop = {"done": False}
        stall_p, out_stall_p = case.get("stall", 0.0), case.get("out_stall", 0.0)
        if stall_p or out_stall_p:
            cocotb.start_soon(toggler(dut, stall_p, out_stall_p, case["seed"], stop))
        await RisingEdge(dut.clk)
        while not int(dut.cmd__ready.value):  # sampled at this edge: accepted if ready was high
            await RisingEdge(dut.clk)
        await FallingEdge(dut.clk)
        dut.cmd__valid.value = 0
        # Wait for done, then take it after a random delay (backpressure on the done stream).
        budget = 50 * (M * KT * NT + 200) + 20 * M * NT * C + 10_000
        waited = 0
        while not int(dut.done__valid.value):
            await RisingEdge(dut.clk)
            waited += 1
            if waited > budget:
                stop["done"] = True
                raise AssertionError(f"case {ci} {case}: no done after {waited} cycles")
        await FallingEdge(dut.clk)
        stop["done"] = True
        cycles = int(dut.done__payload.value)
        for _ in range(rnd.randrange(3)):
            await FallingEdge(dut.clk)
        dut.done__ready.value = 1
        await FallingEdge(dut.clk)
        dut.done__ready.value = 0
        if int(dut.busy.value):
            raise AssertionError("engine still busy after done")

        got = unpack_features(await host_read(dut, FEATURE, out_base, NT * M, lat), M, N, C)
        # lanes past N must be written as zero so the result can feed the next layer directly
        raw = await host_read(dut, FEATURE, out_base + (NT - 1) * M, M, lat)
        pad_ok = all((w >> (8 * (N - (NT - 1) * C))) == 0 for w in raw) if N % C else True
        exp = gemm_reference(A, W, cfg.weight_bits, bias, mult, shift, relu=relu)
        bad = int(np.sum(got != exp))
        if bad or not pad_ok:
            idx = [(i, j, int(got[i, j]), int(exp[i, j])) for i, j in np.argwhere(got != exp)[:5]]
            failures.append(f"case {ci} {case}: {bad} wrong outputs (first at {idx}), padding zero: {pad_ok}")
            dut._log.error(failures[-1])
        report.append({**case, "cycles": cycles, "errors": bad})
        dut._log.info(f"case {ci}: M={M} K={K} N={N} relu={relu} -> {cycles} cycles, {bad} errors")

    if p.get("report"):
        with open(p["report"], "w") as f:
            json.dump(report, f)
    assert not failures, "\n".join(failures)
