"""cocotb helpers: a device's link ports, as bytes in and bytes out.

``BytePort`` drives the byte streams ``rx``/``tx`` of a link top (``uart=False``) one clock at a
time; ``UARTPort`` bit-bangs the serial pins ``uart_rx``/``uart_tx`` of a top with real UARTs. Both
sample the design's outputs at the falling edge, when they are stable for the coming rising edge.
"""

from __future__ import annotations

from collections import deque

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, First, RisingEdge, Timer

__all__ = ["start_clock", "BytePort", "UARTPort", "CLK_NS"]

CLK_NS = 10


async def start_clock(dut) -> None:
    cocotb.start_soon(Clock(dut.clk, CLK_NS, unit="ns", impl="gpi").start())
    dut.rst.value = 1
    await RisingEdge(dut.clk)
    await RisingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst.value = 0


class BytePort:
    """Byte-stream ports ``rx`` (to the device) and ``tx`` (from it)."""

    def __init__(self, dut):
        self.dut = dut
        self.out = bytearray()
        dut.rx__valid.value = 0
        dut.tx__ready.value = 0

    async def step(self, pending: deque, *, accept: bool = True) -> None:
        """One clock: offer ``pending[0]`` (popped if taken), take a reply byte if ``accept``."""
        dut = self.dut
        if pending:
            dut.rx__payload.value = pending[0]
            dut.rx__valid.value = 1
            if int(dut.rx__ready.value):
                pending.popleft()
        else:
            dut.rx__valid.value = 0
        dut.tx__ready.value = int(accept)
        if accept and int(dut.tx__valid.value):
            self.out.append(int(dut.tx__payload.value))
        await FallingEdge(dut.clk)

    async def wait_tx(self, cycles: int) -> bool:
        """Nothing to send and nothing to take: let up to ``cycles`` clocks run without waking Python
        every clock, until the device raises ``tx.valid`` (held back by ``tx.ready = 0`` meanwhile).
        Returns whether it did. Like :meth:`step`, it ends just after a falling edge."""
        dut = self.dut
        dut.rx__valid.value = 0
        dut.tx__ready.value = 0
        await First(RisingEdge(dut.tx__valid), Timer(cycles * CLK_NS, unit="ns"))
        await FallingEdge(dut.clk)
        return self.tx_pending

    async def idle(self, cycles: int) -> None:
        """Let the clock run freely (outputs held back by ``tx.ready = 0``, nothing offered)."""
        self.dut.rx__valid.value = 0
        self.dut.tx__ready.value = 0
        await Timer(cycles * CLK_NS, unit="ns")
        await FallingEdge(self.dut.clk)

    @property
    def tx_pending(self) -> bool:
        return bool(int(self.dut.tx__valid.value))

    def take(self) -> bytes:
        data, self.out = bytes(self.out), bytearray()
        return data


class UARTPort:
    """Serial pins ``uart_rx``/``uart_tx``, ``divisor`` clocks per bit, 8N1."""

    def __init__(self, dut, divisor: int):
        self.dut = dut
        self.divisor = divisor
        self.out = bytearray()
        dut.uart_rx.value = 1
        cocotb.start_soon(self._monitor())

    async def _monitor(self) -> None:
        dut, bit = self.dut, self.divisor * CLK_NS
        while True:
            await FallingEdge(dut.uart_tx)
            await Timer(bit // 2, unit="ns")
            if int(dut.uart_tx.value):
                continue  # glitch
            value = 0
            for i in range(8):
                await Timer(bit, unit="ns")
                value |= int(dut.uart_tx.value) << i
            await Timer(bit, unit="ns")
            if int(dut.uart_tx.value):
                self.out.append(value)
            else:
                dut._log.error("framing error on uart_tx")

    async def send(self, byte: int) -> None:
        bit = self.divisor * CLK_NS
        for level in [0] + [(byte >> i) & 1 for i in range(8)] + [1]:
            self.dut.uart_rx.value = level
            await Timer(bit, unit="ns")

    async def idle(self, cycles: int) -> None:
        await Timer(cycles * CLK_NS, unit="ns")

    def take(self) -> bytes:
        data, self.out = bytes(self.out), bytearray()
        return data
