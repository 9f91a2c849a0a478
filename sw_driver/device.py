"""``Device``: the host's view of a shiftnpu device over the link protocol.

Every method sends one or more request frames and waits for the matching reply, with a timeout
and a bounded number of retries; what went wrong is said by the exception's class and message:

* :class:`NoAnswer` -- nothing (or only part of a reply) arrived in time, after every retry,
* :class:`CRCError` -- replies kept arriving corrupted,
* :class:`DeviceError` -- the device answered with an error status (``.status`` says which),
* :class:`ConfigMismatch` -- the device was built with another config than expected.

Only requests that are safe to repeat are retried (all of them are: writes are idempotent, and a
``START`` is retried only when no reply came back -- see :meth:`Device.start`).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable

import numpy as np

from quant.config import ConfigError, NPUConfig

from .protocol import (
    PROTOCOL_VERSION,
    STATUS_MEANING,
    Command,
    Counter,
    DeviceInfo,
    FrameError,
    Reg,
    ReplyParser,
    Status,
    decode_info,
    encode_request,
)
from .transport import Transport, open_transport

__all__ = ["Device", "Reg", "LinkError", "NoAnswer", "CRCError", "DeviceError", "ConfigMismatch", "ProtocolMismatch"]


def _cmd_name(cmd: int) -> str:
    return Command(cmd).name if cmd in Command._value2member_map_ else f"command 0x{cmd:02x}"


class LinkError(OSError):
    """Base of every error talking to the device."""


class NoAnswer(LinkError):
    """The device did not answer in time."""


class CRCError(LinkError):
    """Replies arrived corrupted (CRC or framing), on every try."""


class DeviceError(LinkError):
    """The device refused the request; :attr:`status` is the :class:`Status` it replied with."""

    def __init__(self, status: int, cmd: int, detail: str = ""):
        self.status = Status(status) if status in Status._value2member_map_ else status
        self.cmd = cmd
        name = self.status.name if isinstance(self.status, Status) else f"status {status}"
        meaning = STATUS_MEANING.get(self.status, "unknown status code")
        cname = Command(cmd).name if cmd in Command._value2member_map_ else f"0x{cmd:02x}"
        super().__init__(f"device error {name} on {cname}: {meaning}{' (' + detail + ')' if detail else ''}")


class ConfigMismatch(LinkError, ConfigError):
    """The device's config differs from the expected one."""


class ProtocolMismatch(LinkError):
    """The device speaks another protocol version than this driver."""


