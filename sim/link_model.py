"""Reference model of the device side of the link protocol (docs/protocol.md), byte by byte.

It mirrors what ``hw/hostif.HostInterface`` inside ``hw/linktest.LinkTestTop`` does with a byte
stream -- the parser states, the order of the checks, the replies, the error counters, the memories
and registers -- so a bench can feed the RTL and the model the same bytes and compare every reply
byte and every counter. It is written from the document, not from the RTL, and encodes replies
with the host's codec (``sw_driver.protocol``), so it checks the RTL against the driver's view.
"""

from __future__ import annotations

import struct

from quant.config import NPUConfig
from quant.memmap import Region
from sw_driver.protocol import (
    REG_ID_MAGIC,
    SYNC_REQUEST,
    Command,
    Counter,
    Reg,
    Status,
    crc16,
    encode_reply,
)

__all__ = ["LinkModel"]

_RX_STATES = ("LEN0", "LEN1", "CMD", "PAYLOAD", "CRC0", "CRC1")


class LinkModel:
    """The link's device side.

    ``feed(data)`` consumes request bytes and returns the reply bytes the device sends;
    ``idle()`` is a pause longer than the idle timeout. ``counters`` follows the ERRORS reply.
    """

    def __init__(self, config: NPUConfig, regions: tuple[Region, ...], info: bytes):
        self.config = config
        self.regions = regions
        self.info = info
        self.mem = [dict() for _ in regions]
        self.user = [0] * 8
        self.status = 0
        self.cycles = 0
        self.counters = [0] * len(Counter)
        self.state = "SYNC"
        self.body = bytearray()

    # -- byte stream ----------------------------------------------------------------------
    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        for b in data:
            out += self._byte(b)
        return bytes(out)

    def idle(self) -> bytes:
        if self.state in _RX_STATES:
            cmd = self.body[2] if len(self.body) >= 3 else 0
            return self._reply(cmd, Status.TIMEOUT)
        if self.state == "DISCARD":
            return self._reply(self.body[2], Status.OVERSIZE)
        return b""

    @property
    def mid_frame(self) -> bool:
        return self.state != "SYNC"

    def _byte(self, b: int) -> bytes:
        st = self.state
        if st == "SYNC":
            if b == SYNC_REQUEST:
                self.state, self.body = "LEN0", bytearray()
            else:
                self.counters[Counter.SYNC_DISCARDS] += 1
            return b""
        if st == "DISCARD":
            self.discard -= 1
            return self._reply(self.body[2], Status.OVERSIZE) if self.discard == 0 else b""
        self.body.append(b)
        if st == "LEN0":
            self.state = "LEN1"
        elif st == "LEN1":
            self.state = "CMD"
        elif st == "CMD":
            plen = self.plen
            if plen > self.config.max_payload:
                self.state, self.discard = "DISCARD", plen + 2
            else:
                self.state = "CRC0" if plen == 0 else "PAYLOAD"
        elif st == "PAYLOAD":
            if len(self.body) == 3 + self.plen:
                self.state = "CRC0"
        elif st == "CRC0":
            self.state = "CRC1"
        elif st == "CRC1":
            return self._execute()
        return b""

    @property
    def plen(self) -> int:
        return self.body[0] | self.body[1] << 8

    def _reply(self, cmd: int, status: int, payload: bytes = b"") -> bytes:
        self.state = "SYNC"
        self.counters[status] += 1
        return encode_reply(cmd, status, payload)

    # -- commands ---------------------------------------------------------------------------
    def _execute(self) -> bytes:  # noqa: C901 - mirrors the dispatch table of docs/protocol.md
        body = bytes(self.body)
        cmd, plen, p = body[2], self.plen, body[3:-2]
        if crc16(body) != 0:
            return self._reply(cmd, Status.BAD_CRC)
        if cmd in (Command.INFO, Command.START, Command.STATUS, Command.ERRORS):
            if plen != 0:
                return self._reply(cmd, Status.BAD_LENGTH)
            if cmd == Command.INFO:
                return self._reply(cmd, Status.OK, self.info)
            if cmd == Command.START:
                self._start()
                return self._reply(cmd, Status.OK)
            if cmd == Command.STATUS:
                return self._reply(cmd, Status.OK, struct.pack("<II", self.status, self.cycles))
            self.counters[Status.OK] += 1  # the ERRORS reply reports itself
            snap = struct.pack(f"<{len(self.counters)}I", *self.counters)
            self.counters[Status.OK] -= 1
            return self._reply(cmd, Status.OK, snap)
        if cmd == Command.WRITE_MEM:
            if plen < 5:
                return self._reply(cmd, Status.BAD_LENGTH)
            region, addr = p[0], struct.unpack_from("<I", p, 1)[0]
            if region >= len(self.regions):
                return self._reply(cmd, Status.BAD_REGION)
            r = self.regions[region]
            data = p[5:]
            if len(data) == 0 or len(data) % r.word_bytes:
                return self._reply(cmd, Status.BAD_LENGTH)
            n = len(data) // r.word_bytes
            if addr + n > r.depth:
                return self._reply(cmd, Status.BAD_ADDRESS)
            mask = (1 << r.width) - 1
            for i in range(n):
                w = int.from_bytes(data[i * r.word_bytes : (i + 1) * r.word_bytes], "little") & mask
                self.mem[region][addr + i] = w
            return self._reply(cmd, Status.OK)
        if cmd == Command.READ_MEM:
            if plen != 7:
                return self._reply(cmd, Status.BAD_LENGTH)
            region, addr, count = struct.unpack("<BIH", p)
            if region >= len(self.regions):
                return self._reply(cmd, Status.BAD_REGION)
            r = self.regions[region]
            if count == 0 or count > self.config.max_payload // r.word_bytes:
                return self._reply(cmd, Status.BAD_LENGTH)
            if addr + count > r.depth:
                return self._reply(cmd, Status.BAD_ADDRESS)
            words = [self.mem[region].get(addr + i, 0) for i in range(count)]
            return self._reply(cmd, Status.OK, b"".join(w.to_bytes(r.word_bytes, "little") for w in words))
        if cmd == Command.WRITE_REG:
            if plen != 5:
                return self._reply(cmd, Status.BAD_LENGTH)
            idx, val = struct.unpack("<BI", p)
            if idx == Reg.CONTROL:
                if val & 1:
                    self._start()
            elif Reg.USER0 <= idx < Reg.USER0 + 8:
                self.user[idx - Reg.USER0] = val
            else:
                return self._reply(cmd, Status.BAD_REGISTER)
            return self._reply(cmd, Status.OK)
        if cmd == Command.READ_REG:
            if plen != 1:
                return self._reply(cmd, Status.BAD_LENGTH)
            idx = p[0]
            if idx >= 16:
                return self._reply(cmd, Status.BAD_REGISTER)
            return self._reply(cmd, Status.OK, struct.pack("<I", self._read_reg(idx)))
        return self._reply(cmd, Status.UNKNOWN_CMD)

    def _read_reg(self, idx: int) -> int:
        if idx == Reg.ID:
            return REG_ID_MAGIC | self.config.protocol_version
        if idx == Reg.STATUS:
            return self.status
        if idx == Reg.CYCLES:
            return self.cycles
        if Reg.USER0 <= idx < Reg.USER0 + 8:
            return self.user[idx - Reg.USER0]
        return 0

    def _start(self) -> None:
        # LinkTestTop's stand-in job; the model only follows it when USER0 is 0 (done at once).
        if self.user[0] != 0:
            raise ValueError("the link model follows the stand-in job only with USER0 == 0")
        self.status, self.cycles = 2, 0
