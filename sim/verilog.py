"""Amaranth -> Verilog, cached by a hash of the design.

Converting a large Amaranth design takes seconds and Verilator builds take longer, so every design
gets a stable directory under the build root named by a hash of (a) the design's name and
parameters and (b) the source of the ``hw`` and ``quant`` packages it is generated from. The same
design with the same sources is converted and compiled once and reused by every later test run.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["build_root", "source_hash", "design_dir", "write_verilog"]

_REPO = Path(__file__).resolve().parent.parent


def build_root() -> Path:
    """Root of all simulation builds: ``$SHIFTNPU_BUILD_DIR`` or ``build/`` beside the package."""
    root = os.environ.get("SHIFTNPU_BUILD_DIR")
    return Path(root) if root else _REPO / "build"


def source_hash() -> str:
    """Hash of every Python source the gateware is generated from (``hw/`` and ``quant/``)."""
    h = hashlib.sha256()
    for pkg in ("hw", "quant"):
        for p in sorted((_REPO / pkg).rglob("*.py")):
            h.update(str(p.relative_to(_REPO)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def design_dir(name: str, params: dict[str, Any]) -> Path:
    """The cache directory of design ``name`` with ``params`` (JSON-serializable)."""
    key = json.dumps({"name": name, "params": params, "src": source_hash()}, sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return build_root() / "sim" / f"{name}-{digest}"


def write_verilog(name: str, params: dict[str, Any], factory: Callable[[], Any], *, top: str | None = None) -> Path:
    """Convert ``factory()`` to Verilog in its cache directory (once) and return the file's path.

    The module is named ``top`` (default: ``name``). Writing goes through a temporary file and a
    rename, so an interrupted conversion never leaves a truncated cache entry behind.
    """
    from amaranth.back import verilog

    top = top or name
    d = design_dir(name, params)
    out = d / f"{top}.v"
    if out.exists():
        return out
    d.mkdir(parents=True, exist_ok=True)
    text = verilog.convert(factory(), name=top, emit_src=False)
    tmp = out.with_suffix(f".v.tmp{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(out)
    (d / "params.json").write_text(json.dumps(params, indent=1, sort_keys=True, default=str))
    return out