class Device:
    """A shiftnpu device (a board or the simulated device) behind ``url``.

    Parameters
    ----------
    url : str
        Serial device (``/dev/ttyUSB1``) or pyserial URL (``socket://127.0.0.1:5555``).
    timeout : float
        Seconds to wait for each reply (scaled up for long replies at low baud rates).
    retries : int
        Extra attempts after a timeout or a corrupted reply.
    baud : int
        Serial baud rate (ignored by sockets).
    progress : bool
        Show a tqdm progress bar on transfers of more than a few frames.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 2.0,
        retries: int = 2,
        baud: int = 115200,
        progress: bool = False,
        transport: Transport | None = None,
    ):
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.url = url
        self.timeout = timeout
        self.retries = retries
        self.baud = baud
        self.progress = progress
        self.transport = transport if transport is not None else open_transport(url, baud=baud)
        self._info: DeviceInfo | None = None
        self._rx_bytes = 0
        self.stats = {"requests": 0, "retries": 0, "bytes_out": 0, "bytes_in": 0}

    # -- context manager --------------------------------------------------------------------
    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.transport.close()

    # -- one request/reply ------------------------------------------------------------------
    def _wire_time(self, n_bytes: int) -> float:
        return n_bytes * 10 / self.baud

    def request(self, cmd: int, payload: bytes = b"", *, retry: bool = True, expect_len: int | None = None) -> bytes:
        """Send one request and return the payload of its OK reply."""
        frame = encode_request(cmd, payload)
        attempts = 1 + (self.retries if retry else 0)
        last: Exception | None = None
        for attempt in range(attempts):
            if attempt:
                self.stats["retries"] += 1
                # Let a late reply to the previous attempt arrive and throw it away.
                self._io(self.transport.drain, min(0.05, self.timeout / 4))
            self.stats["requests"] += 1
            self._io(self.transport.write, frame)
            self.stats["bytes_out"] += len(frame)
            wait = self.timeout + self._wire_time(len(frame) + (expect_len or 0) + 7)
            try:
                reply = self._read_reply(time.monotonic() + wait)
            except FrameError as e:
                last = CRCError(f"corrupted reply from {self.url}: {e}")
                continue
            if reply is None and self._rx_bytes:
                # Bytes came back, but never a reply frame: a wrong baud rate, another
                # bitstream or program on the port, or a loopback.
                last = NoAnswer(
                    f"no valid reply from {self.url} within {wait:.2f} s to {_cmd_name(cmd)}: "
                    f"{self._rx_bytes} bytes arrived but no reply frame (attempt {attempt + 1} of {attempts}): "
                    f"is it a shiftnpu device, at this baud rate ({self.baud})?"
                )
                continue
            if reply is None:
                last = NoAnswer(
                    f"no answer from {self.url} within {wait:.2f} s to {_cmd_name(cmd)}"
                    f" (attempt {attempt + 1} of {attempts}): is the device connected, powered and configured?"
                )
                continue
            if reply.cmd != cmd:
                last = CRCError(f"{self.url} replied to command 0x{reply.cmd:02x} while waiting for {_cmd_name(cmd)}")
                continue
            if reply.status == Status.BAD_CRC or reply.status == Status.TIMEOUT:
                # The request was damaged on the way: sending it again is the cure.
                last = DeviceError(reply.status, reply.cmd)
                continue
            if reply.status != Status.OK:
                raise DeviceError(reply.status, reply.cmd)
            return reply.payload
        assert last is not None
        raise last

    def _io(self, fn, *args):
        """A transport call; a port or socket that fails (unplugged, closed by the peer) is a
        :class:`LinkError` naming the device, not a bare serial exception."""
        try:
            return fn(*args)
        except LinkError:
            raise
        except OSError as e:
            raise LinkError(f"lost the connection to {self.url}: {e}") from None

    def _read_reply(self, deadline: float):
        parser = ReplyParser()
        self._rx_bytes = 0
        while True:
            data = self._io(self.transport.read_some, deadline)
            if not data:
                return None
            self._rx_bytes += len(data)
            self.stats["bytes_in"] += len(data)
            replies = parser.feed(data)
            if replies:
                return replies[0]

    # -- info and config --------------------------------------------------------------------
    def info(self, *, refresh: bool = False) -> DeviceInfo:
        """Protocol version, config and memory map of the device (cached after the first call)."""
        if self._info is None or refresh:
            payload = self.request(Command.INFO)
            try:
                info = decode_info(payload)
            except (FrameError, ConfigError) as e:
                raise ProtocolMismatch(
                    f"{self.url} answered INFO with a payload this driver cannot read ({e}): "
                    "is it a shiftnpu device of this protocol version?"
                ) from None
            if info.protocol_version != PROTOCOL_VERSION:
                raise ProtocolMismatch(
                    f"device at {self.url} speaks protocol version {info.protocol_version}, "
                    f"this driver speaks version {PROTOCOL_VERSION}: update the driver or the bitstream"
                )
            self._info = info
        return self._info

    @property
    def config(self) -> NPUConfig:
        return self.info().config

    def check_config(self, expected: NPUConfig) -> None:
        """Raise :class:`ConfigMismatch` naming every field where the device differs from ``expected``."""
        diff = expected.differences(self.config)
        if diff:
            raise ConfigMismatch(
                f"device at {self.url} was built with another config than expected: " + "; ".join(diff)
            )

    # -- memory -----------------------------------------------------------------------------
    def _words_per_frame(self, word_bytes: int, header: int) -> int:
        return max(1, (self.info().max_payload - header) // word_bytes)

    def write_mem(self, region: str | int, addr: int, words: Iterable[int] | np.ndarray) -> None:
        """Write ``words`` (unsigned ints below ``2**width``) from word ``addr`` of ``region``."""
        rid, reg = self.info().region(region)
        words = np.asarray(list(words) if not isinstance(words, np.ndarray) else words, dtype=object)
        n = len(words)
        self._check_range(reg, addr, n)
        limit = 1 << reg.width
        wb = reg.word_bytes
        for w in words:
            if not 0 <= int(w) < limit:
                raise ValueError(f"word {int(w)} does not fit region {reg.name!r} ({reg.width} bits, unsigned)")
        per = self._words_per_frame(wb, 5)
        chunks = range(0, n, per)
        for start in self._bar(chunks, n, per, f"write {reg.name}"):
            chunk = words[start : start + per]
            body = b"".join(int(w).to_bytes(wb, "little") for w in chunk)
            self.request(Command.WRITE_MEM, struct.pack("<BI", rid, addr + start) + body)

    def read_mem(self, region: str | int, addr: int, count: int) -> list[int]:
        """Read ``count`` words from word ``addr`` of ``region``."""
        rid, reg = self.info().region(region)
        self._check_range(reg, addr, count)
        wb = reg.word_bytes
        per = min(0xFFFF, self._words_per_frame(wb, 0))
        out: list[int] = []
        for start in self._bar(range(0, count, per), count, per, f"read {reg.name}"):
            n = min(per, count - start)
            data = self.request(Command.READ_MEM, struct.pack("<BIH", rid, addr + start, n), expect_len=n * wb)
            if len(data) != n * wb:
                raise CRCError(f"READ_MEM returned {len(data)} bytes, expected {n * wb}")
            out += [int.from_bytes(data[i * wb : (i + 1) * wb], "little") for i in range(n)]
        return out

    @staticmethod
    def _check_range(reg, addr: int, count: int) -> None:
        if count < 1:
            raise ValueError(f"nothing to transfer (count {count})")
        if addr < 0 or addr + count > reg.depth:
            raise ValueError(f"words {addr}..{addr + count - 1} are outside region {reg.name!r} (0..{reg.depth - 1})")

    def _bar(self, it, total_words: int, per: int, desc: str):
        if not self.progress or total_words <= 8 * per:
            return it
        try:
            from tqdm import tqdm
        except ImportError:
            return it
        return tqdm(it, desc=desc, unit="frame", leave=False)

    # -- registers, start, status, counters --------------------------------------------------
    def read_reg(self, index: int) -> int:
        return struct.unpack("<I", self.request(Command.READ_REG, bytes([index]), expect_len=4))[0]

    def write_reg(self, index: int, value: int) -> None:
        if not 0 <= value < 1 << 32:
            raise ValueError(f"register value {value} does not fit 32 bits")
        self.request(Command.WRITE_REG, struct.pack("<BI", index, value))

    def start(self) -> None:
        """Pulse ``start``. Not retried blindly: a lost reply could mean the job already started."""
        self.request(Command.START, retry=False)

    def status(self) -> tuple[int, int]:
        """``(status register, cycle counter)``."""
        s, c = struct.unpack("<II", self.request(Command.STATUS, expect_len=8))
        return s, c

    def error_counters(self) -> dict[str, int]:
        """Every error counter by name (see :class:`~sw_driver.protocol.Counter`)."""
        data = self.request(Command.ERRORS, expect_len=4 * len(Counter))
        vals = struct.unpack(f"<{len(data) // 4}I", data)
        return {c.name.lower(): vals[c] for c in Counter if c < len(vals)}

    def wait_done(self, done_mask: int, *, timeout: float = 10.0, poll: float = 0.001) -> tuple[int, int]:
        """Poll ``status()`` until ``status & done_mask``; :class:`NoAnswer` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            s, c = self.status()
            if s & done_mask:
                return s, c
            if time.monotonic() > deadline:
                raise NoAnswer(f"device at {self.url} still not done after {timeout} s (status 0x{s:08x})")
            time.sleep(poll)
