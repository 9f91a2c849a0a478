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

from amaranth.hdl import Cat, Const, Module, Mux, Signal
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
        The general-purpose registers ``USER .. USER + 7`` (0 at configuration: they and the error
        counters live in block RAM, which a design reset does not clear).
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
        n_reg = len(regions)
        max_wb = max(r.word_bytes for r in regions)
        aw = self.addr_width
        nw = maxp.bit_length()  # a word count that passes the length checks fits in nw bits

        # Requests and replies never overlap (the protocol is strictly request/reply), so one CRC
        # register serves both directions.
        m.submodules.crc = crc = CRC16()
        m.submodules.staging = staging = Memory(shape=8, depth=maxp, init=[])
        st_w, st_r = staging.write_port(), staging.read_port()
        m.submodules.rom = rom = Memory(shape=8, depth=len(self.info), init=list(self.info))
        rom_r = rom.read_port()
        # The error counters (addresses 0..10) and the USER registers (addresses 24..31) live in one
        # block RAM rather than in 600 flip-flops and their read multiplexers.
        m.submodules.regfile = regfile = Memory(shape=32, depth=32, init=[])
        rf_r, rf_w = regfile.read_port(), regfile.write_port()
        user_base = 32 - N_USER_REGS

        # -- receive side ----------------------------------------------------------------------
        plen = Signal(16)  # payload length of the frame being received
        cmd = Signal(8)  # also echoed in the reply
        pidx = Signal(range(maxp + 1))  # payload bytes received so far (staging address)
        left = Signal(16)  # payload bytes still to come
        # Both ports are addressed by pidx (writes while receiving, reads while committing), so
        # the read-during-write logic Yosys wraps around a block RAM reduces to nothing.
        m.d.comb += [st_w.addr.eq(pidx), st_r.addr.eq(pidx)]
        oversize = Signal()  # the payload is being skipped (len > max_payload)
        hdr = Signal(56)  # payload bytes 0..6 (region/index, address/value, count)
        region, addr, count16 = hdr[0:8], hdr[8:40], hdr[40:56]
        reg_idx, reg_val = hdr[0:8], hdr[8:40]
        wb = Signal(range(max_wb + 1))  # word bytes of the addressed region (1 if there is none)
        wb_last = Signal(range(max_wb))
        bpos = Signal(range(max_wb))  # byte within the current data word of a WRITE_MEM payload
        words = Signal(range(maxp + 1))  # whole data words in a WRITE_MEM payload
        idle = Signal(range(self.idle_timeout + 1))

        # -- checks, registered one by one so the decision itself is a short priority chain -------
        crc_ok = Signal()
        is_info, is_start, is_status, is_errors = Signal(), Signal(), Signal(), Signal()
        is_wmem, is_rmem, is_wreg, is_rreg = Signal(), Signal(), Signal(), Signal()
        len0, len1, len5, len7, len_ge5 = Signal(), Signal(), Signal(), Signal(), Signal()
        region_ok = Signal()
        aligned = Signal()  # a WRITE_MEM payload of a whole, non-zero number of words
        count_bad = Signal()  # a READ_MEM count of 0 or more than max_payload / word_bytes
        cnt_zero, cnt_over = Signal(), Signal(n_reg)
        addr_hi = Signal()  # address bits above the widest region's are set
        end = Signal(max(aw, nw) + 1)  # one past the last word accessed (low address bits)
        depth_ok = Signal()
        rd_len = Signal(16)  # READ_MEM reply bytes
        ok_len = Signal(16)  # reply bytes if the request is OK
        reg_writable, reg_exists, reg_user = Signal(), Signal(), Signal()

        # -- reply side ------------------------------------------------------------------------
        rstatus = Signal(4)
        rlen = Signal(16)  # reply payload bytes
        rem = Signal(16)  # reply payload bytes still to send
        in_hdr = Signal()  # txw holds the reply header
        first = Signal()  # the sync byte, outside the CRC
        ptr = Signal(range(max(len(self.info), 32) + 1))  # next ROM byte / status word / counter
        txw = Signal(max(40, 8 * max_wb))  # bytes to send, low first; also assembles WRITE_MEM words
        txn = Signal(range(max(5, max_wb) + 1))  # bytes left in txw
        cur = Signal(aw)  # word address of the next memory access
        count = Signal(range(maxp + 1))  # words left to commit
        j = Signal(range(max_wb))  # byte within a word being committed
        cycles = Signal(32)
        # where reply words come from: the INFO ROM, the bus, a 32-bit value, the register file
        src_rom, src_bus, src_w32, src_rf = Signal(), Signal(), Signal(), Signal()
        ptr0 = Signal.like(ptr)
        W32_ID, W32_STATUS, W32_CYCLES, W32_ZERO = range(4)
        w32_sel = Signal(2)  # which 32-bit value a READ_REG / STATUS word is

        # -- counter updates: one read-modify-write at a time, requested by pending bits ----------
        pend_reply, pend_frame, pend_sync = Signal(), Signal(), Signal()
        upd = Signal(2)  # 0 idle, 1 read, 2 add, 3 write
        upd_idx = Signal(5)
        upd_sum = Signal(32)
        rf_addr = Signal(5)  # the register file's read address, always from a register
        m.d.comb += rf_r.addr.eq(rf_addr)
        rf_free = Signal()  # the FSM may use the register file this cycle
        m.d.comb += rf_free.eq((upd == 0) & ~pend_reply & ~pend_frame & ~pend_sync)
        pick = Mux(pend_reply, rstatus, Mux(pend_frame, Counter.FRAMING_ERRORS, Counter.SYNC_DISCARDS))
        with m.Switch(upd):
            with m.Case(0):
                with m.If(pend_reply | pend_frame | pend_sync):
                    m.d.sync += [upd_idx.eq(pick), rf_addr.eq(pick), upd.eq(1)]
                    with m.If(pend_reply):
                        m.d.sync += pend_reply.eq(0)
                    with m.Elif(pend_frame):
                        m.d.sync += pend_frame.eq(0)
                    with m.Else():
                        m.d.sync += pend_sync.eq(0)
            with m.Case(1):
                m.d.sync += upd.eq(2)
            with m.Case(2):
                m.d.sync += [upd_sum.eq(rf_r.data + 1), upd.eq(3)]
            with m.Case(3):
                m.d.comb += [rf_w.addr.eq(upd_idx), rf_w.data.eq(upd_sum), rf_w.en.eq(1)]
                m.d.sync += upd.eq(0)
        with m.If(self.framing_error):  # after the updater's clear: a new event re-arms the bit
            m.d.sync += pend_frame.eq(1)

        user = [Signal(32, name=f"user{k}") for k in range(N_USER_REGS)]  # copies for the design
        m.d.comb += [self.regs[k].eq(user[k]) for k in range(N_USER_REGS)]

        m.d.comb += crc.data.eq(Mux(o.valid, o.payload, i.payload))
        m.d.sync += self.start.eq(0)
        with m.If(self.start):
            m.d.sync += cycles.eq(0)
        with m.Elif(self.status[0]):
            m.d.sync += cycles.eq(cycles + 1)

        def reply(code, length=0):
            """Start the reply for the current request and have it counted under its status."""
            m.d.sync += [rstatus.eq(code), rlen.eq(length), pend_reply.eq(1)]
            m.next = "TX_HDR"

        got = i.valid & i.ready
        in_frame = Signal()
        with m.If(in_frame & ~got):
            m.d.sync += idle.eq(idle + 1)
        with m.Else():
            m.d.sync += idle.eq(0)
        # registered a cycle ahead (the comparator is wide): high exactly when idle == idle_timeout
        timed_out = Signal()
        m.d.sync += timed_out.eq(in_frame & ~got & (idle == self.idle_timeout - 1))
        timeout_code = Mux(oversize, Status.OVERSIZE, Status.TIMEOUT)

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

            for state, nxt, action in (
                ("LEN0", "LEN1", plen[0:8].eq(i.payload)),
                ("LEN1", "CMD", plen[8:16].eq(i.payload)),
            ):
                with m.State(state):
                    m.d.comb += [i.ready.eq(1), in_frame.eq(1), crc.en.eq(i.valid)]
                    with m.If(i.valid):
                        m.d.sync += action
                        m.next = nxt
                    with m.Elif(timed_out):
                        m.next = "ABORT"

            with m.State("CMD"):
                m.d.comb += [i.ready.eq(1), in_frame.eq(1), crc.en.eq(i.valid)]
                m.d.sync += [pidx.eq(0), left.eq(plen), bpos.eq(0), words.eq(0), wb.eq(1)]
                with m.If(i.valid):
                    m.d.sync += [cmd.eq(i.payload), oversize.eq(plen > maxp)]
                    with m.If(plen == 0):
                        m.next = "CRC0"
                    with m.Else():
                        m.next = "PAYLOAD"
                with m.Elif(timed_out):
                    m.next = "ABORT"

            with m.State("PAYLOAD"):
                # An oversize payload cannot be buffered: it is skipped (and its CRC after it), and
                # the reply is OVERSIZE, also when the frame stops early.
                m.d.comb += [i.ready.eq(1), in_frame.eq(1), crc.en.eq(i.valid)]
                m.d.comb += [st_w.data.eq(i.payload), st_w.en.eq(i.valid & ~oversize)]
                with m.If(i.valid):
                    m.d.sync += [pidx.eq(pidx + 1), left.eq(left - 1)]
                    with m.If(pidx < 7):
                        m.d.sync += hdr.word_select(pidx[:3], 8).eq(i.payload)
                    with m.If(pidx == 0):
                        with m.Switch(i.payload):
                            for r_id, r in enumerate(regions):
                                with m.Case(r_id):
                                    m.d.sync += wb.eq(r.word_bytes)
                    with m.If(pidx >= 5):
                        # Count whole data words as they arrive (a WRITE_MEM length check without a divider).
                        with m.If(bpos + 1 == wb):
                            m.d.sync += [bpos.eq(0), words.eq(words + 1)]
                        with m.Else():
                            m.d.sync += bpos.eq(bpos + 1)
                    with m.If(left == 1):
                        m.next = "CRC0"
                with m.Elif(timed_out):
                    m.next = "ABORT"

            for state, nxt in (("CRC0", "CRC1"), ("CRC1", "PRECHECK")):
                with m.State(state):
                    m.d.comb += [i.ready.eq(1), in_frame.eq(1), crc.en.eq(i.valid)]
                    with m.If(i.valid):
                        if state == "CRC1":
                            with m.If(oversize):
                                m.next = "ABORT"
                            with m.Else():
                                m.next = nxt
                        else:
                            m.next = nxt
                    with m.Elif(timed_out):
                        m.next = "ABORT"

            with m.State("ABORT"):  # the frame stopped arriving, or an oversize one was skipped
                reply(timeout_code)

            with m.State("PRECHECK"):
                is_rmem_now = cmd == Command.READ_MEM
                m.d.sync += [
                    crc_ok.eq(crc.zero),
                    is_info.eq(cmd == Command.INFO),
                    is_start.eq(cmd == Command.START),
                    is_status.eq(cmd == Command.STATUS),
                    is_errors.eq(cmd == Command.ERRORS),
                    is_wmem.eq(cmd == Command.WRITE_MEM),
                    is_rmem.eq(is_rmem_now),
                    is_wreg.eq(cmd == Command.WRITE_REG),
                    is_rreg.eq(cmd == Command.READ_REG),
                    len0.eq(plen == 0),
                    len1.eq(plen == 1),
                    len5.eq(plen == 5),
                    len7.eq(plen == 7),
                    len_ge5.eq(plen >= 5),
                    region_ok.eq(region < n_reg),
                    aligned.eq((bpos == 0) & (words != 0)),
                    addr_hi.eq(addr[aw:] != 0 if aw < 32 else 0),
                    reg_writable.eq((reg_idx == Reg.CONTROL) | ((reg_idx >= Reg.USER) & (reg_idx < N_REGS))),
                    reg_exists.eq(reg_idx < N_REGS),
                    reg_user.eq(reg_idx >= Reg.USER),
                    cnt_zero.eq(count16 == 0),
                    rd_len.eq(0),
                    wb_last.eq(wb - 1),
                    src_rom.eq(cmd == Command.INFO),
                    src_bus.eq(is_rmem_now),
                    src_w32.eq((cmd == Command.STATUS) | ((cmd == Command.READ_REG) & (reg_idx < Reg.USER))),
                    src_rf.eq((cmd == Command.ERRORS) | ((cmd == Command.READ_REG) & (reg_idx >= Reg.USER))),
                    ptr0.eq(Mux(cmd == Command.READ_REG, user_base + reg_idx[:3], 0)),
                    w32_sel.eq(W32_ZERO),
                ]
                with m.If(cmd == Command.STATUS):
                    m.d.sync += w32_sel.eq(W32_STATUS)
                with m.Elif(reg_idx == Reg.ID):
                    m.d.sync += w32_sel.eq(W32_ID)
                with m.Elif(reg_idx == Reg.STATUS):
                    m.d.sync += w32_sel.eq(W32_STATUS)
                with m.Elif(reg_idx == Reg.CYCLES):
                    m.d.sync += w32_sel.eq(W32_CYCLES)
                # one comparator per region now, the selection by region in the next cycle
                m.d.sync += [cnt_over[r_id].eq(count16 > maxp // r.word_bytes) for r_id, r in enumerate(regions)]
                with m.Switch(region[: self.region_bits]):
                    for r_id, r in enumerate(regions):
                        with m.Case(r_id):
                            m.d.sync += rd_len.eq(count16[:nw] * r.word_bytes)
                m.next = "PRECHECK2"
            with m.State("PRECHECK2"):
                m.d.sync += [
                    count_bad.eq(cnt_zero | cnt_over.bit_select(region[: self.region_bits], 1)),
                    end.eq(addr[:aw] + Mux(is_rmem, count16[:nw], words)),
                    ok_len.eq(
                        Mux(is_info, len(self.info), 0)
                        | Mux(is_status, 8, 0)
                        | Mux(is_errors, 4 * Counter.COUNT, 0)
                        | Mux(is_rreg, 4, 0)
                        | Mux(is_rmem, rd_len, 0)
                    ),
                ]
                m.next = "PRECHECK3"
            with m.State("PRECHECK3"):
                m.d.sync += depth_ok.eq(0)
                with m.Switch(region[: self.region_bits]):
                    for r_id, r in enumerate(regions):
                        with m.Case(r_id):
                            m.d.sync += depth_ok.eq(~addr_hi & (end <= r.depth))
                m.next = "CHECK"

            # The decision is a priority chain over the registered checks (docs/protocol.md order),
            # registered in its turn; DECIDE then acts on it.
            code = Signal(4)
            go_commit, go_regwr, do_start = Signal(), Signal(), Signal()
            chk_code = Signal(4)
            chk_commit, chk_regwr, chk_start = Signal(), Signal(), Signal()
            with m.State("CHECK"):
                m.d.sync += [cur.eq(addr[:aw]), j.eq(0), ptr.eq(ptr0), count.eq(words), pidx.eq(5)]
                m.d.sync += [
                    chk_code.eq(code),
                    chk_commit.eq(go_commit),
                    chk_regwr.eq(go_regwr),
                    chk_start.eq(do_start),
                ]
                m.next = "DECIDE"
                with m.If(~crc_ok):
                    m.d.comb += code.eq(Status.BAD_CRC)
                with m.Elif(is_info | is_start | is_status | is_errors):
                    with m.If(~len0):
                        m.d.comb += code.eq(Status.BAD_LENGTH)
                    with m.Else():
                        m.d.comb += do_start.eq(is_start)
                with m.Elif(is_wmem):
                    with m.If(~len_ge5):
                        m.d.comb += code.eq(Status.BAD_LENGTH)
                    with m.Elif(~region_ok):
                        m.d.comb += code.eq(Status.BAD_REGION)
                    with m.Elif(~aligned):
                        m.d.comb += code.eq(Status.BAD_LENGTH)
                    with m.Elif(~depth_ok):
                        m.d.comb += code.eq(Status.BAD_ADDRESS)
                    with m.Else():
                        m.d.comb += go_commit.eq(1)
                with m.Elif(is_rmem):
                    with m.If(~len7):
                        m.d.comb += code.eq(Status.BAD_LENGTH)
                    with m.Elif(~region_ok):
                        m.d.comb += code.eq(Status.BAD_REGION)
                    with m.Elif(count_bad):
                        m.d.comb += code.eq(Status.BAD_LENGTH)
                    with m.Elif(~depth_ok):
                        m.d.comb += code.eq(Status.BAD_ADDRESS)
                with m.Elif(is_wreg):
                    with m.If(~len5):
                        m.d.comb += code.eq(Status.BAD_LENGTH)
                    with m.Elif(~reg_writable):
                        m.d.comb += code.eq(Status.BAD_REGISTER)
                    with m.Elif(~reg_user):  # CONTROL: bit 0 pulses start
                        m.d.comb += do_start.eq(reg_val[0])
                    with m.Else():
                        m.d.comb += go_regwr.eq(1)
                with m.Elif(is_rreg):
                    with m.If(~len1):
                        m.d.comb += code.eq(Status.BAD_LENGTH)
                    with m.Elif(~reg_exists):
                        m.d.comb += code.eq(Status.BAD_REGISTER)
                with m.Else():
                    m.d.comb += code.eq(Status.UNKNOWN_CMD)

            with m.State("DECIDE"):
                with m.If(chk_commit):
                    m.next = "COMMIT_RD"
                with m.Elif(chk_regwr):
                    m.next = "REG_WR"
                with m.Else():
                    m.d.sync += [self.start.eq(chk_start), rstatus.eq(chk_code), pend_reply.eq(1)]
                    m.d.sync += rlen.eq(Mux(chk_code == Status.OK, ok_len, 0))
                    m.next = "TX_HDR"

            with m.State("REG_WR"):
                with m.If(rf_free):
                    m.d.comb += [rf_w.addr.eq(user_base + reg_idx[:3]), rf_w.data.eq(reg_val), rf_w.en.eq(1)]
                    with m.Switch(reg_idx[:3]):
                        for u in range(N_USER_REGS):
                            with m.Case(u):
                                m.d.sync += user[u].eq(reg_val)
                    m.next = "DONE"

            with m.State("DONE"):  # a write has been carried out
                reply(Status.OK)

            # WRITE_MEM commit: staging bytes -> words (assembled in txw) -> bus, only after every
            # check passed. Bytes of txw above the region's word are stale; the memory ignores them.
            with m.State("COMMIT_RD"):
                m.d.sync += pidx.eq(pidx + 1)
                m.next = "COMMIT_CAP"
            with m.State("COMMIT_CAP"):  # one byte a cycle: the next address is already in pidx
                m.d.sync += txw.word_select(j, 8).eq(st_r.data)
                with m.If(j == wb_last):
                    m.d.sync += j.eq(0)
                    m.next = "COMMIT_WR"
                with m.Else():
                    m.d.sync += [j.eq(j + 1), pidx.eq(pidx + 1)]
            with m.State("COMMIT_WR"):
                m.d.comb += [
                    bus.valid.eq(1),
                    bus.we.eq(1),
                    bus.region.eq(region[: self.region_bits]),
                    bus.addr.eq(cur),
                    bus.wdata.eq(txw),
                ]
                with m.If(bus.ready):
                    m.d.sync += [count.eq(count - 1), cur.eq(cur + 1)]
                    with m.If(count == 1):
                        m.next = "DONE"
                    with m.Else():
                        m.next = "COMMIT_RD"

            # -- reply ---------------------------------------------------------------------------
            with m.State("TX_HDR"):
                m.d.comb += crc.clear.eq(1)
                m.d.sync += [
                    txw.eq(Cat(Const(SYNC_REPLY, 8), rlen, cmd, rstatus)),
                    txn.eq(5),
                    rem.eq(rlen),
                    in_hdr.eq(1),
                    first.eq(1),
                ]
                m.next = "TX_DATA"

            with m.State("TX_DATA"):
                m.d.comb += [o.valid.eq(1), o.payload.eq(txw[0:8]), crc.en.eq(o.ready & ~first)]
                with m.If(o.ready):
                    m.d.sync += [txw.eq(txw >> 8), txn.eq(txn - 1), first.eq(0)]
                    with m.If(~in_hdr):
                        m.d.sync += rem.eq(rem - 1)
                    with m.If(txn == 1):
                        m.d.sync += in_hdr.eq(0)
                        m.next = "TX_NEXT"

            with m.State("TX_NEXT"):  # replies end on a word boundary
                with m.If(rem == 0):
                    m.next = "TX_CRC0"
                with m.Else():
                    m.next = "TX_FETCH"

            with m.State("TX_FETCH"):  # exactly one source flag is set (decoded before CHECK)
                with m.If(src_rom):
                    m.d.comb += rom_r.addr.eq(ptr)
                    m.d.sync += ptr.eq(ptr + 1)
                    m.next = "TX_ROM"
                with m.If(src_bus):
                    m.d.comb += [bus.valid.eq(1), bus.region.eq(region[: self.region_bits]), bus.addr.eq(cur)]
                    with m.If(bus.ready):
                        m.d.sync += cur.eq(cur + 1)
                        m.next = "TX_WAIT"
                with m.If(src_w32):
                    with m.Switch(w32_sel):
                        with m.Case(W32_ID):
                            m.d.sync += txw.eq(REG_ID_MAGIC | cfg.protocol_version)
                        with m.Case(W32_STATUS):
                            m.d.sync += txw.eq(self.status)
                        with m.Case(W32_CYCLES):
                            m.d.sync += txw.eq(cycles)
                        with m.Default():
                            m.d.sync += txw.eq(0)
                    m.d.sync += [txn.eq(4), w32_sel.eq(W32_CYCLES)]  # STATUS: status, then cycles
                    m.next = "TX_DATA"
                with m.If(src_rf & rf_free):  # the counters must include every pending count
                    m.d.sync += [rf_addr.eq(ptr), ptr.eq(ptr + 1)]
                    m.next = "TX_RF_ADDR"

            with m.State("TX_RF_ADDR"):
                m.next = "TX_RF"
            with m.State("TX_RF"):
                m.d.sync += [txw.eq(rf_r.data), txn.eq(4)]
                m.next = "TX_DATA"

            with m.State("TX_ROM"):  # the ROM answers one cycle after its address
                m.d.sync += [txw.eq(rom_r.data), txn.eq(1)]
                m.next = "TX_DATA"

            with m.State("TX_WAIT"):
                with m.If(bus.rvalid):
                    m.d.sync += [txw.eq(bus.rdata), txn.eq(wb)]
                    m.next = "TX_DATA"

            with m.State("TX_CRC0"):
                m.d.comb += [o.valid.eq(1), o.payload.eq(crc.crc[8:16])]
                with m.If(o.ready):
                    m.next = "TX_CRC1"
            with m.State("TX_CRC1"):
                m.d.comb += [o.valid.eq(1), o.payload.eq(crc.crc[0:8])]
                with m.If(o.ready):
                    m.next = "SYNC"
        # Ask Yosys for a one-hot state register: its detection skips a register with an initial
        # value (Amaranth's FSMs all have one), and a binary-coded 25-state next-state function is
        # the longest path of this block on an iCE40.
        fsm.state.attrs["fsm_encoding"] = "one-hot"
        return m
