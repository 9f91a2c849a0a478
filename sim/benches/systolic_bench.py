"""cocotb bench: the bare SystolicArray against numpy, with double-buffered weight loading.

A driver streams random matrix pairs (A: M x rows int8, W: rows x cols weight codes) through the
array. Pair i+1's weights are shifted into the idle bank while pair i computes, as soon as no
in-flight vector still uses that bank. Random bubbles (``in_valid = 0``) and random stalls
(``en = 0``) run throughout; the monitor compares every output vector, in order, with
``A @ decode(W)``.
"""

from __future__ import annotations

import json
import os
import random
from collections import deque

import cocotb
import numpy as np
from buses import pack_ints, unpack_signed
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge

from quant.codes import all_codes, decode
from quant.config import NPUConfig


def _params():
    return json.loads(os.environ["SHIFTNPU_PARAMS"])


@cocotb.test()
async def random_pairs(dut):
    p = _params()
    cfg = NPUConfig.from_dict(p["config"])
    R, C, wb, aw = cfg.rows, cfg.cols, cfg.weight_bits, cfg.array_sum_width
    rng = np.random.default_rng(p.get("seed", 0))
    py_rng = random.Random(p.get("seed", 0))
    stall_p, bubble_p = p.get("stall", 0.2), p.get("bubble", 0.2)

    pairs = []
    for i in range(p["pairs"]):
        M = int(rng.integers(1, 2 * R + 1))
        if i % 4 == 0:  # extremes
            A = rng.choice([-128, 127, 0, -1], size=(M, R))
        else:
            A = rng.integers(-128, 128, size=(M, R))
        W = rng.integers(0, 1 << wb, size=(R, C))
        if i < 2:  # every code appears in the first pairs
            flat = np.resize(all_codes(wb), R * C)
            W = rng.permutation(flat).reshape(R, C)
        pairs.append((A, W))

    expected = deque()
    for A, W in pairs:
        for row in A @ decode(W, wb):
            expected.append([int(v) for v in row])

    cocotb.start_soon(Clock(dut.clk, 10, unit="ns", impl="gpi").start())
    dut.rst.value = 1
    dut.en.value = 0
    dut.in_valid.value = 0
    dut.w_shift.value = 0
    await RisingEdge(dut.clk)
    await RisingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst.value = 0

    # in-flight vectors per bank (sent, result not yet consumed)
    in_flight = [0, 0]
    out_banks: deque[int] = deque()
    load_pair, load_row = 0, 0  # next pair to load, and how many rows of it are in
    stream_pair, stream_row = 0, 0
    loaded = set()
    got = 0
    errors = 0
    cycles = 0
    total = sum(len(A) for A, _ in pairs)
    while got < total:
        cycles += 1
        if cycles > 200 * total + 1000:
            raise AssertionError(f"timeout: {got}/{total} results after {cycles} cycles")
        en = int(py_rng.random() >= stall_p)

        # Monitor: the output consumed at the coming edge.
        if en and int(dut.out_valid.value):
            row = unpack_signed(int(dut.out.value), aw, C)
            exp = expected.popleft()
            bank = int(out_banks.popleft())
            in_flight[bank] -= 1
            if row != exp:
                errors += 1
                dut._log.error(f"result {got}: got {row}, expected {exp}")
            got += 1

        # Activation driver. A pair may start only on the edge after its last weight row went in,
        # so the driver runs before the loader marks a pair as loaded.
        valid = 0
        if en and stream_pair < len(pairs) and stream_pair in loaded and py_rng.random() >= bubble_p:
            A = pairs[stream_pair][0]
            bank = stream_pair % 2
            dut.a_in.value = pack_ints(A[stream_row], 8)
            dut.in_bank.value = bank
            in_flight[bank] += 1
            out_banks.append(bank)
            valid = 1
            stream_row += 1
            if stream_row == len(A):
                stream_pair, stream_row = stream_pair + 1, 0
        # Weight loader: pair `load_pair` goes into bank load_pair % 2 once that bank is idle.
        shift = 0
        if load_pair < len(pairs) and load_pair <= stream_pair + 1:
            bank = load_pair % 2
            busy = in_flight[bank] > 0 or (stream_pair % 2 == bank and stream_pair < load_pair)
            if not busy and py_rng.random() >= stall_p / 2:
                W = pairs[load_pair][1]
                dut.w_in.value = pack_ints(W[R - 1 - load_row], wb)
                dut.w_bank.value = bank
                shift = 1
                load_row += 1
                if load_row == R:
                    loaded.add(load_pair)
                    load_pair, load_row = load_pair + 1, 0
        dut.w_shift.value = shift

        dut.in_valid.value = valid
        dut.en.value = en
        await FallingEdge(dut.clk)

    dut._log.info(f"{len(pairs)} pairs, {total} vectors, {cycles} cycles, {errors} mismatches")
    if p.get("report"):
        with open(p["report"], "w") as f:
            json.dump(
                {
                    "pairs": len(pairs),
                    "vectors": total,
                    "cycles": cycles,
                    "mismatches": errors,
                    "macs": int(sum(len(A) * R * C for A, _ in pairs)),
                },
                f,
            )
    assert errors == 0, f"{errors} of {total} result vectors differ from numpy"
