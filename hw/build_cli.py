"""``shiftnpu build``: bitstream and resource/timing report for a board (see :mod:`hw.build`).

Cheap to import: Amaranth and the tools load only when the command runs.
"""

from __future__ import annotations

import argparse

from sw_driver.cli import CONFIG_OPTIONS as _CONFIG_FIELDS
from sw_driver.cli import nonnegative_int

__all__ = ["HELP", "add_arguments", "run"]

HELP = "build a bitstream for a board through YoWASP and report resources and timing"


def add_board_argument(p: argparse.ArgumentParser) -> None:
    from .boards import BOARDS

    defaults = "; ".join(f"{name} {b.describe_default()}" for name, b in BOARDS.items())
    p.add_argument(
        "--board",
        required=True,
        help=f"{', '.join(BOARDS)}, or any amaranth-boards iCE40/ECP5 platform class name. "
        f"Each board has a default config, used unless --rows/--cols/--bits/--max-k/--act-depth/... replace its fields: {defaults}",
    )


def add_board_config_arguments(p: argparse.ArgumentParser) -> None:
    """The generator options of :func:`sw_driver.cli.add_config_arguments`, saying that they replace
    fields of the board's default config (not NPUConfig's)."""
    from sw_driver.cli import add_config_arguments

    add_config_arguments(p)
    for group in p._action_groups:
        if group.title and group.title.startswith("generator parameters"):
            group.title = "generator parameters (default: the board's default config, see --board)"
    for action in p._actions:
        if action.dest in _CONFIG_FIELDS and action.dest not in ("weight_bits", "max_k"):
            action.help = action.help.split(" (default")[0] + " (default: the board's)"


def config_for_board(args: argparse.Namespace):
    """The board's default config (:meth:`hw.boards.Board.default_config`) with the generator options given."""
    from .boards import get_board

    return get_board(args.board).default_config(**{k: getattr(args, k, None) for k in _CONFIG_FIELDS})


def check_design(cfg, design: str) -> None:
    """Refuse a config the design cannot have, before estimating or building: the whole NPU needs a
    square array (a layer's results are the next layer's activations); the array alone does not."""
    if design == "npu" and cfg.rows != cfg.cols:
        raise ValueError(
            f"the whole NPU needs a square array (a layer's results are the next layer's activations), "
            f"got {cfg.rows}x{cfg.cols}; --design array takes the array alone in any shape"
        )


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_board_argument(p)
    p.add_argument(
        "--freq",
        default=None,
        help="design clock in MHz, or 'auto' for the highest clock that closes timing (default: the board's)",
    )
    p.add_argument("--build-dir", default=None, help="where the bitstream and report go (default build/<board>)")
    p.add_argument("--seed", type=nonnegative_int, default=1, help="nextpnr placement seed (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress line while the tools run")
    p.add_argument(
        "--design",
        choices=("npu", "array"),
        default="npu",
        help="npu: the whole NPU behind the UART (default); array: the systolic array alone, in a pin harness",
    )
    p.add_argument(
        "--model",
        default=None,
        help="a .npu model file to preload into the NPU's memories (the bitstream boots with it; "
        "the config comes from the model)",
    )
    add_board_config_arguments(p)


def run(args: argparse.Namespace) -> int:
    from sw_driver.cli import check_output_dir

    from .build import TimingError, build

    cfg = config_for_board(args)
    build_dir = args.build_dir or f"build/{args.board}"
    check_output_dir(build_dir, "build directory")  # refused now, not after synthesis
    model = None
    if args.model:
        from quant.model import NPUModel

        model = NPUModel.load(args.model)
        over = {k: getattr(args, k) for k in _CONFIG_FIELDS if getattr(args, k) is not None}
        cfg = model.config.replace(**over)  # a mismatch is refused by build() with the fields named
    check_design(cfg, args.design)  # before build() clears the previous bitstream from the build directory
    try:
        rep = build(
            cfg,
            args.board,
            args.freq,
            build_dir,
            design=args.design,
            model=model,
            seed=args.seed,
            progress=not args.no_progress,
        )
    except TimingError as e:
        print(e.report.text())
        raise
    print(rep.text())
    print(f"\nreport: {build_dir}/report.json, {build_dir}/report.txt")
    return 0
