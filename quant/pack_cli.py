"""``shiftnpu pack``: write a model's device memory images (``$readmemh`` files + manifest)."""

from __future__ import annotations

import argparse

__all__ = ["HELP", "add_arguments", "run"]

HELP = "compile a model file into the NPU's memory images (weight, channel, program) as $readmemh files"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model file (.npu)")
    p.add_argument("-o", "--out", required=True, help="output directory (created; files in it are overwritten)")
    p.add_argument(
        "--batch",
        default="1",
        help="samples per device run the program is compiled for: a number, or 'max' for the largest that fits "
        "(default 1; the driver must use the same batch to run a bitstream booted with this image)",
    )


def run(args: argparse.Namespace) -> int:
    from .cliargs import check_output_dir
    from .model import NPUModel
    from .npu_compile import largest_batch
    from .pack import pack_model

    check_output_dir(args.out)
    model = NPUModel.load(args.model)
    if args.batch == "max":
        batch = largest_batch(model)
    else:
        try:
            batch = int(args.batch)
        except ValueError:
            raise SystemExit(f"shiftnpu pack: --batch must be a number or 'max', got {args.batch!r}") from None
        if batch < 1:
            raise SystemExit(f"shiftnpu pack: --batch must be >= 1, got {batch}")
    try:
        img = pack_model(model, batch=batch)
    except ValueError as e:
        raise SystemExit(f"shiftnpu pack: {args.model} does not fit this config at batch {batch}: {e}") from None
    out = img.write(args.out)
    print(f"{args.model} -> {out}/ (batch {batch})")
    for r in img.regions:
        pct = 100 * len(r.words) / r.depth
        print(f"  {r.name + '.memh':<14} {len(r.words):>6} of {r.depth:>6} words x {r.width:>2} bits ({pct:5.1f} %)")
    return 0
