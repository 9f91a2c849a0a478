"""The NPU as a simulated device: Verilator behind a TCP socket, for the driver (sim-serve glue)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from quant.config import NPUConfig

__all__ = ["npu_top", "simulated_npu", "FACTORY"]

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


@contextlib.contextmanager
def simulated_npu(config: NPUConfig, *, uart: bool = False, start_timeout: float = 600.0) -> Iterator[str]:
    """Serve the NPU built for ``config``; yields the ``socket://`` URL for :class:`sw_driver.device.Device`."""
    from sim.serve import simulated_device

    params = {"config": config.to_dict(), "uart": uart}
    with simulated_device(FACTORY, params, name="npu", start_timeout=start_timeout, chunk=4000) as url:
        yield url
