"""The device side of the host link: frame parser, CRC check, command dispatch, replies.

The host talks to the design through framed requests over a byte stream (a UART on a board, a
byte-level bridge in simulation); docs/protocol.md is the reference for every frame, command and
error code. This block turns those frames into

* accesses on a generic memory bus (:class:`MemBusSignature`): word reads and writes to numbered
  regions (activation, weight, output memories, ...) of one address space,
* a 16-entry register file: identification, a ``start`` pulse, the design's ``status``, a cycle
  counter, and eight general-purpose registers the design reads (:attr:`HostInterface.regs`),
* an ``INFO`` reply carrying the protocol version, the full :class:`~quant.config.NPUConfig` and
  the memory map, and error counters the host can read.

A write request is buffered whole in a staging memory and reaches the bus only after its CRC and
every range check passed, so a corrupted or refused request never leaves a partial write. A frame
that stops arriving (no byte for ``idle_timeout`` cycles) is abandoned with a ``TIMEOUT`` reply
and the parser goes back to hunting for the sync byte.
"""

from __future__ import annotations

import struct

from amaranth.hdl import Array, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from quant.config import NPUConfig
from quant.memmap import Region, check_memory_map, default_memory_map

from .crc import CRC16

__all__ = [
    "HostInterface",
    "MemBusSignature",
    "Command",
    "Status",
    "Counter",
    "Reg",
    "SYNC_REQUEST",
    "SYNC_REPLY",
    "REG_ID_MAGIC",
    "N_REGS",
    "N_USER_REGS",
    "info_payload",
]

SYNC_REQUEST = 0xA5
SYNC_REPLY = 0x5A
REG_ID_MAGIC = 0x534E0000  # "SN" in the high half of register 0; the protocol version in the low half
N_REGS = 16
N_USER_REGS = 8


class Command:
    """Request command codes (docs/protocol.md, "Commands")."""

    INFO = 0x01
    WRITE_MEM = 0x02
    READ_MEM = 0x03
    WRITE_REG = 0x04
    READ_REG = 0x05
    START = 0x06
    STATUS = 0x07
    ERRORS = 0x08
    ALL = (INFO, WRITE_MEM, READ_MEM, WRITE_REG, READ_REG, START, STATUS, ERRORS)


class Status:
    """Reply status codes; each one also indexes the error counter that counts its replies."""

    OK = 0
    BAD_CRC = 1
    UNKNOWN_CMD = 2
    BAD_LENGTH = 3
    OVERSIZE = 4
    BAD_REGION = 5
    BAD_ADDRESS = 6
    BAD_REGISTER = 7
    TIMEOUT = 8
    COUNT = 9


class Counter:
    """Error counters after the per-status ones (indices 0..8 count replies by status)."""

    SYNC_DISCARDS = Status.COUNT  # bytes dropped while hunting for the sync byte
    FRAMING_ERRORS = Status.COUNT + 1  # UART frames with a bad stop bit
    COUNT = Status.COUNT + 2


class Reg:
    """Register indices (docs/protocol.md, "Registers")."""

    ID = 0
    CONTROL = 1
    STATUS = 2
    CYCLES = 3
    USER = 8  # USER .. USER + 7 are general purpose, read/write


class MemBusSignature(wiring.Signature):
    """A request/response memory port, seen from the master.

    A request is transferred on a cycle with ``valid & ready``: it writes ``wdata`` to word
    ``addr`` of region ``region`` when ``we``, else it reads that word, which the slave returns
    later (any latency, in order) on ``rdata`` with ``rvalid`` high for one cycle. The master has
    at most one read outstanding.

    Members
    -------
    valid, we : Out(1)
    region : Out(region_bits)
    addr : Out(addr_width)
    wdata : Out(data_width)
    ready : In(1)
    rvalid : In(1)
    rdata : In(data_width)
    """

    def __init__(self, *, region_bits: int, addr_width: int, data_width: int):
        self.region_bits, self.addr_width, self.data_width = region_bits, addr_width, data_width
        super().__init__(
            {
                "valid": Out(1),
                "we": Out(1),
                "region": Out(region_bits),
                "addr": Out(addr_width),
                "wdata": Out(data_width),
                "ready": In(1),
                "rvalid": In(1),
                "rdata": In(data_width),
            }
        )


