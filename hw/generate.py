"""``shiftnpu generate``: the gateware as standalone Verilog plus its config as JSON.

For users who take the design into an ASIC flow or a vendor tool. ``--top`` picks the block: the
bare systolic array, or the GEMM engine (array + buffers + sequencer + requantizer).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["HELP", "add_arguments", "run", "generate", "TOPS"]

HELP = "write the array or the GEMM engine as standalone Verilog plus the config as JSON"

TOPS = ("engine", "array")


def generate(config, top: str, out_dir: Path) -> dict[str, Path]:
    """Write ``<top>.v`` and ``config.json`` into ``out_dir``; return their paths."""
    from amaranth.back import verilog

    from hw.gemm import GemmEngine
    from hw.systolic import SystolicArray
    from quant.cliargs import write_atomically

    if top not in TOPS:
        raise ValueError(f"unknown top {top!r}; choose one of {', '.join(TOPS)}")
    component = GemmEngine(config) if top == "engine" else SystolicArray(config)
    name = f"shiftnpu_{top}"
    out_dir.mkdir(parents=True, exist_ok=True)
    v = out_dir / f"{name}.v"
    write_atomically(v, verilog.convert(component, name=name, emit_src=False))
    info = {
        "config": config.to_dict(),
        "derived": {
            "acc_width": config.acc_width,
            "array_sum_width": config.array_sum_width,
            "pe_kind": config.pe_kind,
        },
        "top": name,
    }
    if top == "array":
        info["derived"]["latency"] = component.latency
    j = out_dir / "config.json"
    write_atomically(j, json.dumps(info, indent=2, sort_keys=True) + "\n")
    return {"verilog": v, "config": j}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from sw_driver.cli import add_config_arguments

    add_config_arguments(p)
    p.add_argument("--top", choices=TOPS, default="engine", help="block to generate (default: engine)")
    p.add_argument("-o", "--out", type=Path, default=Path("out"), help="output directory (default: out/)")


def run(args: argparse.Namespace) -> int:
    from sw_driver.cli import check_output_dir, config_from_args

    cfg = config_from_args(args)
    check_output_dir(args.out)
    paths = generate(cfg, args.top, args.out)
    print(f"wrote {paths['verilog']} ({paths['verilog'].stat().st_size // 1024} KiB) and {paths['config']}")
    return 0
