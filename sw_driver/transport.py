"""Byte transport to a device: a serial port or any pyserial URL.

``open_transport("/dev/ttyUSB1")`` opens a board's UART; ``socket://127.0.0.1:PORT`` reaches the
simulated device of ``shiftnpu sim-serve``; ``loop://`` echoes (tests). The same driver code runs
over all of them.
"""

from __future__ import annotations

import time

__all__ = ["Transport", "open_transport", "DeviceNotFound", "default_reply_timeout", "SIM_TIMEOUT", "BOARD_TIMEOUT"]

#: Per-reply timeouts the commands use when none is given: a socket is usually ``shiftnpu sim-serve``
#: (the RTL stepped clock by clock; its ``--uart`` mode is slow), a serial port a board.
SIM_TIMEOUT, BOARD_TIMEOUT = 30.0, 5.0


def default_reply_timeout(url: str) -> float:
    """:data:`SIM_TIMEOUT` for ``sim`` and ``socket://`` URLs, :data:`BOARD_TIMEOUT` otherwise."""
    return SIM_TIMEOUT if url == "sim" or url.startswith("socket://") else BOARD_TIMEOUT


class DeviceNotFound(OSError):
    """The port or socket named by the URL cannot be opened."""


class Transport:
    """A thin wrapper over a pyserial port: write bytes, read what arrives before a deadline."""

    def __init__(self, port):
        self.port = port

    def write(self, data: bytes) -> None:
        self.port.write(data)
        self.port.flush()

    def read_some(self, deadline: float, max_bytes: int = 65536) -> bytes:
        """Bytes available now, or the first ones to arrive before ``deadline`` (b"" on timeout)."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            n = self.port.in_waiting
            return self.port.read(min(n, max_bytes)) if n else b""
        self.port.timeout = remaining
        first = self.port.read(1)
        if not first:
            return b""
        n = self.port.in_waiting
        return first + (self.port.read(min(n, max_bytes)) if n else b"")

    def drain(self, quiet: float = 0.0) -> int:
        """Throw away pending input (stale replies), waiting ``quiet`` seconds for stragglers."""
        n = 0
        self.port.reset_input_buffer()
        if quiet > 0:
            deadline = time.monotonic() + quiet
            while True:
                got = self.read_some(deadline)
                if not got:
                    break
                n += len(got)
        return n

    def close(self) -> None:
        self.port.close()


def open_transport(url: str, *, baud: int = 115200) -> Transport:
    """Open ``url`` (a device path or a pyserial URL such as ``socket://host:port``)."""
    import errno

    import serial

    if url.startswith("socket://"):
        # pyserial's own message for a bad port number is cryptic; say what is wrong here
        host, _, port_text = url[len("socket://") :].split("?")[0].split("/")[0].rpartition(":")
        if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise DeviceNotFound(f"cannot open device {url!r}: expected socket://HOST:PORT with a port 1..65535")
    try:
        port = serial.serial_for_url(url, baudrate=baud, timeout=0.1, write_timeout=5.0)
    except (serial.SerialException, ValueError, OSError) as e:
        hint = ""
        code = getattr(e, "errno", None)
        if code == errno.EACCES:
            hint = " (no permission: add your user to the group owning the port, e.g. `dialout`, and log in again)"
        elif code == errno.EBUSY:
            hint = " (the port is busy: is another program, e.g. a serial terminal, holding it open?)"
        raise DeviceNotFound(f"cannot open device {url!r}: {e}{hint}") from None
    return Transport(port)
