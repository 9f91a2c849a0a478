"""``shiftnpu retarget``: a model file for another array/memory config (see :mod:`quant.retarget`).

The target config is a board's default config with the generator options applied (what
``shiftnpu build --board ...`` builds), or the config of a build report, a config JSON or another
model file (``--config``). Cheap to import.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sw_driver.cli import CONFIG_OPTIONS

from .build_cli import add_board_config_arguments, config_for_board

__all__ = ["HELP", "add_arguments", "run"]

HELP = "move a model file to another array/memory config (e.g. an 8x8 model onto a 4x4 board build)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .boards import BOARDS

    p.add_argument("model", help="the model file (.npu) to move")
    p.add_argument("-o", "--output", required=True, help="the model file to write (not the input)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--board",
        help=f"target the board's default config ({', '.join(BOARDS)} or an amaranth-boards class name), "
        "with the generator options below replacing its fields",
    )
    src.add_argument(
        "--config",
        help="target this config: a build's report.json, a config JSON (shiftnpu generate's) or another .npu model",
    )
    add_board_config_arguments(p)


def _load_config(path: str):
    from quant.config import NPUConfig
    from quant.model import NPUModel

    f = Path(path)
    if f.is_dir():
        raise ValueError(f"--config {path}: is a directory (give its report.json)")
    if not f.is_file():
        raise ValueError(f"--config {path}: no such file")
    if f.suffix == ".npu":
        return NPUModel.load(f).config
    try:
        d = json.loads(f.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"--config {path}: not JSON ({e})") from None
    if isinstance(d, dict) and isinstance(d.get("config"), dict):
        d = d["config"]  # a build report
    if not isinstance(d, dict):
        raise ValueError(f"--config {path}: expected a JSON object with the config's fields")
    return NPUConfig.from_dict(d)


def run(args: argparse.Namespace) -> int:
    from quant.model import NPUModel
    from quant.retarget import retarget
    from sw_driver.cli import check_output_file

    if Path(args.output).resolve() == Path(args.model).resolve():
        raise ValueError("--output must not be the input model (write the moved model to a new file)")
    check_output_file(args.output)
    model = NPUModel.load(args.model)
    over = {k: getattr(args, k) for k in CONFIG_OPTIONS if getattr(args, k, None) is not None}
    target = _load_config(args.config).replace(**over) if args.config else config_for_board(args)
    from dataclasses import fields

    from quant.compile import CompileError

    try:
        moved, batch = retarget(model, target)
    except CompileError as e:
        raise ValueError(f"{e}; a larger memory option (--act-depth, --weight-depth, ...) may make it fit") from None
    old = model.config
    changes = [
        f"{f.name} {getattr(old, f.name)} -> {getattr(target, f.name)}"
        for f in fields(old)
        if getattr(old, f.name) != getattr(target, f.name)
    ]
    moved.save(args.output)
    print(f"wrote {args.output}: {', '.join(changes) if changes else 'config unchanged'}")
    print(f"it compiles for this config at batch 1 to {batch}")
    return 0
