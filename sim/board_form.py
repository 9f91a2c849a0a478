"""A design in the form a board build ships, for simulation.

Several blocks elaborate differently on an iCE40 (``hw.ebr.is_ice40``, ``hw.spram.has_spram``: the
sequencer's single-stage ARGMAX, the host read latency of 1, the engine's read registers, the
memories as SB_RAM40_4K / SB_SPRAM256KA primitives, ...). A simulation that elaborates with
``platform=None`` checks the generic form only. :class:`BoardForm` elaborates a design with the
board's own amaranth-boards platform object (the one ``shiftnpu build`` hands to Amaranth), then
replaces each FPGA primitive ``Instance`` in the elaborated netlist by a simulation model of that
primitive, wired to the very signals the RTL connects to the primitive:

======================================  =========================================================
primitive                               model
======================================  =========================================================
SB_RAM40_4K, READ/WRITE_MODE 0 (256x16) :class:`hw.ebr.EBRModel`
SB_RAM40_4K, READ/WRITE_MODE 1 (512x8)  :class:`hw.byteram.EBR512x8Model` (with its INIT contents)
SB_SPRAM256KA                           :class:`hw.spram.SPRAMModel` (all 16K words)
======================================  =========================================================

A port the model does not have must be tied the way the model assumes (the clocks to one clock
domain, SPRAM powered on and awake, the 512x8 block always reading); anything else, and any other
primitive, raises ``ValueError`` rather than simulate something the board would not do. Read data
the primitive leaves undefined (Yosys' ``cells_sim.v``: the SPRAM's DATAOUT after a write, an EBR
read of the word written at the same edge) come out complemented, so a design that relies on them
fails its tests. Nothing else of the design changes: the simulated RTL is the shipped RTL up to the
primitives' models.

Usage: ``run_cocotb(..., board="icebreaker")``, ``simulated_npu(config, board="icebreaker")`` or
``shiftnpu sim-serve --board icebreaker``; by hand, ``verilog.convert(BoardForm(top, "icebreaker"))``.
"""

from __future__ import annotations

import hashlib
import importlib
from collections import Counter
from pathlib import Path
from typing import Any

from amaranth.hdl import ClockSignal, Const, DomainRenamer, Elaboratable, Fragment, Instance, Module, Mux, Signal
from amaranth.lib import wiring

__all__ = ["BoardForm", "board_platform", "board_form_hash", "substitute_primitives"]


