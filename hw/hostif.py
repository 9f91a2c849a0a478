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

The datapath is a byte wide almost everywhere, because the wire gives it thousands of clocks per
byte: one byte RAM holds the INFO reply, the registers and the error counters (incremented a byte
at a time), every reply byte passes through one output register, and the one word-wide register
is the bus word (read from the bus, or assembled from staging bytes). docs/architecture.md has
the area and timing figures.
"""

from __future__ import annotations

import struct

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from quant.config import NPUConfig
from quant.memmap import Region, check_memory_map, default_memory_map

from .byteram import ByteRAM
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
    "byte_ram_layout",
    "link_memories",
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


def byte_ram_layout(info_len: int) -> tuple[int, int, int]:
    """Where the link's byte RAM keeps the 16 registers and the counters, and its depth, in bytes.

    The INFO reply comes first; the register and counter blocks start on 64-byte boundaries, so
    their addresses are bit fields.
    """
    reg_base = -(-info_len // 64) * 64
    cnt_base = reg_base + 4 * N_REGS
    return reg_base, cnt_base, cnt_base + 4 * Counter.COUNT


def link_memories(config: NPUConfig, regions) -> list[tuple[str, int, int]]:
    """The host link's block RAMs as (name, depth, width): the staging buffer and the byte RAM."""
    info_len = len(info_payload(config, check_memory_map(regions), 0))
    return [("link staging", config.max_payload, 8), ("link byte RAM", byte_ram_layout(info_len)[2], 8)]


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
    ebr_model : bool
        Build the block RAMs from the simulation model of the iCE40 primitive (hw/byteram.py), to
        test the iCE40 path in simulation.

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
        The general-purpose registers ``USER .. USER + 7`` (0 at configuration: they and the error
        counters live in block RAM, which a design reset does not clear).
    framing_error : In(1)
        Pulse from the UART receiver, counted in the ``FRAMING_ERRORS`` counter.
    """

    def __init__(self, config: NPUConfig, regions=None, *, idle_timeout: int | None = None, ebr_model: bool = False):
        if not isinstance(config, NPUConfig):
            raise TypeError(f"expected an NPUConfig, got {type(config).__name__}")
        self.config = config
        self.ebr_model = ebr_model
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
        n_reg = len(regions)
        max_wb = max(r.word_bytes for r in regions)
        aw, rb = self.addr_width, self.region_bits
        n_info = len(self.info)

        # One byte-wide block RAM holds the INFO reply, the 16 registers (4 bytes each: the ID, the
        # reserved zeros, USER0..7; STATUS and CYCLES are read live) and the error counters. Both
        # bases are 64-aligned, so a register or counter address is a bit field, not a sum.
        reg_base, cnt_base, depth = byte_ram_layout(n_info)
        ident = (REG_ID_MAGIC | cfg.protocol_version).to_bytes(4, "little")
        init = list(self.info) + [0] * (reg_base - n_info) + list(ident) + [0] * (depth - reg_base - 4)
        m.submodules.bytemem = bytemem = ByteRAM(depth, init, model=self.ebr_model)

        # Requests and replies never overlap (the protocol is strictly request/reply), so one CRC
        # register serves both directions.
        m.submodules.crc = crc = CRC16()
        m.submodules.staging = staging = ByteRAM(maxp, model=self.ebr_model)

        # -- receive side ----------------------------------------------------------------------
        # payload bytes still to come (loaded with the length bytes); later the reply length, counted
        # up for READ_MEM and down while the reply payload goes out
        left = Signal(16)
        left_up = Signal()
        left_step = (left + Cat(Const(1, 1), Mux(left_up, 0, 0x7FFF)))[:16]
        # `left == 0` and `left == 1` as flip-flops (the FSM's decisions then start at a register):
        # a copy of the compares one cycle late, valid because `left` stays unchanged for at least a
        # cycle before every test, except where it is stepped on a received byte (the next byte may
        # follow at once): there the flags are set for the new value (see PAYLOAD). CMD, right after
        # the length's last byte, tests the byte compares themselves.
        left_z, left_1 = Signal(), Signal()
        # byte compares as nets of their own (keep), so that the flags are two LUT levels from them
        lo_0, lo_1, lo_2, hi_0 = (Signal(name=n, attrs={"keep": 1}) for n in ("lo_0", "lo_1", "lo_2", "hi_0"))
        m.d.comb += [
            lo_0.eq(left[0:8] == 0),
            lo_1.eq(left[0:8] == 1),
            lo_2.eq(left[0:8] == 2),
            hi_0.eq(left[8:16] == 0),
        ]
        m.d.sync += [left_z.eq(lo_0 & hi_0), left_1.eq(lo_1 & hi_0)]
        cmd = Signal(8)  # also echoed in the reply
        pidx = Signal(range(maxp + 1))  # staging address: payload bytes received / committed
        m.d.comb += [staging.addr.eq(pidx), staging.wdata.eq(i.payload)]
        oversize = Signal()  # the payload is being skipped (len > max_payload)
        hsel = Signal(8)  # one-hot position in the payload header (bit 7: past it); in a reply, the header byte
        rbyte = Signal(8)  # payload byte 0: region or register index
        addr = Signal(aw)  # word address (the low bits of payload bytes 1..4); counts up while accessing
        addr_hi = Signal()  # address bits above aw are set
        val0 = Signal()  # bit 0 of a WRITE_REG value (CONTROL: start)
        cnt_hi = Signal()  # bits of the READ_MEM count above `words` are set
        wbm1 = Signal(range(max_wb))  # word bytes of the addressed region, minus one
        bpos = Signal(range(max_wb))  # byte within the current word
        words = Signal(range(maxp + 1))  # WRITE_MEM: whole data words received; READ_MEM: the count (low bits)
        len0, len1, len5, len7, len_ge5 = Signal(), Signal(), Signal(), Signal(), Signal()
        idle = Signal(range(self.idle_timeout + 1))

        # -- checks ----------------------------------------------------------------------------
        crc_ok = Signal()
        is_info, is_start, is_status, is_errors = Signal(), Signal(), Signal(), Signal()
        is_wmem, is_rmem, is_wreg, is_rreg = Signal(), Signal(), Signal(), Signal()
        is_other = Signal()  # none of the commands
        # decoded from the command byte's register, a cycle after it (the flags are first used
        # two bytes after the command: at payload byte 5, or in CHECK after the CRC bytes)
        m.d.sync += [
            is_info.eq(cmd == Command.INFO),
            is_start.eq(cmd == Command.START),
            is_status.eq(cmd == Command.STATUS),
            is_errors.eq(cmd == Command.ERRORS),
            is_wmem.eq(cmd == Command.WRITE_MEM),
            is_rmem.eq(cmd == Command.READ_MEM),
            is_wreg.eq(cmd == Command.WRITE_REG),
            is_rreg.eq(cmd == Command.READ_REG),
            is_other.eq(~Cat(cmd == x for x in Command.ALL).any()),
        ]
        # one adder: a WRITE_MEM payload counts its words up; the READ_MEM length count and the
        # WRITE_MEM commit count them down
        words_up = Signal()
        words_step = (words + Mux(words_up, 1, (1 << len(words)) - 1))[: len(words)]
        region_ok, aligned, count_bad, depth_ok = Signal(), Signal(), Signal(), Signal()
        last = Signal(max(aw, len(words)) + 1)  # addr + words, registered in CHECK
        reg_user, reg_ctl, reg_exists = Signal(), Signal(), Signal()
        over, no_words = Signal(), Signal()  # READ_MEM length count: past max_payload / all words counted

        # -- reply side ------------------------------------------------------------------------
        rstatus = Signal(4)
        obyte = Signal(8)  # the byte on o_stream (registered)
        m.d.comb += o.payload.eq(obyte)
        sh = Signal(8 * max_wb)  # a memory word: read from the bus, or assembled from staging bytes
        snap = Signal(32)  # the STATUS or CYCLES value being sent (a snapshot: no torn value)
        selc = Signal()  # the next snapshot is CYCLES
        ptr = Signal(range(depth))  # byte memory address of the next reply / register byte
        src_mem, src_snap, src_bus = Signal(), Signal(), Signal()  # where reply payload bytes come from
        j = Signal(range(len(sh) // 8 + 1))  # bytes of the word being assembled
        jpad = Signal()  # ... all its data bytes are in: pad bytes follow (registered: off the FSM's path)
        cycles = Signal(32)
        # the bus request fields are always driven (only `valid` says when): no gating logic
        m.d.comb += [bus.we.eq(is_wmem), bus.region.eq(rbyte[:rb]), bus.addr.eq(addr), bus.wdata.eq(sh)]

        # -- error counters: one byte-serial increment at a time, requested by pending bits ------
        pend_reply, pend_frame, pend_sync = Signal(), Signal(), Signal()
        upd = Signal(2)  # 0 idle, 1 read, 2 add one, 3 write (then the next byte if it carried)
        usum = Signal(8)
        ucarry = Signal()
        uidx = Signal(4)  # counter being incremented
        ub = Signal(2)  # byte of the counter
        # The byte memory is addressed by the updater while it runs, else by the FSM's pointer; both
        # ports share the address, so the read-during-write logic stays small.
        baddr = Mux(upd != 0, Cat(ub, uidx, Const(cnt_base >> 6)), ptr)
        m.d.comb += bytemem.addr.eq(baddr)
        rf_free = Signal()  # the FSM may use the byte memory (no count in flight or pending)
        m.d.comb += rf_free.eq((upd == 0) & ~pend_reply & ~pend_frame & ~pend_sync)
        pick = Mux(pend_reply, rstatus, Mux(pend_frame, Counter.FRAMING_ERRORS, Counter.SYNC_DISCARDS))
        m.d.comb += bytemem.wdata.eq(staging.rdata)  # a register write copies a staging byte
        with m.Switch(upd):
            with m.Case(0):
                with m.If(pend_reply | pend_frame | pend_sync):
                    m.d.sync += [uidx.eq(pick[:4]), ub.eq(0), upd.eq(1)]
                    with m.If(pend_reply):
                        m.d.sync += pend_reply.eq(0)
                    with m.Elif(pend_frame):
                        m.d.sync += pend_frame.eq(0)
                    with m.Else():
                        m.d.sync += pend_sync.eq(0)
            with m.Case(1):
                m.d.sync += upd.eq(2)
            with m.Case(2):  # registered: the block RAM's output is slow on an ECP5
                m.d.sync += [usum.eq(bytemem.rdata + 1), ucarry.eq(bytemem.rdata == 0xFF), upd.eq(3)]
            with m.Case(3):
                m.d.comb += [bytemem.wdata.eq(usum), bytemem.we.eq(1)]
                with m.If(ucarry & (ub != 3)):
                    m.d.sync += [ub.eq(ub + 1), upd.eq(1)]
                with m.Else():
                    m.d.sync += upd.eq(0)
        with m.If(self.framing_error):  # after the updater's clear: a new event re-arms the bit
            m.d.sync += pend_frame.eq(1)

        user = [Signal(32, name=f"user{k}") for k in range(N_USER_REGS)]  # copies for the design
        m.d.comb += [self.regs[k].eq(user[k]) for k in range(N_USER_REGS)]

        m.d.comb += crc.data.eq(Mux(o.valid, obyte, i.payload))
        m.d.sync += self.start.eq(0)
        with m.If(self.start):
            m.d.sync += cycles.eq(0)
        with m.Elif(self.status[0]):
            m.d.sync += cycles.eq(cycles + 1)

        def reply(code):
            """Start the reply for the current request and have it counted under its status."""
            m.d.sync += [rstatus.eq(code), pend_reply.eq(1), hsel.eq(1)]
            m.next = "TX_HDR"

        def capture(dst, dst_hi, lo):
            """Payload byte -> bits lo..lo+7 of a field kept as its low bits plus a sticky "higher bits set"."""
            n = max(0, min(8, len(dst) - lo))
            if n:
                m.d.sync += dst[lo : lo + n].eq(i.payload[:n])
            if n < 8:
                m.d.sync += dst_hi.eq(dst_hi | (i.payload[n:] != 0))

        def rx_state(name, nxt=None):
            """Common part of the receive states: take bytes into the CRC, abandon on idle."""
            m.d.comb += [i.ready.eq(1), in_frame.eq(1), crc.en.eq(i.valid)]
            if nxt is not None:
                with m.If(i.valid):
                    m.next = nxt
            with m.If(~i.valid & timed_out):
                m.next = "ABORT"

        got = i.valid & i.ready
        in_frame = Signal()
        with m.If(in_frame & ~got):
            m.d.sync += idle.eq(idle + 1)
        with m.Else():
            m.d.sync += idle.eq(0)
        # registered a cycle ahead (the comparator is wide): high exactly when idle == idle_timeout
        timed_out = Signal()
        m.d.sync += timed_out.eq(in_frame & ~got & (idle == self.idle_timeout - 1))

        with m.FSM(name="link") as fsm:
            with m.State("SYNC"):
                # stalls while the previous discard is still being counted, so none is lost
                m.d.comb += [i.ready.eq(~pend_sync), crc.clear.eq(1)]
                m.d.sync += [cmd.eq(0), oversize.eq(0)]  # a TIMEOUT before the command byte echoes 0
                with m.If(i.valid & ~pend_sync):
                    with m.If(i.payload == SYNC_REQUEST):
                        m.next = "LEN0"
                    with m.Else():
                        m.d.sync += pend_sync.eq(1)

            # (the length bytes are loaded while waiting too: the last load is the byte's)
            with m.State("LEN0"):
                rx_state("LEN0", "LEN1")
                m.d.sync += left[0:8].eq(i.payload)
            with m.State("LEN1"):
                rx_state("LEN1", "CMD")
                m.d.sync += left[8:16].eq(i.payload)

            with m.State("CMD"):
                rx_state("CMD")
                hi0, lo = hi_0, left[0:8]
                m.d.sync += [
                    pidx.eq(0),
                    bpos.eq(0),
                    words.eq(0),
                    wbm1.eq(0),
                    hsel.eq(1),
                    addr_hi.eq(0),
                    cnt_hi.eq(0),
                    len0.eq(hi0 & (lo == 0)),
                    len1.eq(hi0 & (lo == 1)),
                    len5.eq(hi0 & (lo == 5)),
                    len7.eq(hi0 & (lo == 7)),
                    len_ge5.eq(~hi0 | (lo >= 5)),
                ]
                with m.If(i.valid):
                    m.d.sync += [cmd.eq(i.payload), oversize.eq(left > maxp)]
                    with m.If(lo_0 & hi_0):
                        m.next = "CRC0"
                    with m.Else():
                        m.next = "PAYLOAD"

            with m.State("PAYLOAD"):
                # An oversize payload cannot be buffered: it is skipped (and its CRC after it), and
                # the reply is OVERSIZE, also when the frame stops early.
                rx_state("PAYLOAD")
                m.d.comb += words_up.eq(1)
                m.d.comb += staging.we.eq(i.valid & ~oversize)
                with m.If(i.valid):
                    m.d.sync += [left_z.eq(lo_1 & hi_0), left_1.eq(lo_2 & hi_0)]  # the flags of left - 1
                    m.d.sync += [
                        pidx.eq(pidx + 1),
                        left.eq(left_step),
                        hsel.eq(Cat(Const(0, 1), hsel[0:6], hsel[6] | hsel[7])),
                    ]
                    with m.If(hsel[0]):
                        m.d.sync += rbyte.eq(i.payload)
                        with m.Switch(i.payload):
                            for r_id, r in enumerate(regions):
                                with m.Case(r_id):
                                    m.d.sync += wbm1.eq(r.word_bytes - 1)
                    for b in range(4):
                        with m.If(hsel[1 + b]):
                            capture(addr, addr_hi, 8 * b)
                            if b == 0:
                                m.d.sync += val0.eq(i.payload[0])
                    with m.If(is_rmem):  # the count
                        for b in range(2):
                            with m.If(hsel[5 + b]):
                                capture(words, cnt_hi, 8 * b)
                    with m.Elif(hsel[5] | hsel[6] | hsel[7]):
                        # Count whole data words as they arrive (a WRITE_MEM length check without a divider).
                        with m.If(bpos == wbm1):
                            m.d.sync += [bpos.eq(0), words.eq(words_step)]
                        with m.Else():
                            m.d.sync += bpos.eq(bpos + 1)
                    with m.If(left_1):
                        m.next = "CRC0"

            with m.State("CRC0"):
                rx_state("CRC0", "CRC1")
            with m.State("CRC1"):
                rx_state("CRC1", "CHECK")
                with m.If(i.valid & oversize):
                    m.next = "ABORT"

            with m.State("ABORT"):  # the frame stopped arriving, or an oversize one was skipped
                m.d.sync += left.eq(0)
                reply(Mux(oversize, Status.OVERSIZE, Status.TIMEOUT))

            # -- checks, registered one by one so the decision itself is a short priority chain ---
            with m.State("CHECK"):
                live = is_rreg & ((rbyte == Reg.STATUS) | (rbyte == Reg.CYCLES))
                m.d.sync += [
                    crc_ok.eq(crc.zero),
                    count_bad.eq((words == 0) | cnt_hi),
                    reg_user.eq(rbyte[3:8] == Reg.USER >> 3),
                    reg_ctl.eq(rbyte == Reg.CONTROL),
                    reg_exists.eq(rbyte < N_REGS),
                    over.eq(0),
                    no_words.eq(0),
                    region_ok.eq(rbyte < n_reg),
                    aligned.eq((bpos == 0) & (words != 0)),
                    src_bus.eq(is_rmem),
                    src_snap.eq(is_status | live),
                    src_mem.eq(~is_rmem & ~is_status & ~live),
                    selc.eq(is_rreg & (rbyte == Reg.CYCLES)),
                    bpos.eq(0),
                    # the reply length if OK (READ_MEM: counted in LENGTH)
                    left.eq(
                        Mux(is_info, n_info, 0)
                        | Mux(is_status, 8, 0)
                        | Mux(is_errors, 4 * Counter.COUNT, 0)
                        | Mux(is_rreg, 4, 0)
                    ),
                ]
                # one past the last word accessed (compared against the region's depth in LENGTH)
                m.d.sync += last.eq(addr + words)
                m.next = "LENGTH"

            # READ_MEM: count the reply bytes, a word at a time, until `count` words are done; running
            # past max_payload is the "count > max_payload / word_bytes" check, without a divider.
            # Both stop conditions are registered a step ahead (they are off the FSM's path).
            with m.State("LENGTH"):
                # the depth check from the sum registered in CHECK (LENGTH lasts a cycle at least,
                # and moves neither addr nor last)
                m.d.sync += depth_ok.eq(0)
                with m.Switch(rbyte[:rb]):
                    for r_id, r in enumerate(regions):
                        with m.Case(r_id):
                            m.d.sync += depth_ok.eq(~addr_hi & (last <= r.depth))
                with m.If(~is_rmem | count_bad | over | no_words):
                    m.d.sync += count_bad.eq(count_bad | over)
                    m.next = "DECIDE"
                with m.Else():
                    m.d.comb += left_up.eq(1)
                    m.d.sync += [left.eq(left_step), over.eq(left >= maxp)]
                    with m.If(bpos == wbm1):
                        m.d.sync += [bpos.eq(0), words.eq(words_step), no_words.eq(words == 1)]
                    with m.Else():
                        m.d.sync += bpos.eq(bpos + 1)

            # The decision is a priority chain over the registered checks (docs/protocol.md order),
            # written as one short chain per command class (a few flags each) OR-ed under the
            # one-hot command flags, so that no chain runs through all the classes.
            def chain(*steps):
                v = Const(Status.OK, 4)
                for cond, c in reversed(steps):
                    v = Mux(cond, c, v)
                return v

            BL, BR, BA, BG = Status.BAD_LENGTH, Status.BAD_REGION, Status.BAD_ADDRESS, Status.BAD_REGISTER
            per_class = [
                (is_info | is_start | is_status | is_errors, chain((~len0, BL))),
                (is_wmem, chain((~len_ge5, BL), (~region_ok, BR), (~aligned, BL), (~depth_ok, BA))),
                (is_rmem, chain((~len7, BL), (~region_ok, BR), (count_bad, BL), (~depth_ok, BA))),
                (is_wreg, chain((~len5, BL), (~reg_ctl & ~reg_user, BG))),
                (is_rreg, chain((~len1, BL), (~reg_exists, BG))),
                (is_other, Const(Status.UNKNOWN_CMD, 4)),
            ]
            any_code = Const(0, 4)
            for sel_c, c in per_class:
                any_code = any_code | Mux(sel_c, c, 0)
            code = Signal(4)
            go_commit, go_regwr, do_start = Signal(), Signal(), Signal()
            act_commit, act_regwr, act_start = Signal(), Signal(), Signal()
            with m.State("DECIDE"):
                m.d.comb += [
                    code.eq(Mux(crc_ok, any_code, Status.BAD_CRC)),
                    go_commit.eq(crc_ok & is_wmem & len_ge5 & region_ok & aligned & depth_ok),
                    # CONTROL (reg_ctl, never with reg_user): bit 0 pulses start
                    do_start.eq(crc_ok & ((is_start & len0) | (is_wreg & len5 & reg_ctl & val0))),
                    go_regwr.eq(crc_ok & is_wreg & len5 & reg_user),
                ]

                m.d.sync += [
                    bpos.eq(0),
                    j.eq(0),
                    jpad.eq(0),
                    pidx.eq(Mux(is_wreg, 1, 5)),
                    ptr.eq(
                        Mux(
                            is_errors,
                            cnt_base,
                            Mux(is_rreg | is_wreg, Cat(Const(0, 2), rbyte[0:4], Const(reg_base >> 6)), 0),
                        )
                    ),
                ]
                # registered, and acted on in ACT (the chain is this block's longest path)
                m.d.sync += [rstatus.eq(code), act_commit.eq(go_commit), act_regwr.eq(go_regwr), act_start.eq(do_start)]
                m.next = "ACT"
            with m.State("ACT"):
                with m.If(act_commit):
                    m.next = "COMMIT_RD"
                with m.Elif(act_regwr):
                    m.next = "REG_RD"
                with m.Else():
                    m.d.sync += self.start.eq(act_start)
                    with m.If(rstatus != Status.OK):  # a refusal has no payload
                        m.d.sync += left.eq(0)
                    reply(rstatus)

            # WRITE_REG to USERn: the value's four staging bytes -> the byte memory and the copy.
            with m.State("REG_RD"):  # staging.rdata shows the staging byte at pidx from the next cycle
                with m.If(rf_free):  # and the updater cannot start in REG_WR's cycle: nothing is pending
                    m.next = "REG_WR"
            with m.State("REG_WR"):
                m.d.comb += bytemem.we.eq(1)
                with m.Switch(Cat(ptr[0:2], rbyte[0:3])):
                    for k in range(4 * N_USER_REGS):
                        with m.Case(k):
                            m.d.sync += user[k // 4].word_select(k % 4, 8).eq(staging.rdata)
                m.d.sync += [ptr.eq(ptr + 1), pidx.eq(pidx + 1)]
                with m.If(ptr[0:2] == 3):
                    m.next = "DONE"
                with m.Else():
                    m.next = "REG_RD"

            with m.State("DONE"):  # a write has been carried out (`left` is 0)
                reply(Status.OK)

            # WRITE_MEM commit: staging bytes -> a word (shifted into sh from the top, padded to
            # its width) -> bus, only after every check passed. Bytes above the region's word
            # are stale; the memory ignores them.
            shift_in = Cat(sh[8:], staging.rdata)
            with m.State("COMMIT_RD"):  # the staging byte at pidx is read (or a pad byte shifted)
                with m.If(~jpad):
                    m.next = "COMMIT_CAP"
                with m.Else():
                    m.d.sync += [sh.eq(shift_in), j.eq(j + 1)]
                    with m.If(j == len(sh) // 8 - 1):
                        m.next = "COMMIT_WR"
            with m.State("COMMIT_CAP"):
                m.d.sync += [sh.eq(shift_in), j.eq(j + 1), pidx.eq(pidx + 1), jpad.eq(j == wbm1)]
                with m.If(j == len(sh) // 8 - 1):
                    m.next = "COMMIT_WR"
                with m.Else():
                    m.next = "COMMIT_RD"
            with m.State("COMMIT_WR"):
                m.d.comb += bus.valid.eq(1)
                with m.If(bus.ready):
                    m.d.sync += [addr.eq(addr + 1), j.eq(0), jpad.eq(0), words.eq(words_step)]
                    with m.If(words == 1):
                        m.next = "DONE"
                    with m.Else():
                        m.next = "COMMIT_RD"

            # -- reply: every byte goes through obyte. The header and the CRC bytes are selected by
            # the one-hot hsel; payload bytes come from one of three sources.
            with m.State("TX_HDR"):
                with m.If(hsel[0]):
                    m.d.comb += crc.clear.eq(1)
                misc = (
                    Const(SYNC_REPLY, 8),
                    left[0:8],
                    left[8:16],
                    cmd,
                    rstatus,
                    crc.crc[8:16],
                    crc.crc[0:8],
                )
                sel = Const(0, 8)
                for k, v in enumerate(misc):
                    sel = sel | Mux(hsel[k], v, 0)
                m.d.sync += obyte.eq(sel)
                m.next = "TX_HDR_SEND"
            with m.State("TX_HDR_SEND"):
                # the sync byte and the CRC itself are outside the CRC
                m.d.comb += [o.valid.eq(1), crc.en.eq(o.ready & (hsel[1:5] != 0))]
                with m.If(o.ready):
                    m.d.sync += hsel.eq(hsel << 1)
                    with m.If(hsel[6]):
                        m.next = "SYNC"
                    with m.Elif(~hsel[4]):
                        m.next = "TX_HDR"
                    with m.Elif(~left_z):
                        m.next = "TX_FETCH"
                    with m.Else():
                        m.next = "TX_HDR"

            with m.State("TX_FETCH"):  # exactly one source flag is set (decoded in CHECK)
                with m.If(src_bus):
                    with m.If(bpos == 0):
                        m.next = "TX_BUS"
                    with m.Else():
                        m.next = "TX_LOAD"
                with m.If(src_snap):
                    with m.If(ptr[0:2] == 0):  # a snapshot per word
                        m.d.sync += [snap.eq(Mux(selc, cycles, self.status)), selc.eq(1)]
                    m.next = "TX_LOAD"
                with m.If(src_mem & rf_free):  # the counters must include every pending count
                    m.next = "TX_LOAD"  # the block RAM answers one cycle after its address (ptr)
            with m.State("TX_BUS"):
                m.d.comb += bus.valid.eq(1)
                with m.If(bus.ready):
                    m.d.sync += addr.eq(addr + 1)
                    m.next = "TX_WAIT"
            with m.State("TX_WAIT"):
                with m.If(bus.rvalid):
                    m.d.sync += sh.eq(bus.rdata)
                    m.next = "TX_LOAD"
            with m.State("TX_LOAD"):
                m.d.sync += obyte.eq(Mux(src_mem, bytemem.rdata, Mux(src_snap, snap.word_select(ptr[0:2], 8), sh[0:8])))
                m.d.sync += [sh.eq(shift_in), bpos.eq(Mux(bpos == wbm1, 0, bpos + 1))]
                m.next = "TX_SEND"

            with m.State("TX_SEND"):
                m.d.comb += [o.valid.eq(1), crc.en.eq(o.ready)]
                with m.If(o.ready):
                    m.next = "TX_NEXT"
            with m.State("TX_NEXT"):  # (the counters step a cycle after `ready`: off the UART's path)
                m.d.sync += [ptr.eq(ptr + 1), left.eq(left_step)]
                with m.If(left_1):
                    m.next = "TX_HDR"  # hsel is at the CRC's high byte
                with m.Else():
                    m.next = "TX_FETCH"
        # Ask Yosys for a one-hot state register: its detection skips a register with an initial
        # value (Amaranth's FSMs all have one).
        fsm.state.attrs["fsm_encoding"] = "one-hot"
        return m
