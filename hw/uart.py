"""8N1 UART receiver and transmitter with stream interfaces.

The bit period is a whole number of clock cycles, ``divisor = round(clk_hz / baud)``; the rounding
error must stay under 1 % so that, together with the sender's own clock error, the receiver still
samples every bit of a frame inside its bit cell. The receiver oversamples: it watches the line on
every clock, re-times itself on each start-bit edge, and decides every bit by a majority of three
samples around the middle of the bit cell, so a one-cycle glitch neither starts a false frame nor
flips a bit.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["UARTRx", "UARTTx", "uart_divisor"]


def uart_divisor(clk_hz: int, baud: int) -> int:
    """Clock cycles per bit; ``ValueError`` if the clock is too slow or the baud rate too inexact."""
    if clk_hz <= 0 or baud <= 0:
        raise ValueError(f"clock ({clk_hz} Hz) and baud rate ({baud}) must be positive")
    divisor = round(clk_hz / baud)
    if divisor < 4:
        raise ValueError(f"a {clk_hz} Hz clock is too slow for {baud} baud: need at least 4 cycles per bit")
    error = abs(clk_hz / divisor - baud) / baud
    if error > 0.01:
        raise ValueError(
            f"{clk_hz} Hz / {divisor} = {clk_hz / divisor:.0f} baud is {error:.1%} off {baud} baud (at most 1 %)"
        )
    return divisor


class UARTRx(wiring.Component):
    """8N1 receiver.

    Parameters
    ----------
    clk_hz, baud : int
        Clock frequency and baud rate (see :func:`uart_divisor`).

    Members
    -------
    rx : In(1)
        The serial line (idle high). Synchronized inside.
    o_stream : Out(stream.Signature(8))
        Received bytes. ``valid`` holds until ``ready``.
    framing_error : Out(1)
        One-cycle pulse: a frame ended with a low stop bit; its byte is dropped.
    overrun : Out(1)
        One-cycle pulse: a byte arrived while the previous one was still unread; the new byte is dropped.
    """

    rx: In(1, init=1)
    o_stream: Out(stream.Signature(8))
    framing_error: Out(1)
    overrun: Out(1)

    def __init__(self, *, clk_hz: int, baud: int):
        self.divisor = uart_divisor(clk_hz, baud)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        half = d // 2
        line = Signal(init=1)
        m.submodules.sync_rx = FFSynchronizer(self.rx, line, init=1)

        count = Signal(range(d))  # cycle within the current bit cell
        bit = Signal(range(10))  # 0 = start bit, 1..8 data bits, 9 = stop bit
        votes = Signal(2)  # ones seen among the three samples around mid-cell
        shreg = Signal(8)
        busy = Signal()
        # The three samples sit at half-1, half, half+1; the decision is taken at half+1. Both
        # flags are registered from the count a cycle earlier (count only steps by one while busy,
        # and neither is set when a frame ends), so the compares are off the decision's path.
        sample, decide = Signal(), Signal()
        m.d.sync += [sample.eq((count == half - 2) | (count == half - 1)), decide.eq(count == half)]
        value = (votes + line) >= 2  # majority, including this cycle's sample

        with m.If(self.o_stream.ready):
            m.d.sync += self.o_stream.valid.eq(0)
        m.d.sync += [self.framing_error.eq(0), self.overrun.eq(0)]

        with m.If(~busy):
            with m.If(~line):  # start-bit edge: the cell began this cycle
                m.d.sync += [busy.eq(1), count.eq(1), bit.eq(0), votes.eq(0)]
                m.d.sync += [sample.eq(half - 1 == 1), decide.eq(0)]  # the flags for count 1
        with m.Else():
            m.d.sync += count.eq(count + 1)
            with m.If(count == d - 1):
                m.d.sync += [count.eq(0), bit.eq(bit + 1), votes.eq(0)]
            with m.If(sample):
                m.d.sync += votes.eq(votes + line)
            with m.If(decide):
                with m.If(bit == 0):
                    with m.If(value):  # glitch, not a start bit
                        m.d.sync += busy.eq(0)
                with m.Elif(bit <= 8):
                    m.d.sync += shreg.eq((value << 7) | (shreg >> 1))
                with m.Else():
                    # Stop bit decided at mid-cell: hunt for the next start edge from here, so a
                    # slightly fast sender cannot slip a cell per byte.
                    m.d.sync += busy.eq(0)
                    with m.If(~value):
                        m.d.sync += self.framing_error.eq(1)
                    with m.Elif(self.o_stream.valid & ~self.o_stream.ready):
                        m.d.sync += self.overrun.eq(1)
                    with m.Else():
                        m.d.sync += [self.o_stream.payload.eq(shreg), self.o_stream.valid.eq(1)]
        return m


class UARTTx(wiring.Component):
    """8N1 transmitter.

    Parameters
    ----------
    clk_hz, baud : int
        Clock frequency and baud rate (see :func:`uart_divisor`).

    Members
    -------
    i_stream : In(stream.Signature(8))
        Bytes to send; one is taken whenever the transmitter is idle.
    tx : Out(1)
        The serial line (idle high).
    busy : Out(1)
        A frame is being sent.
    """

    i_stream: In(stream.Signature(8))
    tx: Out(1, init=1)
    busy: Out(1)

    def __init__(self, *, clk_hz: int, baud: int):
        self.divisor = uart_divisor(clk_hz, baud)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        count = Signal(range(d))
        bits = Signal(range(11))  # bits left to send, including the stop bit
        shreg = Signal(10, init=0x3FF)
        # ``idle`` is a register of its own: ``ready`` fans out to the sender's whole byte path
        idle = Signal(init=1)
        m.d.comb += [self.tx.eq(shreg[0]), self.busy.eq(~idle)]
        m.d.comb += self.i_stream.ready.eq(idle)
        with m.If(idle):
            with m.If(self.i_stream.valid):
                m.d.sync += [
                    shreg.eq((1 << 9) | (self.i_stream.payload << 1)),
                    bits.eq(10),
                    count.eq(0),
                    idle.eq(0),
                ]
        with m.Else():
            m.d.sync += count.eq(count + 1)
            with m.If(count == d - 1):
                m.d.sync += [count.eq(0), bits.eq(bits - 1), shreg.eq((1 << 9) | (shreg >> 1))]
                with m.If(bits == 1):
                    m.d.sync += idle.eq(1)
        return m
