"""``shiftnpu sim-serve``: a design under Verilator behind a TCP socket, as a device for the driver.

The simulated device speaks the link protocol on ``socket://127.0.0.1:PORT``, so the very same
driver code (``sw_driver.device.Device``) that talks to a board over ``/dev/ttyUSB1`` talks to the
RTL. The bench (``sim/benches/link_serve_bench.py``) moves bytes between the socket and the
design's byte-stream ports ``rx``/``tx`` (mode ``bytes``), or bit-bangs its serial pins
``uart_rx``/``uart_tx`` through the real UARTs (mode ``uart``).

The design comes from a factory named ``"module:function"``; ``function(params)`` returns the top
component and ``params`` (JSON) also key the build cache. The default is :func:`link_test_top`;
the NPU's top level plugs in the same way. ``params["board"]`` (a :mod:`hw.boards` name) serves the
design in the form that board's build ships (:mod:`sim.board_form`); ``shiftnpu sim-serve --board
icebreaker`` serves the NPU so, with the board's default config.

In Python::

    with simulated_device(params={"config": cfg.to_dict()}) as url:
        dev = Device(url)
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["HELP", "add_arguments", "run", "serve", "simulated_device", "link_test_top", "load_factory"]

HELP = "run the design under Verilator as a device on a TCP socket (socket://127.0.0.1:PORT)"
DEFAULT_FACTORY = "sim.serve:link_test_top"
#: the factory ``--board`` serves (sim.npu_device.FACTORY; not imported here, to keep the CLI light)
NPU_FACTORY = "sim.npu_device:npu_top"
_REPO = Path(__file__).resolve().parent.parent


def link_test_top(params: dict[str, Any]):
    """Factory of :class:`hw.linktest.LinkTestTop` from JSON parameters.

    ``params``: ``config`` (NPUConfig dict), ``uart`` (bool), ``idle_timeout`` (cycles, optional).
    """
    from hw.linktest import LinkTestTop
    from quant.config import NPUConfig

    cfg = NPUConfig.from_dict(params.get("config", {}))
    return LinkTestTop(cfg, uart=bool(params.get("uart", False)), idle_timeout=params.get("idle_timeout"))


def load_factory(spec: str):
    """``"package.module:function"`` -> the function."""
    mod, sep, fn = spec.partition(":")
    if not sep or not mod or not fn:
        raise ValueError(f"factory must look like 'package.module:function', got {spec!r}")
    try:
        return getattr(importlib.import_module(mod), fn)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot load factory {spec!r}: {e}") from None


def serve(
    factory: str = DEFAULT_FACTORY,
    params: dict[str, Any] | None = None,
    *,
    name: str = "linktop",
    port: int = 0,
    port_file: str | None = None,
    stop_file: str | None = None,
    chunk: int = 2000,
) -> None:
    """Build the design and serve it until ``stop_file`` appears (blocks; Ctrl-C ends it too).

    ``params["board"]``, when given, builds the design in that board's form (see :mod:`sim.board_form`);
    with ``params["netlist"]`` too, the gate-level netlist Yosys makes of it (:mod:`sim.gate_level`,
    ``params["mapper"]`` its LUT mapper, default abc9).
    """
    from sim.runner import run_cocotb

    params = dict(params or {})
    make = load_factory(factory)
    mode = "uart" if params.get("uart") else "bytes"
    bench = {"mode": mode, "port": port, "port_file": port_file, "stop_file": stop_file, "chunk": chunk}
    if mode == "uart":
        from hw.uart import uart_divisor
        from quant.config import NPUConfig

        cfg = NPUConfig.from_dict(params.get("config", {}))
        bench["divisor"] = uart_divisor(cfg.clk_hz, cfg.baud)
    if params.get("netlist"):
        # the gate-level netlist Yosys makes of the design for the board (sim/gate_level.py)
        from sim.gate_level import run_gate_level

        if not params.get("board"):
            raise ValueError("a gate-level simulation (netlist) needs a board to synthesize for")
        run_gate_level(
            name,
            {"factory": factory, "params": params},
            lambda: make(params),
            "link_serve_bench",
            params["board"],
            mapper=params.get("mapper", "abc9"),
            bench_params=bench,
        )
        return
    run_cocotb(
        name,
        {"factory": factory, "params": params},
        lambda: make(params),
        "link_serve_bench",
        bench_params=bench,
        fast=True,
        board=params.get("board"),
    )


@contextlib.contextmanager
def simulated_device(
    factory: str = DEFAULT_FACTORY,
    params: dict[str, Any] | None = None,
    *,
    name: str = "linktop",
    start_timeout: float = 300.0,
    chunk: int = 2000,
) -> Iterator[str]:
    """Run :func:`serve` in a subprocess; yield its URL (``socket://127.0.0.1:PORT``); stop it after.

    The first run of a design compiles it with Verilator (tens of seconds); later runs reuse the
    build. Raises ``RuntimeError`` with the server's log if it exits or does not come up in time.
    """
    with tempfile.TemporaryDirectory(prefix="shiftnpu-serve-") as td:
        port_file, stop_file, log = Path(td) / "port", Path(td) / "stop", Path(td) / "serve.log"
        cmd = [
            sys.executable,
            "-m",
            "sim.serve",
            "--factory",
            factory,
            "--params",
            json.dumps(params or {}),
            "--name",
            name,
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--stop-file",
            str(stop_file),
            "--chunk",
            str(chunk),
        ]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_REPO), env.get("PYTHONPATH")]))
        env.pop("PYTEST_CURRENT_TEST", None)
        with open(log, "wb") as logf:
            proc = subprocess.Popen(
                cmd, cwd=_REPO, env=env, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            deadline = time.monotonic() + start_timeout
            while not port_file.exists():
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"sim-serve exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}"
                    )
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"sim-serve did not come up in {start_timeout:.0f} s:\n{log.read_text()[-3000:]}"
                    )
                time.sleep(0.05)
            yield f"socket://127.0.0.1:{int(port_file.read_text())}"
        finally:
            stop_file.touch()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                # Our own process group (start_new_session), nobody else's.
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


# -- command line --------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    from hw.boards import BOARDS
    from sw_driver.cli import CONFIG_OPTIONS, add_config_arguments, positive_int, tcp_port

    p.add_argument(
        "--port", type=tcp_port, default=5555, help="TCP port on 127.0.0.1 (0 = any free port; default 5555)"
    )
    p.add_argument("--uart", action="store_true", help="go through the real UARTs (bit timing; slow) instead of bytes")
    p.add_argument(
        "--board",
        help=f"serve the NPU exactly as this board's build ships it ({', '.join(BOARDS)}, or an amaranth-boards "
        "class name): elaborated for the board's FPGA (on the iCEBreaker the iCE40 forms of the memories, ARGMAX, "
        "host read path ...; its EBR/SPRAM primitives simulated by models), with the board's default config at "
        "its default clock; --rows/--cols/... replace fields of that config. Without --board: the generic form "
        "(what the tests simulate) of NPUConfig's defaults",
    )
    p.add_argument(
        "--netlist",
        action="store_true",
        help="with --board: serve the gate-level netlist Yosys makes of the design (synthesized as shiftnpu build "
        "does, simulated with the FPGA cells' models; the first run takes minutes) instead of the RTL",
    )
    p.add_argument(
        "--factory",
        default=None,
        help=f"top-level factory 'module:function' (default {DEFAULT_FACTORY}, the link test design; "
        f"with --board {NPU_FACTORY}, the NPU)",
    )
    p.add_argument(
        "--clk-hz",
        type=positive_int,
        dest="clk_hz",
        help="design clock (with --uart: sets the UART divisor) (default: the config's, 40000000)",
    )
    p.add_argument("--baud", type=positive_int, help="UART baud rate (default: the config's, 115200)")
    add_config_arguments(p)
    for group in p._action_groups:
        if group.title and group.title.startswith("generator parameters"):
            group.title = "generator parameters (default: the standard config, or the board's default with --board)"
    for action in p._actions:
        if action.dest in CONFIG_OPTIONS and action.dest not in ("weight_bits", "max_k") and action.help:
            action.help = action.help[:-1] + "; with --board the board's)"


def run(args: argparse.Namespace) -> int:
    from sw_driver.cli import CONFIG_OPTIONS, config_from_args

    board = getattr(args, "board", None)
    if board:
        from hw.boards import get_board
        from sim.npu_device import board_config

        board = get_board(board).name
        cfg = board_config(board, **{k: getattr(args, k, None) for k in CONFIG_OPTIONS})
    else:
        cfg = config_from_args(args)
    over = {k: getattr(args, k) for k in ("clk_hz", "baud") if getattr(args, k, None) is not None}
    cfg = cfg.replace(**over)
    factory = args.factory or (NPU_FACTORY if board else DEFAULT_FACTORY)
    if args.uart:
        from hw.uart import uart_divisor

        uart_divisor(cfg.clk_hz, cfg.baud)  # a baud rate the clock cannot make is refused now
    load_factory(factory)  # so is a factory that does not exist
    _check_port_free(args.port)  # and a port in use: before the minutes of the first Verilator build
    params = {"config": cfg.to_dict(), "uart": bool(args.uart)}
    if board:
        params["board"] = board
    if getattr(args, "netlist", False):
        if not board:
            print("shiftnpu sim-serve: --netlist needs --board (the FPGA to synthesize for)", file=sys.stderr)
            return 2
        params["netlist"] = True
    what = f"the {board} form of {factory}" if board else factory
    if params.get("netlist"):
        what = f"the {board} gate-level netlist of {factory}"
    print(
        f"shiftnpu sim-serve: building {what} ({cfg.rows}x{cfg.cols}; the first run compiles it), then serving on "
        f"socket://127.0.0.1:{args.port}; Ctrl-C stops",
        flush=True,
    )
    # (the NPU under the name sim.npu_device.simulated_npu builds it with: the tests' build is reused)
    name = "npu" if factory == NPU_FACTORY else "linktop"
    try:
        serve(factory, params, name=name, port=args.port)
    except KeyboardInterrupt:
        return 0
    return 0


def _check_port_free(port: int) -> None:
    import socket

    if port == 0:
        return
    s = socket.socket()
    # as the server binds (sim/benches/link_serve_bench.py): with SO_REUSEADDR, a port whose last
    # connections linger in TIME_WAIT (sim-serve stopped and started again) is free, one that
    # another program listens on is not
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        s.listen()
    except OSError as e:
        raise ValueError(
            f"--port {port}: cannot listen there ({e.strerror or e}); choose another, or 0 for any"
        ) from None
    finally:
        s.close()


def _main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sim.serve")
    p.add_argument("--factory", default=DEFAULT_FACTORY)
    p.add_argument("--params", default="{}")
    p.add_argument("--name", default="linktop")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--port-file")
    p.add_argument("--stop-file")
    p.add_argument("--chunk", type=int, default=2000)
    a = p.parse_args(argv)
    serve(
        a.factory,
        json.loads(a.params),
        name=a.name,
        port=a.port,
        port_file=a.port_file,
        stop_file=a.stop_file,
        chunk=a.chunk,
    )
    return 0


if __name__ == "__main__":
    sys.exit(_main())
