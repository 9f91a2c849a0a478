"""Helpers shared by the ``shiftnpu`` subcommands: checks of command-line values (argparse ``type=``
functions and output-path checks), so a bad value is refused in one line before any long work, and
:func:`write_atomically`, so an interrupted command never leaves a truncated output file.

They live in ``quant`` because subcommands of every package use them and ``quant`` imports nothing
of ours; :mod:`sw_driver.cli` re-exports them.
"""

from __future__ import annotations

import argparse

__all__ = [
    "positive_int",
    "nonnegative_int",
    "positive_float",
    "tcp_port",
    "check_output_file",
    "check_output_dir",
    "write_atomically",
]


def positive_int(text: str) -> int:
    """argparse ``type``: an integer >= 1."""
    v = _int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return v


def nonnegative_int(text: str) -> int:
    """argparse ``type``: an integer >= 0."""
    v = _int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text}")
    return v


def positive_float(text: str) -> float:
    """argparse ``type``: a finite number > 0."""
    import math

    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return v


def tcp_port(text: str) -> int:
    """argparse ``type``: a TCP port, 0..65535 (0: any free port)."""
    v = _int(text)
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port 0..65535, got {text}")
    return v


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def check_output_file(path, what: str = "output file") -> None:
    """Refuse, before any long work, an output file that cannot be written: its directory is
    missing or not a directory, the path is a directory, or it is not writable."""
    import os
    from pathlib import Path

    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{what} {str(p)!r} is a directory; give a file name")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        why = "is not a directory" if parent.exists() else "does not exist"
        raise ValueError(f"{what} {str(p)!r}: directory {str(parent)!r} {why}")
    if not os.access(parent, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise ValueError(f"{what} {str(p)!r} is not writable")


def check_output_dir(path, what: str = "output directory") -> None:
    """Refuse, before any long work, a directory that cannot be created or written (creating nothing):
    ``path`` or its first existing ancestor must be a writable directory."""
    import os
    from pathlib import Path

    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ValueError(f"{what} {str(p)!r} exists and is not a directory")
    q = p.absolute()
    while not q.exists():
        q = q.parent
    if not q.is_dir():
        raise ValueError(f"cannot create {what} {str(p)!r}: {str(q)!r} is not a directory")
    if not os.access(q, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {str(p)!r} is not writable ({str(q)!r} is read-only)")


def write_atomically(path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename, so an
    interrupted or failed write leaves the previous file as it was, never a truncated one.

    A new file gets the permissions any file the user writes gets (``0o666`` less the umask, applied
    by ``open`` itself: reading the umask would briefly change it for every thread); a replaced file
    keeps its own. A symbolic link is written through, as a plain write would, not replaced."""
    import contextlib
    import os
    import secrets
    import stat
    from pathlib import Path

    p = Path(path)
    if p.is_dir():
        raise IsADirectoryError(21, "is a directory", str(p))
    if p.is_symlink():
        p = Path(os.path.realpath(p))
    raw = data.encode() if isinstance(data, str) else bytes(data)
    try:
        mode = stat.S_IMODE(p.stat().st_mode)
    except FileNotFoundError:
        mode = None
    directory = p.parent if str(p.parent) else Path(".")
    while True:
        tmp = directory / f".{p.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:  # (a 48-bit random name: another writer's, practically never)
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
