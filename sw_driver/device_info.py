"""``shiftnpu device-info``: ask a device (board or sim-serve) who it is."""

from __future__ import annotations

import argparse

from .cli import positive_float, positive_int
from .transport import BOARD_TIMEOUT, SIM_TIMEOUT, default_reply_timeout

__all__ = ["HELP", "add_arguments", "run"]

HELP = "print a device's protocol version, config, memory map and error counters"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", required=True, help="serial port or URL, e.g. /dev/ttyUSB1 or socket://127.0.0.1:5555")
    p.add_argument("--baud", type=positive_int, default=115200, help="serial baud rate (default 115200)")
    p.add_argument(
        "--timeout",
        type=positive_float,
        default=None,
        help=f"seconds to wait for each reply (default {SIM_TIMEOUT:g} for socket:// URLs, as infer, "
        f"{BOARD_TIMEOUT:g} for a serial port)",
    )


def run(args: argparse.Namespace) -> int:
    from .device import Device

    with Device(args.device, timeout=args.timeout or default_reply_timeout(args.device), baud=args.baud) as d:
        info = d.info()
        print(f"device {args.device}: protocol version {info.protocol_version}, max payload {info.max_payload} bytes")
        print(f"  idle timeout {info.idle_timeout} cycles, {info.n_regs} registers, {info.n_counters} error counters")
        print("config:")
        print(info.config.summary())
        print("memory map:")
        for i, r in enumerate(info.regions):
            print(f"  region {i} {r.name:<8} {r.depth:>8} words x {r.width:>3} bits")
        print("error counters:")
        for name, v in d.error_counters().items():
            print(f"  {name:<16} {v}")
    return 0
