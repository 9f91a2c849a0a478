"""Host side of the shiftnpu link protocol: framing, CRC, codes and the INFO payload.

This is the host's one implementation of the wire format in docs/protocol.md. The device side
(``hw/hostif.py``) is a separate implementation of the same document; the tests run one against
the other.

Request: ``A5 | len (u16 LE) | cmd | payload[len] | crc (u16 BE)``
Reply:   ``5A | len (u16 LE) | cmd | status | payload[len] | crc (u16 BE)``

The CRC is CRC-16/CCITT-FALSE over every byte after the sync byte, sent high byte first.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from quant.config import NPUConfig
from quant.memmap import Region

__all__ = [
    "PROTOCOL_VERSION",
    "SYNC_REQUEST",
    "SYNC_REPLY",
    "Command",
    "Status",
    "Counter",
    "Reg",
    "crc16",
    "encode_request",
    "encode_reply",
    "Reply",
    "ReplyParser",
    "FrameError",
    "DeviceInfo",
    "decode_info",
    "REG_ID_MAGIC",
    "N_REGS",
]

#: The protocol version this driver speaks; the device reports its own in INFO.
PROTOCOL_VERSION = 1
SYNC_REQUEST = 0xA5
SYNC_REPLY = 0x5A
REG_ID_MAGIC = 0x534E0000
N_REGS = 16


class Command(enum.IntEnum):
    INFO = 0x01
    WRITE_MEM = 0x02
    READ_MEM = 0x03
    WRITE_REG = 0x04
    READ_REG = 0x05
    START = 0x06
    STATUS = 0x07
    ERRORS = 0x08


class Status(enum.IntEnum):
    """Reply status; error counter ``i`` counts the replies sent with status ``i``."""

    OK = 0
    BAD_CRC = 1
    UNKNOWN_CMD = 2
    BAD_LENGTH = 3
    OVERSIZE = 4
    BAD_REGION = 5
    BAD_ADDRESS = 6
    BAD_REGISTER = 7
    TIMEOUT = 8


class Counter(enum.IntEnum):
    """Error counters, in the order of the ERRORS reply."""

    OK = 0
    BAD_CRC = 1
    UNKNOWN_CMD = 2
    BAD_LENGTH = 3
    OVERSIZE = 4
    BAD_REGION = 5
    BAD_ADDRESS = 6
    BAD_REGISTER = 7
    TIMEOUT = 8
    SYNC_DISCARDS = 9
    FRAMING_ERRORS = 10


class Reg(enum.IntEnum):
    ID = 0
    CONTROL = 1
    STATUS = 2
    CYCLES = 3
    USER0 = 8


STATUS_MEANING = {
    Status.OK: "ok",
    Status.BAD_CRC: "the device saw a CRC error in the request",
    Status.UNKNOWN_CMD: "the device does not know this command",
    Status.BAD_LENGTH: "the request payload has the wrong length for its command",
    Status.OVERSIZE: "the request payload exceeds the device's max_payload",
    Status.BAD_REGION: "no such memory region",
    Status.BAD_ADDRESS: "the access runs past the end of the region",
    Status.BAD_REGISTER: "no such register, or it is read-only",
    Status.TIMEOUT: "the request stopped arriving mid-frame (idle timeout)",
}


class FrameError(ValueError):
    """A reply frame is malformed (bad sync, CRC or length)."""


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, MSB first, no final XOR)."""
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def encode_request(cmd: int, payload: bytes = b"") -> bytes:
    """One request frame."""
    if len(payload) > 0xFFFF:
        raise ValueError(f"payload of {len(payload)} bytes does not fit a frame (at most 65535)")
    body = struct.pack("<HB", len(payload), cmd) + bytes(payload)
    return bytes([SYNC_REQUEST]) + body + crc16(body).to_bytes(2, "big")


def encode_reply(cmd: int, status: int, payload: bytes = b"") -> bytes:
    """One reply frame (what a device sends; used by tests and reference models)."""
    body = struct.pack("<HBB", len(payload), cmd, status) + bytes(payload)
    return bytes([SYNC_REPLY]) + body + crc16(body).to_bytes(2, "big")


