"""UART receiver and transmitter in amaranth.sim: several clock/baud ratios, senders off by ±2 %."""

import random

import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator

from hw.uart import UARTRx, UARTTx, uart_divisor


def _rx_run(divisor: int, frames: list[tuple[int, int]], skew: float, glitches: bool = False):
    """Send ``(byte, stop_level)`` frames with bit cells of ``divisor * (1 + skew)`` cycles.

    Returns (received bytes, framing error count).
    """
    dut = UARTRx(clk_hz=divisor * 1000, baud=1000)
    got, errors = [], [0]
    cell = divisor * (1 + skew)
    levels = []
    for byte, stop in frames:
        t0 = len(levels)
        bits = [0] + [(byte >> i) & 1 for i in range(8)] + [stop]
        end = t0 + round(10 * cell)
        for c in range(end - t0):
            levels.append(bits[min(9, int(c / cell))])
        levels += [1] * (3 + (2 * divisor if stop == 0 else 0))  # a short idle gap between frames
        if glitches:
            levels += [0] + [1] * (divisor + 3)  # a one-cycle low glitch on the idle line

    async def tb(ctx):
        ctx.set(dut.o_stream.ready, 1)
        for lv in levels + [1] * (3 * divisor):
            ctx.set(dut.rx, lv)
            await ctx.tick()
            if ctx.get(dut.o_stream.valid):
                got.append(ctx.get(dut.o_stream.payload))
            errors[0] += ctx.get(dut.framing_error)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return got, errors[0]


@pytest.mark.parametrize("divisor", [4, 7, 16, 35])
def test_rx_exact_clock(divisor):
    rng = random.Random(divisor)
    data = [0x00, 0xFF, 0x55, 0xAA] + [rng.randrange(256) for _ in range(4)]
    got, err = _rx_run(divisor, [(b, 1) for b in data], 0.0)
    assert got == data and err == 0


@pytest.mark.parametrize("divisor", [8, 16, 35])
@pytest.mark.parametrize("skew", [-0.02, 0.02])
def test_rx_sender_clock_off_by_2_percent(divisor, skew):
    rng = random.Random(divisor * 100 + int(skew * 100))
    data = [0x00, 0xFF, 0x80, 0x01] + [rng.randrange(256) for _ in range(4)]
    got, err = _rx_run(divisor, [(b, 1) for b in data], skew)
    assert got == data and err == 0


@pytest.mark.parametrize("divisor", [4, 5, 16])  # 4, 5: the samples start right at the edge
def test_rx_framing_error_and_glitch_rejection(divisor):
    frames = [(0x3C, 1), (0x99, 0), (0xC3, 1)]  # the middle frame has a low stop bit
    got, err = _rx_run(divisor, frames, 0.0, glitches=True)
    assert got == [0x3C, 0xC3] and err == 1


@pytest.mark.parametrize("divisor", [4, 13])
def test_tx_waveform(divisor):
    dut = UARTTx(clk_hz=divisor * 1000, baud=1000)
    data = [0x00, 0xFF, 0xA5, 0x5A, 0x81]
    line = []

    async def tb(ctx):
        for b in data:
            ctx.set(dut.i_stream.payload, b)
            ctx.set(dut.i_stream.valid, 1)
            while True:
                ready = ctx.get(dut.i_stream.ready)
                await ctx.tick()
                line.append(ctx.get(dut.tx))
                if ready:
                    break
            ctx.set(dut.i_stream.valid, 0)
        for _ in range(11 * divisor):
            await ctx.tick()
            line.append(ctx.get(dut.tx))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    # Decode the line like an ideal receiver: find each start edge, sample mid-cell.
    out, t = [], 0
    while t < len(line):
        if line[t] == 0:
            bits = [line[t + divisor // 2 + k * divisor] for k in range(10)]
            assert bits[0] == 0 and bits[9] == 1, f"bad frame at {t}: {bits}"
            out.append(sum(b << i for i, b in enumerate(bits[1:9])))
            t += 10 * divisor - divisor // 2  # inside the stop bit
        else:
            t += 1
    assert out == data


def test_uart_loopback():
    m = Module()
    m.submodules.tx = tx = UARTTx(clk_hz=10_000, baud=1000)
    m.submodules.rx = rx = UARTRx(clk_hz=10_000, baud=1000)
    m.d.comb += rx.rx.eq(tx.tx)
    data = [random.Random(3).randrange(256) for _ in range(6)]
    got = []

    async def tb(ctx):
        ctx.set(rx.o_stream.ready, 1)
        for b in data:
            ctx.set(tx.i_stream.payload, b)
            ctx.set(tx.i_stream.valid, 1)
            while True:
                ready = ctx.get(tx.i_stream.ready)
                await ctx.tick()
                if ctx.get(rx.o_stream.valid):
                    got.append(ctx.get(rx.o_stream.payload))
                if ready:
                    break
            ctx.set(tx.i_stream.valid, 0)
        for _ in range(150):
            await ctx.tick()
            if ctx.get(rx.o_stream.valid):
                got.append(ctx.get(rx.o_stream.payload))

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert got == data


def test_divisor_validation():
    assert uart_divisor(40_000_000, 115_200) == 347
    with pytest.raises(ValueError, match="too slow"):
        uart_divisor(300_000, 115_200)
    with pytest.raises(ValueError, match="off"):
        uart_divisor(1_000_000, 115_200)  # 8.68 cycles per bit: 9 is 4 % off
