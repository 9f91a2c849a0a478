"""cocotb bench: SequentialRNNLayer (LSTM or GRU) against quant.rnn.rnn_layer, every h and c of every step.

Each case loads a layer (weights, biases, requant, PWL tables) and a sequence through the host write
port, pulses ``start`` and checks every ``(step, unit, h, c)`` the layer emits, in order, against the
golden model. Cases:

* ``random``: random DenseShift weights, inputs and initial states (``adaptive``: with PWL tables
  fitted to an input histogram instead of the uniform fit);
* ``saturate``: requant multipliers ``gain`` times larger, so the gates sit at the ends of their tables;
* ``allmax`` / ``allmin``: every weight +max, every input +127 (or -128), large biases: every gate
  saturates and the cell state is driven to its positive (negative) limit and stays there.
"""

from __future__ import annotations

import json
import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge

from hw.rnn_layer import SequentialRNNLayer
from quant import codes
from quant.config import NPUConfig
from quant.pwl import fit_sigmoid, fit_tanh
from quant.rnn import RNNParams, random_params, rnn_layer


def _params():
    return json.loads(os.environ["SHIFTNPU_PARAMS"])


def _make_case(case, kind, cfg, rng):
    I_, H, T = case["inputs"], case["hidden"], case["steps"]
    mode = case.get("mode", "random")
    gain = case.get("gain", 1.0)
    tables = None
    if case.get("adaptive"):
        # host-loaded tables with knots fitted to a histogram (inputs ~ N(0, 1.5) in real units)
        z = np.arange(-32768, 32768)
        hist = np.exp(-0.5 * (z / 6144.0) ** 2)
        n, s, F = cfg.pwl_pieces, cfg.pwl_shift, cfg.cell_frac_bits
        tables = {
            "sigmoid": fit_sigmoid(n, shift=s, hist=hist),
            "tanh": fit_tanh(n, shift=s, hist=hist),
            "tanh_cell": fit_tanh(n, shift=s, in_frac_bits=F, hist=np.exp(-0.5 * (z / 4096.0) ** 2)),
        }
    p = random_params(kind, I_, H, cfg, rng, gain=gain if mode == "saturate" else 1.0, tables=tables)
    xs = rng.integers(-128, 128, size=(T, I_))
    h0 = rng.integers(-128, 128, size=H)
    c0 = rng.integers(-20000, 20000, size=H) if kind == "lstm" else None
    if mode in ("allmax", "allmin"):
        wb = cfg.weight_bits
        kmax = codes.k_max(wb) if wb != codes.INT8_BITS else None
        top = (1 << (wb - 1)) - 1 if wb != codes.INT8_BITS else 127  # code of +max
        assert kmax is None or codes.decode(np.array([top]), wb)[0] == 1 << kmax
        W = np.full_like(p.W, top)
        U = np.full_like(p.U, top)
        sign = 1 if mode == "allmax" else -1
        xs = np.full((T, I_), 127 if sign > 0 else -128)
        b = np.full((4, H), 20000 * sign)
        # i, f, o driven to +saturation whatever the input sign: their bias dominates
        b[[0, 1, 3] if kind == "lstm" else [0, 1]] = 60000
        M = np.full((4, H), 65535)
        n = np.full((4, H), 12)
        p = RNNParams(kind, W, U, b, M, n, p.weight_bits, p.tables)
        h0 = np.full(H, 127 * sign)
        c0 = np.zeros(H, np.int64) if kind == "lstm" else None
    return p, xs, h0, c0


async def _write(dut, writes):
    for a, v in writes:
        dut.w_en.value = 1
        dut.w_addr.value = a
        dut.w_data.value = v
        await FallingEdge(dut.clk)
    dut.w_en.value = 0


@cocotb.test()
async def sequences(dut):
    p = _params()
    cfg = NPUConfig.from_dict(p["config"])
    kind = p["kind"]
    layer = SequentialRNNLayer(
        cfg, kind, max_in=p["max_in"], max_hidden=p["max_hidden"], max_steps=p["max_steps"]
    )  # the same address map as the design under test (not elaborated here)
    sw, uw = (p["max_steps"] - 1).bit_length() or 1, (p["max_hidden"] - 1).bit_length() or 1

    cocotb.start_soon(Clock(dut.clk, 10, unit="ns", impl="gpi").start())
    dut.rst.value = 1
    dut.w_en.value = 0
    dut.start.value = 0
    dut.o_stream__ready.value = 1
    await RisingEdge(dut.clk)
    await RisingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst.value = 0

    total_err = 0
    for ci, case in enumerate(p["cases"]):
        rng = np.random.default_rng(case.get("seed", ci))
        params, xs, h0, c0 = _make_case(case, kind, cfg, rng)
        hs, cs, _, _ = rnn_layer(params, xs, cfg, h0=h0, c0=c0)
        await _write(dut, layer.param_writes(params) + layer.input_writes(xs, h0=h0, c0=c0))
        T, H = xs.shape[0], params.hidden
        dut.n_steps.value = T
        dut.n_in.value = params.inputs
        dut.n_hidden.value = H
        dut.start.value = 1
        await FallingEdge(dut.clk)
        dut.start.value = 0

        got = []

        async def monitor(got=got, n=T * H):
            while len(got) < n:
                await RisingEdge(dut.o_stream__valid)
                word = int(dut.o_stream__payload.value)
                step = word & ((1 << sw) - 1)
                unit = (word >> sw) & ((1 << uw) - 1)
                h = (word >> (sw + uw)) & 0xFF
                c = (word >> (sw + uw + 8)) & 0xFFFF
                got.append((step, unit, h - 256 if h >= 128 else h, c - 65536 if c >= 32768 else c))
                await FallingEdge(dut.clk)

        mon = cocotb.start_soon(monitor())
        await FallingEdge(dut.busy)
        await RisingEdge(dut.clk)
        mon.cancel()
        exp = [(t, j, int(hs[t, j]), int(cs[t, j]) if cs is not None else 0) for t in range(T) for j in range(H)]
        errs = [(i, g, e) for i, (g, e) in enumerate(zip(got, exp, strict=False)) if g != e]
        if len(got) != len(exp):
            errs.append(("count", len(got), len(exp)))
        if errs:
            dut._log.error(f"case {ci} {case}: {len(errs)} mismatches, first {errs[:4]}")
        extra = ""
        if cs is not None:
            extra = f", c range [{int(cs.min())}, {int(cs.max())}]"
        dut._log.info(
            f"case {ci} {case}: {len(got)} outputs checked, h range [{int(hs.min())}, {int(hs.max())}]{extra}"
        )
        total_err += len(errs)
        # the run leaves its state in the layer: clear h (bank 0) and c before the next case
        await _write(dut, layer.state_reset_writes(H))
    assert total_err == 0, f"{total_err} mismatches against the golden model"
