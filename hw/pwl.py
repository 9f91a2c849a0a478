"""PWL activation unit (SPEC §5): segment search, one multiply, ``rshift_round``, saturation.

The unit holds ``tables`` tables of ``N = config.pwl_pieces`` pieces (N a power of two) with the
table-wide shift ``S = config.pwl_shift``. Each input names the table it is evaluated with, so one
unit can serve σ and tanh (and tanh of the cell) time-multiplexed.

Datapath (one result per cycle, fully pipelined, stalls as a whole when the output is not taken):

0. register the input;
1. ``log2 N`` binary-search stages over ``k_1 .. k_{N-1}`` on the raw ``z``: the knots are stored
   level by level of the search tree, one small memory per level, so each stage is one memory
   read and one compare (below ``k_1`` the search ends in segment 0, from ``k_{N-1}`` on in N-1);
2. read ``(k_i, k_{i+1}, m_i)`` of the segment found;
3. ``d = clamp(z, k_i, k_{i+1}) - k_i`` (equal to the golden model's clamp of ``z`` to
   ``[k_0, k_N]``, which can only bind in the end segments); ``d`` is int16, so the unit takes only
   tables whose spans keep it there (:meth:`~quant.pwl.PWLTable.check_hardware`: at most 2**15 on a
   half-open segment, 2**15 - 1 on the last, closed one; SPEC §5 itself sets no limit);
4. ``p = m_i * d``, one 16 x 16 signed multiply (one SB_MAC16 on iCE40);
5. ``y = sat(y_i + rshift_round(p, S), 16)`` in one addition, with ``y_i`` read from memory just
   in time.

The tables live in memories only (block RAM on FPGAs), initialised at build time (``init``) and rewritable by
the host through the write port (:meth:`PWLUnit.write_address` gives the address of each entry,
:meth:`PWLUnit.table_writes` the whole list for one :class:`~quant.pwl.PWLTable`).

Members
-------
i_stream : In(stream.Signature(StructLayout({"z": signed(16), "table": unsigned(tw)})))
    Input value (int16) and the table to evaluate it with.
o_stream : Out(stream.Signature(signed(16)))
    Result, Q0.15, in input order, :attr:`PWLUnit.latency` cycles after acceptance when not stalled.
w_en : In(1), w_addr : In(addr_width), w_data : In(signed(16))
    Table write port (one entry per cycle): address ``(table, field, index)`` packed by
    :meth:`PWLUnit.write_address`; field 0 = knot ``k_index`` (0..N), 1 = ``y_index``, 2 = ``m_index``.
    Do not write a table while inputs that use it are in flight.
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from quant.config import NPUConfig
from quant.pwl import PWLTable

from .ebr import CollisionFreeRAM, is_ice40
from .fixed import sat_narrow

__all__ = ["PWLUnit", "FIELD_KNOT", "FIELD_Y", "FIELD_M", "table_ram"]

FIELD_KNOT, FIELD_Y, FIELD_M = 0, 1, 2


def _bits(n: int) -> int:
    """Bits to count 0 .. n - 1 (at least 1)."""
    return max(1, (n - 1).bit_length())


def _u16(v: int) -> int:
    return int(v) & 0xFFFF


def table_ram(m: Module, name: str, width: int, depth: int, init, platform, *, model: bool = False, attrs=None):
    """A ``depth`` x ``width`` signed RAM with one synchronous read port and one write port, as
    ``(read, write)`` objects with the ``addr``/``data``/``en`` members of Amaranth's memory ports
    (drive ``read.en``: it has no default).

    With no initial contents on an iCE40 (or ``model=True``) it is a :class:`~hw.ebr.CollisionFreeRAM`:
    SB_RAM40_4K blocks with none of the logic Yosys adds around a ``Memory`` to make a read of the
    word being written return the old word (a registered copy of the write port, a comparator and a
    16-bit bypass multiplexer: about 30 logic cells per memory). The callers never use such a read:
    the PWL tables are written only while no input is in flight, and the gate unit does not read its
    cell memory while writing it. Elsewhere (and with ``init``) it is a plain ``Memory``.
    """
    if (model or is_ice40(platform)) and not any(int(v) for v in init):
        ram = CollisionFreeRAM(width, depth, model=model)
        m.submodules[name] = ram
        read = SimpleNamespace(addr=ram.raddr, en=ram.re, data=ram.rdata.as_signed())
        write = SimpleNamespace(addr=ram.waddr, data=ram.wdata, en=ram.we)
        return read, write
    mem = Memory(shape=signed(width), depth=depth, init=list(init), attrs=attrs)
    m.submodules[name] = mem
    return mem.read_port(domain="sync"), mem.write_port()


class PWLUnit(wiring.Component):
    """Pipelined PWL evaluator with ``tables`` host-writable tables (see the module docstring).

    Parameters
    ----------
    config : NPUConfig
        ``pwl_pieces`` (a power of two, >= 2) and ``pwl_shift``.
    tables : int
        Number of tables held.
    init : list of PWLTable, optional
        Build-time contents (one per table, each with ``config.pwl_pieces`` pieces and shift
        ``config.pwl_shift``). Tables without init hold zeros until written.
    """

    def __init__(
        self, config: NPUConfig, tables: int = 1, init: list[PWLTable] | None = None, *, ebr_model: bool = False
    ):
        if not isinstance(config, NPUConfig):
            raise TypeError(f"expected an NPUConfig, got {type(config).__name__}")
        N = config.pwl_pieces
        if N < 2 or N & (N - 1):
            raise ValueError(f"PWLUnit needs pwl_pieces to be a power of two >= 2, got {N}")
        if tables < 1:
            raise ValueError(f"PWLUnit needs at least one table, got {tables}")
        init = list(init or [])
        if len(init) > tables:
            raise ValueError(f"{len(init)} initial tables given for a unit with {tables}")
        for t in init:
            if t.pieces != N or t.shift != config.pwl_shift:
                raise ValueError(
                    f"initial table has {t.pieces} pieces and shift {t.shift}; the unit needs "
                    f"{N} pieces and shift {config.pwl_shift}"
                )
            t.check_hardware()
        self.config, self.tables, self.init = config, tables, init
        self.ebr_model = ebr_model  # the iCE40 memory path (hw/ebr.py's EBR model) on any platform, for tests
        self.pieces, self.shift = N, config.pwl_shift
        self.levels = N.bit_length() - 1
        self.table_width = _bits(tables)
        self.index_width = N.bit_length()  # holds 0 .. N
        self.addr_width = self.table_width + 2 + self.index_width
        super().__init__(
            {
                "i_stream": In(
                    stream.Signature(data.StructLayout({"z": signed(16), "table": unsigned(self.table_width)}))
                ),
                "o_stream": Out(stream.Signature(signed(16))),
                "w_en": In(1),
                "w_addr": In(self.addr_width),
                "w_data": In(signed(16)),
            }
        )

    @property
    def latency(self) -> int:
        """Cycles from an input's transfer (valid & ready) to its result's valid, when not stalled."""
        return self.levels + 5

    def write_address(self, table: int, field: int, index: int) -> int:
        """Write-port address of knot/y/m ``index`` of ``table``."""
        if not 0 <= table < self.tables:
            raise ValueError(f"table {table} out of range (0..{self.tables - 1})")
        top = self.pieces if field == FIELD_KNOT else self.pieces - 1
        if field not in (FIELD_KNOT, FIELD_Y, FIELD_M) or not 0 <= index <= top:
            raise ValueError(f"bad PWL table entry: field {field}, index {index}")
        return (table << (2 + self.index_width)) | (field << self.index_width) | index

    def table_writes(self, table: int, t: PWLTable) -> list[tuple[int, int]]:
        """``(address, value)`` writes that load PWL table ``t`` into slot ``table``."""
        if t.pieces != self.pieces or t.shift != self.shift:
            raise ValueError(f"table has {t.pieces} pieces / shift {t.shift}; unit has {self.pieces} / {self.shift}")
        t.check_hardware()
        w = [(self.write_address(table, FIELD_KNOT, i), int(k)) for i, k in enumerate(t.knots)]
        w += [(self.write_address(table, FIELD_Y, i), int(v)) for i, v in enumerate(t.y)]
        w += [(self.write_address(table, FIELD_M, i), int(v)) for i, v in enumerate(t.m)]
        return w

    # -- layout of the knots in the search tree -------------------------------------------------

    def _knot_level(self, j: int) -> tuple[int, int]:
        """Level and position in that level of knot ``k_j``, 1 <= j <= N-1."""
        ctz = (j & -j).bit_length() - 1
        return self.levels - 1 - ctz, j >> (ctz + 1)

    def elaborate(self, platform):
        m = Module()
        N, L, T, S = self.pieces, self.levels, self.tables, self.shift
        tw, iw = self.table_width, self.index_width

        # --- storage: everything in memories (RAM), nothing per table in flip-flops ---
        ice40 = self.ebr_model or is_ice40(platform)
        ram_attrs = {"ram_style": "block"} if ice40 else None
        level_ports = []
        for lvl in range(L):
            init = [0] * (T << lvl)
            for t, tab in enumerate(self.init):
                for j in range(1, N):
                    jl, p = self._knot_level(j)
                    if jl == lvl:
                        init[(t << lvl) + p] = int(tab.knots[j])
            # iCE40 (no distributed RAM): block RAM even for the 1-entry-per-table root level (as
            # flip-flops it would cost 16 cells per table plus a read mux and write decode).
            # Elsewhere the small levels stay in fast distributed RAM.
            level_ports.append(
                table_ram(m, f"knots_l{lvl}", 16, T << lvl, init, platform, model=self.ebr_model, attrs=ram_attrs)
            )

        def seg_mem(name, values):
            init = [0] * (T * N)
            for t, tab in enumerate(self.init):
                for i in range(N):
                    init[t * N + i] = int(values(tab)[i])
            return table_ram(m, name, 16, T * N, init, platform, model=self.ebr_model)

        # segment i of a table: its start knot k_i, its end knot k_(i+1) (so the clamp to
        # [k_0, k_N] happens per segment: only segments 0 and N-1 can see z outside [k_i, k_(i+1)]),
        # y_i and m_i; one 16-bit memory each (one iCE40 EBR each, the same count as one 64-bit word)
        k_mem = seg_mem("seg_k", lambda tab: tab.knots[:-1])
        kn_mem = seg_mem("seg_kn", lambda tab: tab.knots[1:])
        y_mem = seg_mem("seg_y", lambda tab: tab.y)
        m_mem = seg_mem("seg_m", lambda tab: tab.m)

        # --- host writes ---
        w_table = self.w_addr[2 + iw :]
        w_field = self.w_addr[iw : iw + 2]
        w_index = self.w_addr[:iw]
        w_knot = self.w_en & (w_field == FIELD_KNOT)
        for (_, wp), addr, en in (
            (k_mem, w_table * N + w_index[:L], w_knot & (w_index < N)),
            (kn_mem, w_table * N + (w_index - 1)[:L], w_knot & (w_index != 0)),
            (y_mem, w_table * N + w_index[:L], self.w_en & (w_field == FIELD_Y) & (w_index < N)),
            (m_mem, w_table * N + w_index[:L], self.w_en & (w_field == FIELD_M) & (w_index < N)),
        ):
            m.d.comb += [wp.addr.eq(addr), wp.data.eq(self.w_data), wp.en.eq(en)]
        for lvl, (_, wp) in enumerate(level_ports):
            ctz = L - 1 - lvl
            # knot j is on this level iff its low ctz bits are 0 and bit ctz is 1
            on_level = (w_index[: ctz + 1] == (1 << ctz)) & (w_index < N)
            pos = w_index[ctz + 1 :] if ctz + 1 < iw else Const(0, 1)
            m.d.comb += [
                wp.addr.eq((w_table << lvl) + pos if lvl else w_table),
                wp.data.eq(self.w_data),
                wp.en.eq(w_knot & on_level),
            ]

        # --- pipeline --- (only the valid bits have a reset: the data registers need none, and
        # without one they pack better, into the DSP's own registers where they border it)
        n_stages = self.latency - 1  # stages 1 .. L+4 after the input register; L+4 is the output
        valid = [Signal(name=f"v{s}") for s in range(n_stages)]
        v_in = Signal()
        adv = Signal()
        m.d.comb += adv.eq(~valid[-1] | self.o_stream.ready)
        m.d.comb += [self.i_stream.ready.eq(adv), self.o_stream.valid.eq(valid[-1])]
        with m.If(adv):
            m.d.sync += [v_in.eq(self.i_stream.valid), valid[0].eq(v_in)]
            for s in range(1, n_stages):
                m.d.sync += valid[s].eq(valid[s - 1])

        # stage l of zc / tt / idx is the input register (l = 0) or search step l
        zc = [Signal(signed(16), name=f"zc{s}", reset_less=True) for s in range(L + 2)]
        tt = [Signal(tw, name=f"t{s}", reset_less=True) for s in range(L + 1)]
        idx = [Signal(max(L, 1), name=f"idx{s}", reset_less=True) for s in range(L + 1)]
        with m.If(adv):
            m.d.sync += [zc[0].eq(self.i_stream.payload.z), tt[0].eq(self.i_stream.payload.table)]

        # binary search on the raw z (below k_1 it ends in segment 0, at or above k_(N-1) in
        # segment N-1); level l is read with stage l's address and decided in stage l + 1
        cur_idx = idx[0]
        for lvl in range(L):
            rp = level_ports[lvl][0]
            step = N >> (lvl + 1)
            m.d.comb += [rp.en.eq(adv), rp.addr.eq((tt[lvl] << lvl) + (cur_idx >> (L - lvl)) if lvl else tt[lvl])]
            decided = Signal(max(L, 1), name=f"idx{lvl + 1}_d")
            m.d.comb += decided.eq(Mux(zc[lvl + 1] >= rp.data, idx[lvl + 1] | step, idx[lvl + 1]))
            with m.If(adv):
                m.d.sync += [zc[lvl + 1].eq(zc[lvl]), tt[lvl + 1].eq(tt[lvl]), idx[lvl + 1].eq(cur_idx)]
            cur_idx = decided

        # R(L+1): (k_i, k_(i+1), m_i) of the segment found; y_i is read two stages later from the
        # registered address, so it needs no pipeline registers of its own
        seg_addr = [Signal(range(T * N), name=f"seg_addr{s}", reset_less=True) for s in range(2)]
        rk, rkn, ry, rm = (ports[0] for ports in (k_mem, kn_mem, y_mem, m_mem))
        m.d.comb += [p.addr.eq(tt[L] * N + cur_idx) for p in (rk, rkn, rm)]
        m.d.comb += ry.addr.eq(seg_addr[1])
        m.d.comb += [p.en.eq(adv) for p in (rk, rkn, ry, rm)]
        with m.If(adv):
            m.d.sync += [zc[L + 1].eq(zc[L]), seg_addr[0].eq(tt[L] * N + cur_idx), seg_addr[1].eq(seg_addr[0])]
        k_r, kn_r = rk.data.as_signed(), rkn.data.as_signed()

        # R(L+2): the clamped offset d = clamp(z, k_i, k_(i+1)) - k_i in [0, 2**15 - 1] (check_hardware
        # holds every loaded table to spans that keep it there), as three parallel carry chains and a mux
        above = Signal(reset_less=True)
        d_in = Signal(signed(17), reset_less=True)  # z - k_i; negative (z below k_i) only in segment 0
        d_span = Signal(signed(16), reset_less=True)
        m_r = Signal(signed(16), reset_less=True)
        with m.If(adv):
            m.d.sync += [
                m_r.eq(rm.data.as_signed()),
                above.eq(zc[L + 1] > kn_r),
                d_in.eq(zc[L + 1] - k_r),
                d_span.eq(kn_r - k_r),
            ]
        d = Signal(signed(16))
        m.d.comb += d.eq(Mux(d_in[-1], 0, Mux(above, d_span, d_in[:16])))
        # R(L+3): p = m_i * d (one SB_MAC16 on iCE40; no reset, so the register is the DSP's own),
        # R(L+4): sat(y_i + rshift_round(p, S), 16) as one carry chain and a saturation, computing
        # (p + (y_i 2^S + 2^(S-1))) >> S: the low S bits of y_i 2^S are zero, so the rounding
        # constant is OR-ed in
        prod = Signal(signed(32), reset_less=True)
        with m.If(adv):
            m.d.sync += prod.eq(m_r * d)
        # y_i + rshift_round(p, S) with |p| <= 2**30: 33 - S bits for small S, but y_i alone needs 16
        # and the sum 17 (a narrower total wrapped for S >= 18 instead of saturating)
        total = Signal(signed(max(32 - S + 2, 18)))
        bias = Signal(signed(16 + S))
        m.d.comb += bias.eq(Cat(Const(1 << (S - 1), S), ry.data) if S else ry.data)
        m.d.comb += total.eq((prod + bias) >> S)
        total_sat = sat_narrow(m, total, 16, "total_sat")
        out = Signal(signed(16), reset_less=True)
        with m.If(adv):
            m.d.sync += out.eq(total_sat)
        m.d.comb += self.o_stream.payload.eq(out)
        return m