@dataclass(frozen=True)
class Reply:
    cmd: int
    status: int
    payload: bytes


class ReplyParser:
    """Incremental reply decoder: feed bytes, collect :class:`Reply` objects.

    Bytes before a sync byte are skipped (counted in :attr:`skipped`); a frame whose CRC fails
    raises :class:`FrameError` and the parser restarts after its sync byte.
    """

    def __init__(self):
        self.buf = bytearray()
        self.skipped = 0

    def feed(self, data: bytes) -> list[Reply]:
        self.buf += data
        out = []
        while True:
            start = self.buf.find(SYNC_REPLY)
            if start < 0:
                self.skipped += len(self.buf)
                self.buf.clear()
                return out
            if start:
                self.skipped += start
                del self.buf[:start]
            if len(self.buf) < 5:
                return out
            (length,) = struct.unpack_from("<H", self.buf, 1)
            total = 1 + 4 + length + 2
            if len(self.buf) < total:
                return out
            frame = bytes(self.buf[:total])
            if crc16(frame[1:]) != 0:
                del self.buf[:1]
                raise FrameError(f"reply CRC error (frame of {total} bytes: {frame[:16].hex()}...)")
            del self.buf[:total]
            out.append(Reply(frame[3], frame[4], frame[5:-2]))

    @property
    def pending(self) -> int:
        """Bytes of a reply begun but not complete."""
        return len(self.buf)


@dataclass(frozen=True)
class DeviceInfo:
    """What a device reports in INFO."""

    protocol_version: int
    max_payload: int
    idle_timeout: int
    n_regs: int
    n_counters: int
    config: NPUConfig
    regions: tuple[Region, ...]

    def region(self, name_or_id: str | int) -> tuple[int, Region]:
        """``(id, Region)`` of a region given by name or id; ``KeyError`` naming the choices."""
        if isinstance(name_or_id, int):
            if 0 <= name_or_id < len(self.regions):
                return name_or_id, self.regions[name_or_id]
        else:
            for i, r in enumerate(self.regions):
                if r.name == name_or_id:
                    return i, r
        names = ", ".join(f"{i}={r.name}" for i, r in enumerate(self.regions))
        raise KeyError(f"no memory region {name_or_id!r} on this device (it has {names})")


def decode_info(payload: bytes) -> DeviceInfo:
    """Decode an INFO payload; :class:`FrameError` if it is malformed."""
    try:
        version, max_payload, timeout, n_regs, n_counters = struct.unpack_from("<HHIBB", payload, 0)
        pos = 10
        if version != PROTOCOL_VERSION:
            # The rest of the layout belongs to that version: return what we know and let the
            # caller say "version mismatch" rather than "garbled".
            return DeviceInfo(version, max_payload, timeout, n_regs, n_counters, None, ())  # type: ignore[arg-type]
        fields = {}
        n = payload[pos]
        pos += 1
        for _ in range(n):
            ln = payload[pos]
            name = payload[pos + 1 : pos + 1 + ln].decode("ascii")
            pos += 1 + ln
            (fields[name],) = struct.unpack_from("<I", payload, pos)
            pos += 4
        regions = []
        n = payload[pos]
        pos += 1
        for _ in range(n):
            ln = payload[pos]
            name = payload[pos + 1 : pos + 1 + ln].decode("ascii")
            pos += 1 + ln
            width, depth = struct.unpack_from("<HI", payload, pos)
            pos += 6
            regions.append(Region(name, width, depth))
    except (struct.error, IndexError, UnicodeDecodeError) as e:
        raise FrameError(f"malformed INFO payload ({len(payload)} bytes): {e}") from None
    if pos != len(payload):
        raise FrameError(f"INFO payload has {len(payload) - pos} unexpected trailing bytes")
    return DeviceInfo(version, max_payload, timeout, n_regs, n_counters, NPUConfig.from_dict(fields), tuple(regions))
