"""PWL tables: fitting, exact evaluation (quant.pwl) and the PWLUnit (hw.pwl) on every int16 input."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.pwl import PWLUnit
from quant.config import NPUConfig
from quant.fixed import rshift_round, sat
from quant.pwl import PWLTable, error_stats, fit, fit_sigmoid, fit_tanh, target
from sim.runner import run_cocotb

pytestmark = pytest.mark.filterwarnings("ignore:.*created but never used")


def ref_eval(t: PWLTable, z: int) -> int:
    """SPEC §5 literally: clamp, linear search for the segment, one multiply."""
    k = [int(v) for v in t.knots]
    z = min(max(z, k[0]), k[-1])
    i = 0
    while i < t.pieces - 1 and z >= k[i + 1]:
        i += 1
    return sat(int(t.y[i]) + rshift_round(int(t.m[i]) * (z - k[i]), int(t.shift)), 16)


@pytest.mark.parametrize("func,frac", [("sigmoid", 12), ("tanh", 12), ("tanh", 11)])
@pytest.mark.parametrize("pieces", [4, 16])
def test_fit_is_valid_and_matches_spec(func, frac, pieces):
    t = fit(func, pieces, in_frac_bits=frac, shift=11)
    assert t.pieces == pieces and t.knots[0] == -32768 and t.knots[-1] == 32767
    rng = np.random.default_rng(pieces)
    zs = np.concatenate([rng.integers(-32768, 32768, 300), t.knots, t.knots - 1, t.knots + 1])
    zs = np.clip(zs, -32768, 32767)
    vec = t(zs)
    for z, v in zip(zs, vec, strict=True):
        assert int(v) == ref_eval(t, int(z)) == t(int(z))


def test_error_falls_with_pieces():
    errs = [error_stats(fit_sigmoid(n))[0] for n in (4, 8, 16, 32)]
    assert errs == sorted(errs, reverse=True) and errs[-1] < errs[0] / 20
    # 16 pieces stay within 0.6 LSB of an 8-bit output (128 Q0.15 LSBs)
    assert error_stats(fit_sigmoid(16))[0] < 128
    assert error_stats(fit_tanh(16))[0] < 256
    assert error_stats(fit_tanh(16, in_frac_bits=11))[0] < 256


def test_adaptive_fit_is_better_where_data_lies():
    z = np.arange(-32768, 32768)
    hist = np.exp(-0.5 * (z / 2000.0) ** 2)  # inputs concentrated near 0 (|x| < 1)
    plain, adaptive = fit_tanh(8), fit_tanh(8, hist=hist)
    near = np.abs(z) < 4000
    tgt = target("tanh", 12, z)
    e_plain = np.abs(plain(z) - tgt)[near].mean()
    e_adapt = np.abs(adaptive(z) - tgt)[near].mean()
    assert e_adapt < e_plain / 2


def test_table_dict_round_trip_and_validation():
    t = fit_tanh(8, in_frac_bits=11)
    assert PWLTable.from_dict(t.to_dict()) == t
    d = t.to_dict()
    d["knots"][3] = d["knots"][2]
    with pytest.raises(ValueError, match="strictly increasing"):
        PWLTable.from_dict(d)
    d = t.to_dict()
    d["m"][0] = 40000
    with pytest.raises(ValueError, match="int16"):
        PWLTable.from_dict(d)
    with pytest.raises(ValueError, match="missing"):
        PWLTable.from_dict({"knots": [0, 1]})
    with pytest.raises(ValueError, match="unknown PWL function"):
        fit("relu", 4)


def test_pwl_unit_rejects_bad_config():
    with pytest.raises(ValueError, match="power of two"):
        PWLUnit(NPUConfig(pwl_pieces=12))
    with pytest.raises(ValueError, match="pieces"):
        PWLUnit(NPUConfig(pwl_pieces=8), init=[fit_sigmoid(16)])


@pytest.mark.parametrize("ebr", [False, True])
def test_pwl_unit_latency_and_write_port_amaranth_sim(ebr):
    """A short amaranth.sim run: latency as advertised, then a table rewritten through the port.
    ``ebr``: the iCE40 memory path (hw/ebr.py's EBR model), whose tables can only be written."""
    cfg = NPUConfig(pwl_pieces=4)
    a, b = fit_sigmoid(4), fit_tanh(4)
    dut = PWLUnit(cfg, tables=1, init=[] if ebr else [a], ebr_model=ebr)
    seen = []

    async def tb(ctx):
        if ebr:  # EBR primitives without initial contents: load the table through the port
            for addr, v in dut.table_writes(0, a):
                ctx.set(dut.w_en, 1)
                ctx.set(dut.w_addr, addr)
                ctx.set(dut.w_data, v)
                await ctx.tick()
            ctx.set(dut.w_en, 0)
        ctx.set(dut.o_stream.ready, 1)
        ctx.set(dut.i_stream.payload.z, 1234)
        ctx.set(dut.i_stream.valid, 1)
        await ctx.tick()
        ctx.set(dut.i_stream.valid, 0)
        for cycle in range(1, 20):
            if ctx.get(dut.o_stream.valid):
                seen.append((cycle, ctx.get(dut.o_stream.payload)))
            await ctx.tick()
        for addr, v in dut.table_writes(0, b):
            ctx.set(dut.w_en, 1)
            ctx.set(dut.w_addr, addr)
            ctx.set(dut.w_data, v)
            await ctx.tick()
        ctx.set(dut.w_en, 0)
        for z in (-30000, -5, 0, 4095, 32767):
            ctx.set(dut.i_stream.payload.z, z)
            ctx.set(dut.i_stream.valid, 1)
            await ctx.tick()
            ctx.set(dut.i_stream.valid, 0)
            await ctx.tick().repeat(dut.latency - 1)
            assert ctx.get(dut.o_stream.valid)
            assert ctx.get(dut.o_stream.payload) == b(z)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert seen == [(dut.latency, a(1234))]


@pytest.mark.slow
def test_pwl_unit_exhaustive_verilator():
    """Every int16 input of a σ (Q3.12, built in) and a tanh (Q4.11, host-written) table."""
    cfg = NPUConfig()
    tables = [fit_sigmoid(cfg.pwl_pieces), fit_tanh(cfg.pwl_pieces, in_frac_bits=cfg.cell_frac_bits)]
    params = {"config": cfg.to_dict(), "init": tables[0].to_dict()}
    run_cocotb(
        "pwl_unit",
        params,
        lambda: PWLUnit(cfg, tables=2, init=tables[:1]),
        "pwl_bench",
        bench_params={"config": cfg.to_dict(), "tables": [t.to_dict() for t in tables], "seed": 3},
    )


@pytest.mark.parametrize("width,shift,bits", [(9, 0, 5), (9, 1, 5), (10, 3, 4), (11, 5, 8), (8, 4, 8)])
def test_round_sat_and_sat_narrow_are_spec_exact(width, shift, bits):
    """The gate unit's cheap rounding shift and saturation equal SPEC §1 on every input of a width."""
    from amaranth.hdl import Module, Signal, signed

    from hw.fixed import round_sat, sat_narrow

    m = Module()
    x = Signal(signed(width))
    rs = round_sat(m, x, shift, bits, "rs")
    sn = sat_narrow(m, x, bits, "sn")
    sim = Simulator(m)

    async def tb(ctx):
        for v in range(-(1 << (width - 1)), 1 << (width - 1)):
            ctx.set(x, v)
            assert ctx.get(rs) == sat(rshift_round(v, shift), bits), v
            assert ctx.get(sn) == sat(v, bits), v

    sim.add_testbench(tb)
    sim.run()
