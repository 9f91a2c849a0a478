"""Load a bitstream onto a board with whichever programmer is installed.

``shiftnpu program --board B`` finds the bitstream of the last ``shiftnpu build`` for ``B`` (or
takes ``--bitstream``) and calls iceprog, openFPGALoader or dfu-util, whichever the board can use
and the system has, in that board's order of preference. None of them comes from pip: when none
is found the command says which to install.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

__all__ = ["HELP", "add_arguments", "run", "programmer_command", "MissingProgrammer"]

HELP = "load a bitstream onto a board (openFPGALoader, iceprog or dfu-util)"

#: openFPGALoader's board names
_OFL_BOARD = {"ice40": "ice40_generic", "icebreaker": "ice40_generic", "orangecrab": "orangeCrab", "ulx3s": "ulx3s"}

_INSTALL = {
    "iceprog": "iceprog (Debian/Ubuntu: apt-get install fpga-icestorm)",
    "openFPGALoader": "openFPGALoader (Debian/Ubuntu: apt-get install openfpgaloader)",
    "dfu-util": "dfu-util (Debian/Ubuntu: apt-get install dfu-util)",
}


class MissingProgrammer(OSError):
    """No programming tool for this board is installed."""


def _candidates(board, bitstream: Path, flash: bool) -> list[tuple[str, list[str]]]:
    """(tool, argv) in order of preference for ``board``."""
    key = board.name.split("-")[0].lower()
    ofl_board = _OFL_BOARD.get(key, "ice40_generic" if board.family == "ice40" else key)
    ofl = ["openFPGALoader", "-b", ofl_board] + (["-f"] if flash else []) + [str(bitstream)]
    if board.programmer == "iceprog":
        # iceprog writes the SPI flash by default; -S loads SRAM only
        return [("iceprog", ["iceprog"] + ([] if flash else ["-S"]) + [str(bitstream)]), ("openFPGALoader", ofl)]
    if board.programmer == "dfu-util":
        return [("dfu-util", ["dfu-util", "-a", "0", "-D", str(bitstream)]), ("openFPGALoader", ofl)]
    return [("openFPGALoader", ofl)]


def programmer_command(board, bitstream: str | Path, *, flash: bool = False) -> list[str]:
    """The command that loads ``bitstream`` onto ``board`` with the first programmer found."""
    from .boards import Board, get_board

    b = board if isinstance(board, Board) else get_board(board)
    cands = _candidates(b, Path(bitstream), flash)
    for tool, argv in cands:
        path = shutil.which(tool)
        if path:
            return [path] + argv[1:]
    wanted = " or ".join(_INSTALL[t] for t, _ in cands)
    raise MissingProgrammer(f"no programmer for {b.name} found on PATH; install {wanted}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .build_cli import add_board_argument

    add_board_argument(p)
    p.add_argument("--bitstream", help="bitstream file (default: the one in --build-dir)")
    p.add_argument("--build-dir", default=None, help="build directory of `shiftnpu build` (default build/<board>)")
    p.add_argument(
        "--flash", action="store_true", help="write the configuration flash (default: SRAM, lost on power-off)"
    )
    p.add_argument("--dry-run", action="store_true", help="print the command instead of running it")


def run(args: argparse.Namespace) -> int:
    import json

    from .boards import get_board

    get_board(args.board)  # an unknown board is named first, not as a missing build
    bitstream = args.bitstream
    if bitstream is None:
        report = Path(args.build_dir or f"build/{args.board}") / "report.json"
        if not report.exists():
            raise FileNotFoundError(
                f"no build found ({report} is missing): run `shiftnpu build --board {args.board}` first"
            )
        try:
            rep = json.loads(report.read_text())
            bitstream = rep["bitstream"]
            if not isinstance(bitstream, str):
                raise TypeError
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
            raise ValueError(
                f"{report} is not a shiftnpu build report (no 'bitstream' entry): rebuild with "
                f"`shiftnpu build --board {args.board}` or give --bitstream"
            ) from None
    if Path(bitstream).is_dir():
        raise ValueError(f"bitstream {bitstream} is a directory, not a bitstream file")
    if not Path(bitstream).exists():
        raise FileNotFoundError(f"bitstream {bitstream} does not exist")
    if Path(bitstream).stat().st_size == 0:
        raise ValueError(f"bitstream {bitstream} is empty (an interrupted build?): rebuild it")
    argv = programmer_command(args.board, bitstream, flash=args.flash)
    print(" ".join(argv))
    if args.dry_run:
        return 0
    return subprocess.call(argv)
