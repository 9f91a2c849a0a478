"""A small complete device for the host link: UART (or a byte port) + HostInterface + memories.

``LinkTestTop`` is what the link's tests, ``shiftnpu sim-serve`` and a board bring-up talk to
before the NPU exists: every region of the memory map is a real :class:`amaranth.lib.memory.Memory`
behind the host interface's bus, and a stand-in "job" exercises ``start``/``status``: after a
start pulse the device is busy for as many cycles as user register 0 (register ``USER``) holds,
then sets the done bit.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out, connect

from quant.config import NPUConfig
from quant.memmap import check_memory_map, default_memory_map

from .hostif import HostInterface, MemBusSignature
from .uart import UARTRx, UARTTx

__all__ = ["LinkTestTop", "LinkCore", "STATUS_BUSY", "STATUS_DONE"]

STATUS_BUSY = 1 << 0
STATUS_DONE = 1 << 1


class LinkTestTop(wiring.Component):
    """Host link + memories + a stand-in job, as a top level.

    Parameters
    ----------
    config : NPUConfig
        Reported over the link; sets the UART divisor and the default memory map.
    regions : sequence of Region, optional
        Memory map; each region becomes one memory. Default: ``default_memory_map(config)``.
    uart : bool
        True: serial pins ``uart_rx``/``uart_tx`` through :class:`UARTRx`/:class:`UARTTx`.
        False: byte streams ``rx``/``tx`` straight into the host interface (fast simulation).
    idle_timeout : int, optional
        Passed to :class:`HostInterface`.
    ebr_model : bool
        Passed to :class:`HostInterface`: its block RAMs as the model of the iCE40 primitive.

    Members
    -------
    uart_rx : In(1), uart_tx : Out(1)
        Serial line (``uart=True``).
    rx : In(stream.Signature(8)), tx : Out(stream.Signature(8))
        Request and reply bytes (``uart=False``).
    """

    def __init__(
        self,
        config: NPUConfig,
        regions=None,
        *,
        uart: bool = False,
        idle_timeout: int | None = None,
        ebr_model: bool = False,
    ):
        self.config = config
        self.ebr_model = ebr_model
        self.regions = check_memory_map(default_memory_map(config) if regions is None else regions)
        self.uart = uart
        self.idle_timeout = idle_timeout
        if uart:
            ports = {"uart_rx": In(1, init=1), "uart_tx": Out(1, init=1)}
        else:
            ports = {"rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8))}
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        m.submodules.hostif = hostif = HostInterface(
            cfg, self.regions, idle_timeout=self.idle_timeout, ebr_model=self.ebr_model
        )
        if self.uart:
            m.submodules.uart_rx = urx = UARTRx(clk_hz=cfg.clk_hz, baud=cfg.baud)
            m.submodules.uart_tx = utx = UARTTx(clk_hz=cfg.clk_hz, baud=cfg.baud)
            m.d.comb += [urx.rx.eq(self.uart_rx), self.uart_tx.eq(utx.tx), hostif.framing_error.eq(urx.framing_error)]
            connect(m, urx.o_stream, hostif.i_stream)
            connect(m, hostif.o_stream, utx.i_stream)
        else:
            connect(m, wiring.flipped(self.rx), hostif.i_stream)
            connect(m, hostif.o_stream, wiring.flipped(self.tx))

        # One memory per region; reads answer one cycle after the request.
        bus = hostif.bus
        m.d.comb += bus.ready.eq(1)
        rd_region = Signal.like(bus.region)
        m.d.sync += [bus.rvalid.eq(bus.valid & ~bus.we), rd_region.eq(bus.region)]
        for r_id, r in enumerate(self.regions):
            mem = Memory(shape=r.width, depth=r.depth, init=[])
            m.submodules[f"mem_{r.name}"] = mem
            wp = mem.write_port()
            rp = mem.read_port()
            sel = bus.region == r_id
            m.d.comb += [
                wp.addr.eq(bus.addr),
                wp.data.eq(bus.wdata),
                wp.en.eq(bus.valid & bus.we & sel),
                rp.addr.eq(bus.addr),
            ]
            with m.If(rd_region == r_id):
                m.d.comb += bus.rdata.eq(rp.data)

        # Stand-in job: busy for USER-register-0 cycles after each start.
        left = Signal(32)
        done = Signal()
        with m.If(hostif.start):
            m.d.sync += [left.eq(hostif.regs[0]), done.eq(hostif.regs[0] == 0)]
        with m.Elif(left != 0):
            m.d.sync += left.eq(left - 1)
            with m.If(left == 1):
                m.d.sync += done.eq(1)
        m.d.comb += hostif.status.eq((left != 0) * STATUS_BUSY | done * STATUS_DONE)
        return m


class LinkCore(wiring.Component):
    """The host link as the NPU instantiates it (UARTs + HostInterface), its design-side ports as ports.

    For area and timing measurements of the link alone (``hw.synth.synthesize(lambda: LinkCore(cfg),
    ...)``): the memory bus, ``start`` and ``status`` are ports; the USER registers are left
    unconnected, as in :class:`hw.npu.NPU`, so their flip-flops are not counted.

    Parameters
    ----------
    config : NPUConfig
    regions : sequence of Region, optional
        Default: the NPU's memory map (:func:`quant.memmap.npu_memory_map`).
    """

    def __init__(self, config: NPUConfig, regions=None):
        from quant.memmap import npu_memory_map

        self.config = config
        self.regions = check_memory_map(npu_memory_map(config) if regions is None else regions)
        bus = MemBusSignature(  # as HostInterface sizes it
            region_bits=max(1, (len(self.regions) - 1).bit_length()),
            addr_width=max(r.addr_width for r in self.regions),
            data_width=max(r.width for r in self.regions),
        )
        super().__init__(
            {"uart_rx": In(1, init=1), "uart_tx": Out(1, init=1), "bus": Out(bus), "start": Out(1), "status": In(32)}
        )

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        m.submodules.hostif = hostif = HostInterface(cfg, self.regions)
        m.submodules.uart_rx = urx = UARTRx(clk_hz=cfg.clk_hz, baud=cfg.baud)
        m.submodules.uart_tx = utx = UARTTx(clk_hz=cfg.clk_hz, baud=cfg.baud)
        m.d.comb += [urx.rx.eq(self.uart_rx), self.uart_tx.eq(utx.tx), hostif.framing_error.eq(urx.framing_error)]
        connect(m, urx.o_stream, hostif.i_stream)
        connect(m, hostif.o_stream, utx.i_stream)
        connect(m, hostif.bus, wiring.flipped(self.bus))
        m.d.comb += [self.start.eq(hostif.start), hostif.status.eq(self.status)]
        return m
