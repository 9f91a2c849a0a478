"""amaranth.sim: the RNN gate unit against quant.rnn's pointwise LSTM/GRU, with random stalls."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.rnn import GateUnit
from quant.config import NPUConfig
from quant.fixed import quantize_multiplier
from quant.pwl import PWLTable
from quant.rnn import default_tables, gru_pointwise, lstm_pointwise, requant_gates

H = 8
pytestmark = pytest.mark.filterwarnings("ignore:.*created but never used")


def _cases(kind, cfg, rng, n):
    aw = cfg.acc_width
    lim = 1 << (aw - 1)
    acc = rng.integers(-3000, 3000, size=(n, 4, H))
    acc[: n // 4] = rng.choice([-lim, lim - 1, 0, -1, 1], size=(n // 4, 4, H))  # extremes
    pairs = [quantize_multiplier(s) for s in rng.uniform(0.5, 8.0, size=4 * H)]
    M = np.array([p[0] for p in pairs]).reshape(4, H)
    nn = np.array([p[1] for p in pairs]).reshape(4, H)
    M[0, 0], nn[0, 0] = 65535, 0  # no shift: saturates
    M[1, 1], nn[1, 1] = 1, 63  # everything rounds to 0
    M[2, 2], nn[2, 2] = 3, 1  # smallest rounding shift
    M[3, 3], nn[3, 3] = 40000, 2
    h = rng.integers(-128, 128, size=(n, H))
    c0 = rng.integers(-32768, 32768, size=H)
    c0[:2] = [32767, -32768]
    return acc, M, nn, h, c0


def _golden(kind, cfg, tables, acc, M, nn, h, c0, order):
    """Expected (h, c) per transfer, applying transfers in ``order`` (unit indices)."""
    c = c0.copy()
    out = []
    for step, j in order:
        z = requant_gates(acc[step][:, j : j + 1], M[:, j : j + 1], nn[:, j : j + 1])
        if kind == "lstm":
            h2, c2 = lstm_pointwise(z, c[j : j + 1], tables, cfg.cell_frac_bits)
            c[j] = c2[0]
            out.append((j, int(h2[0]), int(c2[0])))
        else:
            h2 = gru_pointwise(z, h[step][j : j + 1], tables)
            out.append((j, int(h2[0]), 0))
    return out


@pytest.mark.parametrize("kind,cell_frac_bits", [("lstm", 11), ("lstm", 12), ("gru", 11)])
def test_gate_unit(kind, cell_frac_bits):
    cfg = NPUConfig(pwl_shift=11, pwl_pieces=8, cell_frac_bits=cell_frac_bits)
    _check_gate_unit(kind, cfg, default_tables(cfg), np.random.default_rng(cell_frac_bits + (kind == "gru")))


def _random_table(rng, cfg: NPUConfig, in_frac_bits: int) -> PWLTable:
    """Any table SPEC §5 allows that the PWL unit takes: random knots, y and m over all of int16."""
    N = cfg.pwl_pieces
    while True:
        inner = np.sort(rng.choice(np.arange(-32767, 32767), N - 1, replace=False))
        t = PWLTable(
            np.concatenate([[-32768], inner, [32767]]),
            rng.choice([-32768, 32767, 0, *rng.integers(-32768, 32768, 5)], N),
            rng.choice([-32768, 32767, *rng.integers(-32768, 32768, 5)], N),
            cfg.pwl_shift,
            in_frac_bits=in_frac_bits,
        )
        try:
            t.check_hardware()
            return t
        except ValueError:
            continue


@pytest.mark.parametrize("kind,seed", [("lstm", 1), ("gru", 2)])
def test_gate_unit_arbitrary_tables(kind, seed):
    """Tables whose outputs span all of int16 (negative "sigmoids", -32768 tanh values): every
    product and sum of the state update must still match the golden model, which takes any table."""
    cfg = NPUConfig(pwl_shift=11, pwl_pieces=8)
    rng = np.random.default_rng(seed)
    tables = {k: _random_table(rng, cfg, f) for k, f in (("sigmoid", 12), ("tanh", 12), ("tanh_cell", 11))}
    _check_gate_unit(kind, cfg, tables, rng)


def _check_gate_unit(kind, cfg, tables, rng):
    n = 12
    acc, M, nn, h, c0 = _cases(kind, cfg, rng, n)
    dut = GateUnit(cfg, kind, hidden=H)  # tables written by the host, not built in
    writes = dut.mn_writes(M, nn) + dut.table_writes(tables) + (dut.c_writes(c0) if kind == "lstm" else [])
    order = [(s, int(j)) for s in range(n) for j in rng.permutation(H)]
    expected = _golden(kind, cfg, tables, acc, M, nn, h, c0, order)
    got = []
    pyr = random.Random(5)

    async def producer(ctx):
        for a, v in writes:
            ctx.set(dut.p_en, 1)
            ctx.set(dut.p_addr, a)
            ctx.set(dut.p_data, v)
            await ctx.tick()
        ctx.set(dut.p_en, 0)
        for step, j in order:
            p = dut.i_stream.payload
            ctx.set(p.unit, j)
            ctx.set(p.h, int(h[step][j]))
            for g in range(4):
                ctx.set(p.acc[g], int(acc[step][g, j]))
            ctx.set(dut.i_stream.valid, 1)
            await ctx.tick().until(dut.i_stream.ready)
            ctx.set(dut.i_stream.valid, 0)
            if pyr.random() < 0.3:
                await ctx.tick().repeat(pyr.randint(1, 5))

    async def consumer(ctx):
        while len(got) < len(order):
            ctx.set(dut.o_stream.ready, pyr.random() < 0.6)
            _, _, valid, ready, pl = await ctx.tick().sample(
                dut.o_stream.valid, dut.o_stream.ready, dut.o_stream.payload
            )
            if valid and ready:
                got.append((pl.unit, pl.h, pl.c))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    assert len(got) == len(expected)
    bad = [(i, g, e) for i, (g, e) in enumerate(zip(got, expected, strict=True)) if g != e]
    assert not bad, f"{len(bad)} of {len(order)} differ; first: {bad[:3]}"


def test_gate_unit_rejects_bad_params():
    cfg = NPUConfig(pwl_shift=11)
    with pytest.raises(ValueError, match="kind"):
        GateUnit(cfg, "rnn")
    with pytest.raises(ValueError, match="hidden"):
        GateUnit(cfg, "lstm", hidden=0)
    dut = GateUnit(cfg, "lstm", hidden=4)
    with pytest.raises(ValueError, match="out of range"):
        dut.mn_writes([[70000]] * 4, [[1]] * 4)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_gate_unit_cycles_per_unit(kind):
    """Back-to-back transfers with an always-ready output are accepted every cycles_per_unit cycles."""
    cfg = NPUConfig(pwl_pieces=4)
    dut = GateUnit(cfg, kind, hidden=4, tables=default_tables(cfg))
    accepted = []

    async def tb(ctx):
        ctx.set(dut.o_stream.ready, 1)
        ctx.set(dut.i_stream.valid, 1)
        for cycle in range(3 * dut.cycles_per_unit + 5):
            ctx.set(dut.i_stream.payload.unit, cycle % 4)
            _, _, valid, ready = await ctx.tick().sample(dut.i_stream.valid, dut.i_stream.ready)
            if valid and ready:
                accepted.append(cycle)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    gaps = {b - a for a, b in zip(accepted, accepted[1:], strict=False)}
    assert len(accepted) >= 3 and gaps == {dut.cycles_per_unit}


@pytest.mark.parametrize("ebr", [False, True])
def test_gate_unit_z_in_lstm(ebr):
    """z_in mode (the NPU's): int16 pre-activations in, ``first`` starts from c = 0; random stalls.
    ``ebr``: the iCE40 memory path (EBR primitives without read-during-write logic, hw/ebr.py's model)
    with the tables written through the parameter port, as the NPU loads them."""
    cfg = NPUConfig(pwl_pieces=16, cell_frac_bits=11)
    tables = default_tables(cfg)
    rng = np.random.default_rng(7)
    n = 10
    z = rng.integers(-32768, 32768, size=(n, 4, H))
    z[:2] = rng.choice([-32768, 32767, 0, -1, 1], size=(2, 4, H))  # extremes: clamps at both table ends
    z[2:5] = rng.integers(-6000, 6000, size=(3, 4, H))  # the tables' interesting range
    c0 = np.zeros(H, dtype=np.int64)  # the cell memory starts cleared; the host never writes it
    dut = GateUnit(cfg, "lstm", hidden=H, tables=None if ebr else tables, z_in=True, ebr_model=ebr)
    with pytest.raises(ValueError, match="first step starts from c = 0"):
        dut.c_writes(c0)
    order = [(s, int(j), bool(s % 4 == 3 and j % 2)) for s in range(n) for j in rng.permutation(H)]
    c = c0.copy()
    expected = []
    for step, j, first in order:
        h2, c2 = lstm_pointwise(z[step][:, j : j + 1], np.array([0 if first else c[j]]), tables, cfg.cell_frac_bits)
        c[j] = c2[0]
        expected.append((j, int(h2[0]), int(c2[0])))
    got = []
    pyr = random.Random(11)

    async def producer(ctx):
        if ebr:
            for a, v in dut.table_writes(tables):
                ctx.set(dut.p_en, 1)
                ctx.set(dut.p_addr, a)
                ctx.set(dut.p_data, v)
                await ctx.tick()
            ctx.set(dut.p_en, 0)
        for step, j, first in order:
            p = dut.i_stream.payload
            ctx.set(p.unit, j)
            ctx.set(p.first, first)
            for g in range(4):
                ctx.set(p.acc[g], int(z[step][g, j]))
            ctx.set(dut.i_stream.valid, 1)
            await ctx.tick().until(dut.i_stream.ready)
            ctx.set(dut.i_stream.valid, 0)
            if pyr.random() < 0.3:
                await ctx.tick().repeat(pyr.randint(1, 5))

    async def consumer(ctx):
        while len(got) < len(order):
            ctx.set(dut.o_stream.ready, pyr.random() < 0.6)
            _, _, valid, ready, pl = await ctx.tick().sample(
                dut.o_stream.valid, dut.o_stream.ready, dut.o_stream.payload
            )
            if valid and ready:
                got.append((pl.unit, pl.h, pl.c))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    bad = [(i, g, e) for i, (g, e) in enumerate(zip(got, expected, strict=True)) if g != e]
    assert len(got) == len(expected) and not bad, f"{len(bad)} of {len(order)} differ; first: {bad[:3]}"


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_gate_unit_z_in_cycles_per_unit(kind):
    """z_in mode: back-to-back transfers are accepted every cycles_per_unit cycles (quant.lstm_perf's model)."""
    from quant.lstm_perf import _Z_READ, unit_cycles

    cfg = NPUConfig(pwl_pieces=16)
    dut = GateUnit(cfg, kind, hidden=4, tables=default_tables(cfg), z_in=True)
    if kind == "lstm":
        assert unit_cycles(cfg) == _Z_READ + dut.cycles_per_unit  # the sequencer reads z, then hands over
    accepted = []

    async def tb(ctx):
        ctx.set(dut.o_stream.ready, 1)
        ctx.set(dut.i_stream.valid, 1)
        for cycle in range(3 * dut.cycles_per_unit + 5):
            ctx.set(dut.i_stream.payload.unit, cycle % 4)
            _, _, valid, ready = await ctx.tick().sample(dut.i_stream.valid, dut.i_stream.ready)
            if valid and ready:
                accepted.append(cycle)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    gaps = {b - a for a, b in zip(accepted, accepted[1:], strict=False)}
    assert len(accepted) >= 3 and gaps == {dut.cycles_per_unit}


#: Area budget of the NPU's gate unit on the iCE40UP5K (5280 LC, 30 EBR, 8 DSP), measured alone in
#: hw.synth's pin harness (its input shift register and output registers, about 190 LC, included).
UP5K_BUDGET = {"ICESTORM_LC": 850, "ICESTORM_RAM": 9, "ICESTORM_DSP": 2}  # measured: 793 LC, 53 MHz
UP5K_MHZ = 45.0


@pytest.mark.slow
def test_gate_unit_z_in_fits_up5k(tmp_path):
    """The z_in LSTM gate unit with the NPU's cell depth fits its UP5K budget at 45 MHz (Yosys -dsp),
    built as the NPU builds it (no build-time tables: the driver loads them)."""
    from hw.synth import synthesize
    from quant.gate_map import cell_depth

    cfg = NPUConfig()
    rep = synthesize(
        lambda: GateUnit(cfg, "lstm", cell_depth(cfg), z_in=True),
        "icebreaker",
        freq_mhz=UP5K_MHZ,
        build_dir=tmp_path,
        synth_opts="-dsp",
    )
    used = {k: rep.cells.get(k, (0, 0))[0] for k in UP5K_BUDGET}
    over = {k: v for k, v in used.items() if v > UP5K_BUDGET[k]}
    assert rep.fits and not over, f"over budget: {over} ({rep.summary()})"
    assert rep.fmax >= UP5K_MHZ, rep.summary()
