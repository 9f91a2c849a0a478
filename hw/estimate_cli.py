"""``shiftnpu estimate``: what a config needs on a board, before any synthesis (see :mod:`hw.estimate`)."""

from __future__ import annotations

import argparse

__all__ = ["HELP", "add_arguments", "run"]

HELP = "estimate logic, flip-flops, memory, DSPs and Fmax of a config on a board (no synthesis, about a second)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .build_cli import add_board_argument, add_board_config_arguments

    add_board_argument(p)
    p.add_argument("--json", action="store_true", help="print the estimate as JSON")
    p.add_argument(
        "--design", choices=("npu", "array"), default="npu", help="the whole NPU (default) or the array alone"
    )
    add_board_config_arguments(p)


def run(args: argparse.Namespace) -> int:
    """Exit status 0 when the config fits the board, 1 when it does not."""
    import json

    from .build_cli import check_design, config_for_board
    from .estimate import estimate, fit_hint, largest_fitting_array

    cfg = config_for_board(args)
    check_design(cfg, args.design)  # an NPU that cannot be built does not "fit"
    est = estimate(cfg, args.board, design=args.design)
    if args.json:
        d = {"board": est.board, "device": est.device, "needs": est.as_resources(), "has": est.available}
        d.update(fmax_mhz=est.fmax_mhz, fits=est.fits, config=est.config.to_dict(), design=est.design)
        d.update(blocks=est.blocks, short=est.over)
        if not est.fits:
            smaller = largest_fitting_array(cfg, args.board, args.design)
            d["largest_fitting_array"] = None if smaller is None else [smaller.rows, smaller.cols]
        print(json.dumps(d, indent=1, sort_keys=True))
    else:
        print(est.text())
        if not est.fits:
            print("  " + fit_hint(cfg, args.board, args.design))
    return 0 if est.fits else 1
