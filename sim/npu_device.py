"""The NPU as a simulated device: Verilator behind a TCP socket, for the driver (sim-serve glue)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from quant.config import NPUConfig

__all__ = ["npu_top", "simulated_npu", "serve_params", "board_config", "FACTORY"]

FACTORY = "sim.npu_device:npu_top"


def npu_top(params: dict[str, Any]):
    """Factory of :class:`hw.npu.NPU` from JSON parameters ``config``, ``uart``, ``idle_timeout``, ``rnn``."""
    from hw.npu import NPU

    cfg = NPUConfig.from_dict(params.get("config", {}))
    return NPU(
        cfg,
        uart=bool(params.get("uart", False)),
        idle_timeout=params.get("idle_timeout"),
        rnn=bool(params.get("rnn", True)),
    )


def board_config(board: str, **over: int | None) -> NPUConfig:
    """The config a default ``shiftnpu build --board board`` builds: the board's default config with
    ``over`` replacing fields, at the clock its PLL makes of the board's default frequency (the
    clock the device reports; e.g. 39.75 MHz on the iCEBreaker)."""
    from hw.boards import get_board
    from hw.pll import pll_for

    b = get_board(board)
    pll = pll_for(b.family, b.clk_mhz, b.default_mhz)
    return b.default_config(**over).replace(clk_hz=int(round(pll.f_out_mhz * 1e6)))


def serve_params(
    config: NPUConfig, *, uart: bool = False, board: str | None = None, netlist: bool = False, mapper: str = "abc9"
) -> dict[str, Any]:
    """The parameters :func:`simulated_npu` serves :data:`FACTORY` with (they key its build cache)."""
    params: dict[str, Any] = {"config": config.to_dict(), "uart": uart}
    if board is not None:
        params["board"] = board
    if netlist:
        if board is None:
            raise ValueError("a gate-level simulation (netlist=True) needs a board to synthesize for")
        params["netlist"] = True
        if mapper != "abc9":
            params["mapper"] = mapper
    return params


@contextlib.contextmanager
def simulated_npu(
    config: NPUConfig | None = None,
    *,
    uart: bool = False,
    start_timeout: float = 600.0,
    board: str | None = None,
    netlist: bool = False,
    mapper: str = "abc9",
) -> Iterator[str]:
    """Serve the NPU built for ``config``; yields the ``socket://`` URL for :class:`sw_driver.device.Device`.

    ``board`` (a :mod:`hw.boards` name) serves the RTL in the form that board's build ships (see
    :mod:`sim.board_form`: on the iCEBreaker the iCE40 forms of the memories, the ARGMAX, the host
    read latency ...); ``config`` then defaults to :func:`board_config` (the board's default config
    at its default build's clock). ``netlist`` serves the gate-level netlist Yosys makes of that
    form instead of the RTL (:mod:`sim.gate_level`: synthesized as ``shiftnpu build`` does, LUT
    mapper ``mapper``, simulated with Yosys' cell models; minutes to build the first time).
    """
    from sim.serve import simulated_device

    if config is None:
        if board is None:
            raise ValueError("simulated_npu needs a config or a board")
        config = board_config(board)
    params = serve_params(config, uart=uart, board=board, netlist=netlist, mapper=mapper)
    with simulated_device(FACTORY, params, name="npu", start_timeout=start_timeout, chunk=4000) as url:
        yield url