def board_form_hash() -> str:
    """Hash of this file: the models it puts in a design belong in a build cache's key."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def board_platform(board: Any):
    """The amaranth-boards platform object of ``board`` (a :class:`hw.boards.Board` or its name)."""
    from hw.boards import get_board

    b = get_board(board) if isinstance(board, str) else board
    try:
        cls = getattr(importlib.import_module(b.module), b.cls)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot load the platform of board {b.name!r} ({b.module}.{b.cls}): {e}") from None
    return cls()


class BoardForm(Elaboratable):
    """``inner`` elaborated for ``board``'s platform, FPGA primitives replaced by simulation models.

    The ports are ``inner``'s (its signature and members), so ``verilog.convert`` and the cocotb
    runner take it as they take ``inner``. After elaboration, :attr:`primitives` counts the
    primitives replaced, by type.
    """

    def __init__(self, inner: Elaboratable, board: Any):
        from hw.boards import get_board

        self.inner = inner
        self.board = get_board(board) if isinstance(board, str) else board
        self.platform = board_platform(self.board)
        #: primitive type -> how many were replaced by models (filled in by :meth:`elaborate`)
        self.primitives: Counter[str] = Counter()

    @property
    def signature(self):
        return self.inner.signature

    def __getattr__(self, name: str):
        # the inner component's ports (verilog.convert reads them by the signature's member names)
        if name.startswith("_") or name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def elaborate(self, platform):
        # (``platform`` is None here: the board's own platform object replaces it)
        fragment = Fragment.get(self.inner, self.platform)
        self.primitives = substitute_primitives(fragment)
        return fragment


def substitute_primitives(fragment: Fragment) -> Counter:
    """Replace every primitive ``Instance`` below ``fragment`` (in place) by its simulation model.

    Returns the number replaced per primitive type. Raises ``ValueError`` for a primitive without a
    model or one whose configuration the model does not cover.
    """
    counts: Counter[str] = Counter()
    for i, (sub, name, src_loc) in enumerate(fragment.subfragments):
        if isinstance(sub, Instance):
            model = _model_for(sub, name)
            fragment.subfragments[i] = (Fragment.get(model, None), name, src_loc)
            counts[sub.type] += 1
        else:
            counts.update(substitute_primitives(sub))
    return counts


def _param(inst: Instance, key: str, default: int | None = None) -> int:
    v = inst.parameters.get(key, default)
    if v is None:
        raise ValueError(f"{inst.type} instance has no parameter {key}")
    return v.value if isinstance(v, Const) else int(v)


def _const(inst: Instance, port: str) -> int | None:
    """The value of input ``port`` when it is tied to a constant, else None."""
    v, _ = inst.ports[port]
    return v.value if isinstance(v, Const) else None


def _require_tied(inst: Instance, name: str, ties: dict[str, int]) -> None:
    for port, want in ties.items():
        if port not in inst.ports or _const(inst, port) != want:
            got = inst.ports[port][0] if port in inst.ports else "unconnected"
            raise ValueError(
                f"{inst.type} {name!r}: the simulation model needs {port} tied to {want}, the design has {got!r}"
            )


def _clock_domain(inst: Instance, name: str, clocks: tuple[str, ...]) -> str:
    domains = set()
    for port in clocks:
        v = inst.ports.get(port, (None,))[0]
        if not isinstance(v, ClockSignal):
            raise ValueError(f"{inst.type} {name!r}: {port} must be a clock domain's clock for the model, got {v!r}")
        domains.add(v.domain)
    if len(domains) != 1:
        raise ValueError(f"{inst.type} {name!r}: the model has one clock, the design uses {sorted(domains)}")
    return domains.pop()


def _init_bytes_512x8(inst: Instance) -> list[int]:
    """The 512 bytes a 512 x 8 SB_RAM40_4K holds from its INIT_0..F (``hw.byteram.ebr512x8_init`` inverted)."""
    init = [_param(inst, f"INIT_{k:X}", 0) for k in range(16)]
    rows = [(init[r // 16] >> (16 * (r % 16))) & 0xFFFF for r in range(256)]
    return [sum(((rows[a % 256] >> (2 * b + a // 256)) & 1) << b for b in range(8)) for a in range(512)]


def _model_for(inst: Instance, name: str) -> Elaboratable:
    """A Module holding the model of ``inst``, connected to the signals ``inst`` is connected to."""
    from hw.byteram import EBR512x8Model
    from hw.ebr import EBRModel
    from hw.spram import SPRAMModel

    if inst.type == "SB_RAM40_4K":
        mode = (_param(inst, "READ_MODE", 0), _param(inst, "WRITE_MODE", 0))
        if mode == (0, 0):
            if any(_param(inst, f"INIT_{k:X}", 0) for k in range(16)):
                raise ValueError(f"SB_RAM40_4K {name!r}: the 256 x 16 model has no initial contents")
            make, extra = EBRModel, {}
        elif mode == (1, 1):
            init = _init_bytes_512x8(inst)
            make, extra = (lambda: EBR512x8Model(init)), {"RE": 1, "RCLKE": 1, "WE": 1, "MASK": 0}  # (MASK unused)
        else:
            raise ValueError(f"SB_RAM40_4K {name!r}: no simulation model of READ_MODE/WRITE_MODE {mode}")
        domain = _clock_domain(inst, name, ("RCLK", "WCLK"))
    elif inst.type == "SB_SPRAM256KA":
        make, extra = SPRAMModel, {"STANDBY": 0, "SLEEP": 0, "POWEROFF": 1}  # (POWEROFF is active low)
        domain = _clock_domain(inst, name, ("CLOCK",))
    else:
        raise ValueError(f"no simulation model of the primitive {inst.type} (instance {name!r})")
    _require_tied(inst, name, extra)
    model = make()
    clocks = {"RCLK", "WCLK", "CLOCK"}
    members = model.signature.members
    unknown = set(inst.ports) - set(members) - set(extra) - clocks
    if unknown:
        raise ValueError(f"{inst.type} {name!r}: the simulation model has no port {', '.join(sorted(unknown))}")
    m = Module()
    m.submodules.model = model
    outputs = {}
    for port, member in members.items():
        if port not in inst.ports:
            raise ValueError(f"{inst.type} {name!r}: port {port} is not connected")
        value, kind = inst.ports[port]
        if member.flow == wiring.In:
            if kind != "i":
                raise ValueError(f"{inst.type} {name!r}: port {port} is an input of the primitive")
            m.d.comb += getattr(model, port).eq(value)
        else:
            if kind != "o":
                raise ValueError(f"{inst.type} {name!r}: port {port} is an output of the primitive")
            outputs[port] = value
    # Where the primitive's read data are undefined (cells_sim.v: a write leaves the SPRAM's DATAOUT
    # 'x'; an EBR read of the word written at the same clock edge races the write) the model's word
    # is replaced by its complement, so that a design which uses such data gives wrong results.
    upd, bad = _undefined_read(model, mode if inst.type == "SB_RAM40_4K" else None)
    poison = Signal(name="undefined")
    with m.If(upd):
        m.d.sync += poison.eq(bad)
    for port, value in outputs.items():
        word = getattr(model, port)
        m.d.comb += value.eq(Mux(poison, ~word, word))
    return DomainRenamer({"sync": domain})(m) if domain != "sync" else m


def _undefined_read(model, mode):
    """``(update, undefined)``: the cycles the read data change, and whether the new data are undefined."""
    if mode is None:  # SB_SPRAM256KA: a write cycle leaves DATAOUT undefined
        return model.CHIPSELECT, model.WREN
    if mode == (0, 0):  # 256 x 16: a read of the word being written
        same = model.RADDR[:8] == model.WADDR[:8]
        return model.RE & model.RCLKE, model.WE & model.WCLKE & same
    same = model.RADDR[:9] == model.WADDR[:9]  # 512 x 8, always reading
    return Const(1, 1), model.WCLKE & same