def info_payload(config: NPUConfig, regions, idle_timeout: int) -> bytes:
    """The ``INFO`` reply payload this device sends (the layout is in docs/protocol.md)."""
    out = bytearray(struct.pack("<HHIBB", config.protocol_version, config.max_payload, idle_timeout, N_REGS, 0))
    out[-1] = Counter.COUNT
    items = config.to_dict()
    out.append(len(items))
    for name, value in items.items():
        b = name.encode("ascii")
        out += bytes([len(b)]) + b + struct.pack("<I", value)
    out.append(len(regions))
    for r in regions:
        b = r.name.encode("ascii")
        out += bytes([len(b)]) + b + struct.pack("<HI", r.width, r.depth)
    return bytes(out)


class HostInterface(wiring.Component):
    """Framed host protocol over a byte stream, mastering a memory bus and a register file.

    Parameters
    ----------
    config : NPUConfig
        Reported by ``INFO``; its ``max_payload`` sizes the staging buffer and limits requests.
    regions : sequence of Region, optional
        The memory map (region id = index). Default: :func:`quant.memmap.default_memory_map`.
    idle_timeout : int, optional
        Cycles without a byte after which a half-received frame is abandoned. Default: 20 ms of
        ``config.clk_hz``, longer than the gaps a USB-serial adapter leaves inside a frame.

    Members
    -------
    i_stream : In(stream.Signature(8))
        Request bytes from the host (UART receiver).
    o_stream : Out(stream.Signature(8))
        Reply bytes to the host (UART transmitter).
    bus : Out(MemBusSignature)
        Memory accesses toward the design.
    start : Out(1)
        One-cycle pulse on a ``START`` command or a write of bit 0 of the ``CONTROL`` register.
    status : In(32)
        Design status, readable as register ``STATUS``; bit 0 means busy (the cycle counter runs).
    regs : Out(ArrayLayout(32, 8))
        The general-purpose registers ``USER .. USER + 7`` (reset to 0).
    framing_error : In(1)
        Pulse from the UART receiver, counted in the ``FRAMING_ERRORS`` counter.
    """

    def __init__(self, config: NPUConfig, regions=None, *, idle_timeout: int | None = None):
        if not isinstance(config, NPUConfig):
            raise TypeError(f"expected an NPUConfig, got {type(config).__name__}")
        self.config = config
        self.regions: tuple[Region, ...] = check_memory_map(default_memory_map(config) if regions is None else regions)
        self.idle_timeout = max(16, config.clk_hz // 50) if idle_timeout is None else idle_timeout
        if not 4 <= self.idle_timeout < 1 << 32:
            raise ValueError(f"idle_timeout must be in [4, 2**32) cycles, got {self.idle_timeout}")
        widest = max(r.word_bytes for r in self.regions)
        if config.max_payload < 5 + widest:
            raise ValueError(
                f"max_payload ({config.max_payload}) cannot hold a write of one {widest}-byte word (needs {5 + widest})"
            )
        self.info = info_payload(config, self.regions, self.idle_timeout)
        if len(self.info) > 0xFFFF:
            raise ValueError("the INFO reply exceeds 65535 bytes")
        self.data_width = max(r.width for r in self.regions)
        self.addr_width = max(r.addr_width for r in self.regions)
        self.region_bits = max(1, (len(self.regions) - 1).bit_length())
        super().__init__(
            {
                "i_stream": In(stream.Signature(8)),
                "o_stream": Out(stream.Signature(8)),
                "bus": Out(
                    MemBusSignature(
                        region_bits=self.region_bits, addr_width=self.addr_width, data_width=self.data_width
                    )
                ),
                "start": Out(1),
                "status": In(32),
                "regs": Out(data.ArrayLayout(32, N_USER_REGS)),
                "framing_error": In(1),
            }
        )

    def elaborate(self, platform):  # noqa: C901 - one FSM, read top to bottom with docs/protocol.md
        m = Module()
        cfg, regions = self.config, self.regions
        maxp = cfg.max_payload
        i, o, bus = self.i_stream, self.o_stream, self.bus

        m.submodules.rcrc = rcrc = CRC16()
        m.submodules.tcrc = tcrc = CRC16()
        m.submodules.staging = staging = Memory(shape=8, depth=maxp, init=[])
        st_w = staging.write_port()
        st_r = staging.read_port()
        m.submodules.rom = rom = Memory(shape=8, depth=len(self.info), init=list(self.info))
        rom_r = rom.read_port()

        counters = Array(Signal(32, name=f"counter{k}") for k in range(Counter.COUNT))
        user = Array(Signal(32, name=f"user{k}") for k in range(N_USER_REGS))
        m.d.comb += [self.regs[k].eq(user[k]) for k in range(N_USER_REGS)]
        cycles = Signal(32)

        # Per-region constants, selected by the region byte of the request.
        n_reg = len(regions)
        wb_t = Array(Const(r.word_bytes, 8) for r in regions)
        depth_t = Array(Const(r.depth, 33) for r in regions)
        maxwords_t = Array(Const(maxp // r.word_bytes, 17) for r in regions)

        # -- receive side ----------------------------------------------------------------------
        plen = Signal(16)  # payload length of the frame being received
        cmd = Signal(8)
        pidx = Signal(16)  # payload bytes received so far
        hdr = Signal(64)  # payload bytes 0..7 (region/index, address, count/value)
        region = hdr[0:8]
        addr = hdr[8:40]
        count16 = hdr[40:56]
        reg_idx = hdr[0:8]
        reg_val = hdr[8:40]
        region_ok = region < n_reg
        wb = Signal(8)
        m.d.comb += wb.eq(Mux(region_ok, wb_t[region], 1))
        bpos = Signal(8)  # byte within the current data word of a WRITE_MEM payload
        words = Signal(16)  # whole data words in a WRITE_MEM payload
        discard = Signal(17)
        idle = Signal(range(self.idle_timeout + 1))

        # -- reply side ------------------------------------------------------------------------
        rcmd = Signal(8)
        rstatus = Signal(8)
        rlen = Signal(16)  # reply payload bytes
        rem = Signal(16)  # reply payload bytes still to send
        hidx = Signal(3)  # reply header byte index
        ptr = Signal(17)  # next ROM byte / word / counter to fetch
        txw = Signal(max(32, 8 * max(r.word_bytes for r in regions)))
        txn = Signal(8)  # bytes left in txw
        cur = Signal(self.addr_width)  # word address of the next memory access
        depth_ok = Signal()  # the access stays inside its region
        count = Signal(17)  # words of a memory access
        k = Signal(17)  # words done
        j = Signal(8)  # byte within a word being committed
        wbuf = Signal(8 * max(r.word_bytes for r in regions))

        m.d.comb += [rcrc.data.eq(i.payload), tcrc.data.eq(o.payload)]
        m.d.sync += self.start.eq(0)
        with m.If(self.start):
            m.d.sync += cycles.eq(0)
        with m.Elif(self.status[0]):
            m.d.sync += cycles.eq(cycles + 1)
        with m.If(self.framing_error):
            m.d.sync += counters[Counter.FRAMING_ERRORS].eq(counters[Counter.FRAMING_ERRORS] + 1)

        # Every reply is counted under its status by one shared incrementer (replies are at most
        # one per cycle), rather than one 32-bit adder per place a reply starts.
        count_en = Signal()
        count_sel = Signal(range(Status.COUNT))
        count_en_r = Signal()
        count_sel_r = Signal(range(Status.COUNT))
        # Registered first: the status decision is a long path, the increment another.
        m.d.sync += [count_en_r.eq(count_en), count_sel_r.eq(count_sel)]
        with m.If(count_en_r):
            m.d.sync += counters[count_sel_r].eq(counters[count_sel_r] + 1)

        def reply(code: int, length=0):
            """Start the reply for the current request and count it under its status."""
            m.d.sync += [rstatus.eq(code), rlen.eq(length), rem.eq(length), rcmd.eq(cmd), hidx.eq(0), ptr.eq(0)]
            m.d.comb += [count_en.eq(1), count_sel.eq(code)]
            m.next = "TX_HDR"

        got = i.valid & i.ready
        in_frame = Signal()
        with m.If(in_frame & ~got):
            m.d.sync += idle.eq(idle + 1)
        with m.Else():
            m.d.sync += idle.eq(0)
        timed_out = idle == self.idle_timeout

        with m.FSM(name="link"):
            with m.State("SYNC"):
                m.d.comb += [i.ready.eq(1), rcrc.clear.eq(1)]
                m.d.sync += cmd.eq(0)  # a TIMEOUT before the command byte echoes command 0
                with m.If(i.valid):
                    with m.If(i.payload == SYNC_REQUEST):
                        m.next = "LEN0"
                    with m.Else():
                        m.d.sync += counters[Counter.SYNC_DISCARDS].eq(counters[Counter.SYNC_DISCARDS] + 1)

            for state, nxt, action in (
                ("LEN0", "LEN1", plen[0:8].eq(i.payload)),
                ("LEN1", "CMD", plen[8:16].eq(i.payload)),
            ):
                with m.State(state):
                    m.d.comb += [i.ready.eq(1), in_frame.eq(1), rcrc.en.eq(i.valid)]
                    with m.If(i.valid):
                        m.d.sync += action
                        m.next = nxt
                    with m.Elif(timed_out):
                        reply(Status.TIMEOUT)

            with m.State("CMD"):
                m.d.comb += [i.ready.eq(1), in_frame.eq(1), rcrc.en.eq(i.valid)]
                m.d.sync += [pidx.eq(0), hdr.eq(0), bpos.eq(0), words.eq(0)]
                with m.If(i.valid):
                    m.d.sync += cmd.eq(i.payload)
                    with m.If(plen > maxp):
                        m.d.sync += discard.eq(plen + 2)
                        m.next = "DISCARD"
                    with m.Elif(plen == 0):
                        m.next = "CRC0"
                    with m.Else():
                        m.next = "PAYLOAD"
                with m.Elif(timed_out):
                    reply(Status.TIMEOUT)

            with m.State("PAYLOAD"):
                m.d.comb += [i.ready.eq(1), in_frame.eq(1), rcrc.en.eq(i.valid)]
                m.d.comb += [st_w.addr.eq(pidx), st_w.data.eq(i.payload), st_w.en.eq(i.valid)]
                with m.If(i.valid):
                    m.d.sync += pidx.eq(pidx + 1)
                    with m.If(pidx < 8):
                        m.d.sync += hdr.word_select(pidx[:3], 8).eq(i.payload)
                    with m.If(pidx >= 5):
                        # Count whole data words as they arrive (a WRITE_MEM length check without a divider).
                        with m.If(bpos + 1 == wb):
                            m.d.sync += [bpos.eq(0), words.eq(words + 1)]
                        with m.Else():
                            m.d.sync += bpos.eq(bpos + 1)
                    with m.If(pidx + 1 == plen):
                        m.next = "CRC0"
                with m.Elif(timed_out):
                    reply(Status.TIMEOUT)

            with m.State("CRC0"):
                m.d.comb += [i.ready.eq(1), in_frame.eq(1), rcrc.en.eq(i.valid)]
                with m.If(i.valid):
                    m.next = "CRC1"
                with m.Elif(timed_out):
                    reply(Status.TIMEOUT)

            with m.State("CRC1"):
                m.d.comb += [i.ready.eq(1), in_frame.eq(1), rcrc.en.eq(i.valid)]
                with m.If(i.valid):
                    m.next = "PRECHECK"
                with m.Elif(timed_out):
                    reply(Status.TIMEOUT)

            with m.State("DISCARD"):
                # Oversize: the payload cannot be buffered, so it is skipped; the reply follows
                # its last byte (or the idle timeout, if the frame was shorter than it claimed).
                m.d.comb += [i.ready.eq(1), in_frame.eq(1)]
                with m.If(i.valid):
                    m.d.sync += discard.eq(discard - 1)
                    with m.If(discard == 1):
                        reply(Status.OVERSIZE)
                with m.Elif(timed_out):
                    reply(Status.OVERSIZE)

            # The address-range check is two carry chains (a 34-bit add, then a compare): one
            # cycle each, so it never limits the clock.
            end = Signal(34)  # one past the last word accessed
            with m.State("PRECHECK"):
                m.d.sync += end.eq(addr + Mux(cmd == Command.READ_MEM, count16, words))
                m.next = "PRECHECK2"
            with m.State("PRECHECK2"):
                m.d.sync += depth_ok.eq(region_ok & (end <= depth_t[region]))
                m.next = "CHECK"

            with m.State("CHECK"):
                m.d.sync += [cur.eq(addr), k.eq(0), j.eq(0), ptr.eq(0), wbuf.eq(0)]
                with m.If(~rcrc.zero):
                    reply(Status.BAD_CRC)
                with m.Elif(
                    (cmd == Command.INFO) | (cmd == Command.START) | (cmd == Command.STATUS) | (cmd == Command.ERRORS)
                ):
                    with m.If(plen != 0):
                        reply(Status.BAD_LENGTH)
                    with m.Elif(cmd == Command.INFO):
                        reply(Status.OK, len(self.info))
                    with m.Elif(cmd == Command.START):
                        m.d.sync += self.start.eq(1)
                        reply(Status.OK)
                    with m.Elif(cmd == Command.STATUS):
                        reply(Status.OK, 8)
                    with m.Else():
                        reply(Status.OK, 4 * Counter.COUNT)
                with m.Elif(cmd == Command.WRITE_MEM):
                    with m.If(plen < 5):
                        reply(Status.BAD_LENGTH)
                    with m.Elif(~region_ok):
                        reply(Status.BAD_REGION)
                    with m.Elif((bpos != 0) | (words == 0)):
                        reply(Status.BAD_LENGTH)
                    with m.Elif(~depth_ok):
                        reply(Status.BAD_ADDRESS)
                    with m.Else():
                        m.d.sync += [count.eq(words), pidx.eq(5)]
                        m.next = "COMMIT_RD"
                with m.Elif(cmd == Command.READ_MEM):
                    with m.If(plen != 7):
                        reply(Status.BAD_LENGTH)
                    with m.Elif(~region_ok):
                        reply(Status.BAD_REGION)
                    with m.Elif((count16 == 0) | (count16 > maxwords_t[region])):
                        reply(Status.BAD_LENGTH)
                    with m.Elif(~depth_ok):
                        reply(Status.BAD_ADDRESS)
                    with m.Else():
                        m.d.sync += count.eq(count16)
                        # The reply length is count * word_bytes, a product with a per-region constant.
                        with m.Switch(region):
                            for r_id, r in enumerate(regions):
                                with m.Case(r_id):
                                    reply(Status.OK, count16 * r.word_bytes)
                with m.Elif(cmd == Command.WRITE_REG):
                    writable = (reg_idx == Reg.CONTROL) | ((reg_idx >= Reg.USER) & (reg_idx < Reg.USER + N_USER_REGS))
                    with m.If(plen != 5):
                        reply(Status.BAD_LENGTH)
                    with m.Elif(~writable):
                        reply(Status.BAD_REGISTER)
                    with m.Else():
                        with m.If(reg_idx == Reg.CONTROL):
                            m.d.sync += self.start.eq(reg_val[0])
                        with m.Else():
                            m.d.sync += user[reg_idx[:3]].eq(reg_val)
                        reply(Status.OK)
                with m.Elif(cmd == Command.READ_REG):
                    with m.If(plen != 1):
                        reply(Status.BAD_LENGTH)
                    with m.Elif(reg_idx >= N_REGS):
                        reply(Status.BAD_REGISTER)
                    with m.Else():
                        reply(Status.OK, 4)
                with m.Else():
                    reply(Status.UNKNOWN_CMD)

            # WRITE_MEM commit: staging bytes -> words -> bus, only after every check passed.
            with m.State("COMMIT_RD"):
                m.d.comb += st_r.addr.eq(pidx)
                m.next = "COMMIT_CAP"
            with m.State("COMMIT_CAP"):
                m.d.sync += [wbuf.word_select(j, 8).eq(st_r.data), pidx.eq(pidx + 1)]
                with m.If(j + 1 == wb):
                    m.d.sync += j.eq(0)
                    m.next = "COMMIT_WR"
                with m.Else():
                    m.d.sync += j.eq(j + 1)
                    m.d.comb += st_r.addr.eq(pidx + 1)
                    m.next = "COMMIT_CAP"
            with m.State("COMMIT_WR"):
                m.d.comb += [
                    bus.valid.eq(1),
                    bus.we.eq(1),
                    bus.region.eq(region),
                    bus.addr.eq(cur),
                    bus.wdata.eq(wbuf),
                ]
                with m.If(bus.ready):
                    m.d.sync += [k.eq(k + 1), cur.eq(cur + 1), wbuf.eq(0)]
                    with m.If(k + 1 == count):
                        reply(Status.OK)
                    with m.Else():
                        m.next = "COMMIT_RD"

            # -- reply ---------------------------------------------------------------------------
            with m.State("TX_HDR"):
                hdr_bytes = Array([Const(SYNC_REPLY, 8), rlen[0:8], rlen[8:16], rcmd, rstatus])
                m.d.comb += [o.valid.eq(1), o.payload.eq(hdr_bytes[hidx]), tcrc.clear.eq(hidx == 0)]
                m.d.comb += tcrc.en.eq(o.ready & (hidx != 0))
                with m.If(o.ready):
                    m.d.sync += hidx.eq(hidx + 1)
                    with m.If(hidx == 4):
                        m.next = "TX_NEXT"

            with m.State("TX_NEXT"):
                with m.If(rem == 0):
                    m.next = "TX_CRC0"
                with m.Else():
                    m.next = "TX_FETCH"

            with m.State("TX_FETCH"):
                with m.Switch(rcmd):
                    with m.Case(Command.INFO):
                        m.d.comb += rom_r.addr.eq(ptr)
                        m.d.sync += ptr.eq(ptr + 1)
                        m.next = "TX_ROM"
                    with m.Case(Command.READ_MEM):
                        m.d.comb += [bus.valid.eq(1), bus.region.eq(region), bus.addr.eq(cur)]
                        with m.If(bus.ready):
                            m.d.sync += cur.eq(cur + 1)
                            m.next = "TX_WAIT"
                    with m.Case(Command.READ_REG):
                        reg_read = Signal(32)
                        with m.Switch(reg_idx):
                            with m.Case(Reg.ID):
                                m.d.comb += reg_read.eq(REG_ID_MAGIC | cfg.protocol_version)
                            with m.Case(Reg.STATUS):
                                m.d.comb += reg_read.eq(self.status)
                            with m.Case(Reg.CYCLES):
                                m.d.comb += reg_read.eq(cycles)
                            for u in range(N_USER_REGS):
                                with m.Case(Reg.USER + u):
                                    m.d.comb += reg_read.eq(user[u])
                        m.d.sync += [txw.eq(reg_read), txn.eq(4)]
                        m.next = "TX_DATA"
                    with m.Case(Command.STATUS):
                        m.d.sync += [txw.eq(Mux(ptr == 0, self.status, cycles)), txn.eq(4), ptr.eq(ptr + 1)]
                        m.next = "TX_DATA"
                    with m.Default():  # ERRORS
                        m.d.sync += [txw.eq(counters[ptr[:4]]), txn.eq(4), ptr.eq(ptr + 1)]
                        m.next = "TX_DATA"

            with m.State("TX_ROM"):  # the ROM answers one cycle after its address
                m.d.sync += [txw.eq(rom_r.data), txn.eq(1)]
                m.next = "TX_DATA"

            with m.State("TX_WAIT"):
                with m.If(bus.rvalid):
                    m.d.sync += [txw.eq(bus.rdata), txn.eq(wb)]
                    m.next = "TX_DATA"

            with m.State("TX_DATA"):
                m.d.comb += [o.valid.eq(1), o.payload.eq(txw[0:8]), tcrc.en.eq(o.ready)]
                with m.If(o.ready):
                    m.d.sync += [txw.eq(txw >> 8), txn.eq(txn - 1), rem.eq(rem - 1)]
                    with m.If(rem == 1):
                        m.next = "TX_CRC0"
                    with m.Elif(txn == 1):
                        m.next = "TX_FETCH"

            with m.State("TX_CRC0"):
                m.d.comb += [o.valid.eq(1), o.payload.eq(tcrc.crc[8:16])]
                with m.If(o.ready):
                    m.next = "TX_CRC1"
            with m.State("TX_CRC1"):
                m.d.comb += [o.valid.eq(1), o.payload.eq(tcrc.crc[0:8])]
                with m.If(o.ready):
                    m.next = "SYNC"
        return m
