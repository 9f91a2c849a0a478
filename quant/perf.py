"""Cycle model of the GEMM engine (hw/gemm.py): how many cycles a GEMM takes, exactly.

The model steps the engine's control registers -- weight loader, issuer, drain slots, the slot
pipeline through the array, the accumulator banks, the requantizer and the result collector --
one clock at a time, with the same update rules as the RTL, but none of the data. It therefore
predicts the RTL's cycle count exactly (a regression checks this on many shapes) and runs without
Amaranth, so the host and the compiler can use it for latency estimates.

It also checks the schedule's safety rules that the RTL relies on (a weight row is never
rewritten while a vector still needs its old weights, nor after a vector that needs the new ones
has reached it; an accumulator row is never read in the cycle it is written) and raises ``AssertionError`` if a change to the control ever broke them.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import NPUConfig
from .tiling import tiles

__all__ = [
    "GemmTiming",
    "gemm_cycles",
    "weight_lead",
    "array_latency",
    "pipeline_latency",
    "ROWS_PER_STAGE",
    "REQUANT_LATENCY",
    "DRAIN_BUFFER_ROWS",
]

#: Pipeline stages of hw.requant.Requantizer.
REQUANT_LATENCY = 6

#: Entries of the engine's drain row FIFO (hw/gemm.py imports it from here, so the two agree).
#: With more than one, drain slots issued but not yet captured plus rows buffered never exceed
#: it; with one (the default: a row is cols * acc_width flip-flops), the next row is read while
#: the head row's last lanes leave, so that it arrives as the last one is taken, and on 8x8 and
#: larger arrays the drain is as fast as with two.
DRAIN_BUFFER_ROWS = 1


@dataclass(frozen=True)
class GemmTiming:
    """Cycle count and derived figures of one GEMM on the engine."""

    m: int
    k: int
    n: int
    cycles: int
    macs: int  # useful multiply-accumulates: M * K * N
    pe_count: int

    @property
    def utilization(self) -> float:
        """Useful MACs / (PEs x cycles)."""
        return self.macs / (self.pe_count * self.cycles)


#: Array rows whose adders a partial sum passes in one cycle (hw.systolic): the row skew, and
#: the array latency, are one cycle per group of rows.
ROWS_PER_STAGE = 2


def array_latency(config: NPUConfig) -> int:
    """hw.systolic.SystolicArray.latency: the row skew plus the PE's two stages."""
    return (config.rows - 1) // ROWS_PER_STAGE + 2


def pipeline_latency(config: NPUConfig) -> int:
    """hw.gemm.GemmEngine.pipeline_latency: cycles from a slot's issue to its accumulator write.

    The feature memory read and a register (hw.gemm's ``read_regs``: after the block RAM on the
    ECP5, on its address on the iCE40), then the array. The weight rows are delayed alike.
    """
    return 2 + array_latency(config)


def weight_lead(config: NPUConfig) -> int:
    """hw.gemm.GemmEngine.weight_lead: cycles from a tile's first row read to its pass's first vector.

    The loader reads row ``r`` of the tile in cycle ``T0 + r`` and writes it into the array at the
    end of cycle ``T0 + r + 2``; a vector issued in cycle ``T`` uses row ``r``'s weights in cycle
    ``T + 2 + r // ROWS_PER_STAGE`` (both one cycle later than the block RAM alone allows, the
    read register). So ``T >= T0 + 1 + r - r // ROWS_PER_STAGE`` for every row,
    the largest for the last row (the model asserts it). At least 2: the engine's registered
    address bases and row counts need a cycle after a pass ends before the next one starts.
    """
    r = config.rows - 1
    return max(2, 1 + r - r // ROWS_PER_STAGE)


def gemm_cycles(
    config: NPUConfig, m: int, k: int, n: int, *, drain_rows: int = DRAIN_BUFFER_ROWS, max_cycles: int = 50_000_000
) -> GemmTiming:
    """Cycles from command acceptance to the last result write, as the engine's ``done`` reports.

    ``drain_rows`` is the engine's drain row buffer depth (``GemmEngine(config, drain_rows)``).
    """
    R, C, Mb = config.rows, config.cols, config.m_block
    if R != C:
        raise ValueError("the GEMM engine needs a square array")
    M, KT, NT = m, tiles(k, R), tiles(n, C)
    if M < 1:
        raise ValueError("M must be >= 1")
    L = pipeline_latency(config)  # slot issue -> accumulator write
    lead = weight_lead(config)
    G = ROWS_PER_STAGE

    # issuer
    running, i_kt, i_nt, i_mb_off, i_row, i_accbank, i_in_pass = True, 0, 0, 0, 0, 0, False
    w_ready = False
    acc_busy = [False, False]
    # loader
    ld_todo, ld_active, ld_step, ld_kt, ld_nt, ld_mb_left = True, False, 0, 0, 0, M
    ld_wr, ld_wrow, ld_early = False, 0, False
    # drain
    d_todo, d_bank, d_nt, d_mb_off, d_req, d_inflight = True, 0, 0, 0, 0, 0
    block_ready = [False, False]
    queue: list[bool] = []  # drain row FIFO: each row's "last row of the last block" flag, head first
    buf_lane = 0
    st_valid, st_final = False, False
    rq = [(False, False)] * REQUANT_LATENCY  # (valid, final-lane) per requantizer stage
    # slot pipeline: meta[i] = (vec, drain, block_end, accbank, row) or None
    meta: list[tuple | None] = [None] * (L + 1)
    # safety bookkeeping: issue cycles of each pass's first and last vector, passes issued, tiles loaded
    pass_first: dict[int, int] = {}
    pass_last: dict[int, int] = {}
    i_pass = ld_tile = -1

    prev_vec = prev2_vec = False
    drain_ok = start_ok = False
    cycle = 0
    while True:
        cycle += 1
        if cycle > max_cycles:
            raise RuntimeError(f"cycle model did not finish within {max_cycles} cycles")
        # ---------------- combinational view of this cycle ----------------
        rows_left = M - i_mb_off
        i_rows = min(rows_left, Mb)
        last_kt, last_nt, last_mb = i_kt == KT - 1, i_nt == NT - 1, rows_left <= Mb
        d_rows_left = M - d_mb_off
        d_rows = min(d_rows_left, Mb)
        d_last_block = d_nt == NT - 1 and d_rows_left <= Mb
        if drain_rows == 1:  # one entry: the next row may be read while the head's last lanes leave
            # (4x4: a row's lanes fit in the pipeline latency, the next slot may be decided at a
            # capture that is not the block's last)
            tap = meta[L]
            d_free = d_inflight == 0 or (C - 1 - L <= 0 and tap is not None and tap[1] and tap[4] != d_rows - 1)
            drain_room = d_free and (not queue or buf_lane >= C - 2 - L)
        else:
            drain_room = d_inflight + len(queue) < drain_rows
        # after a loader start with the last vector still pending, that vector issues next cycle;
        # the drain's own conditions are registered (drain_ok, a cycle behind), lane_ok a lane early
        drain_slot = drain_ok and not (ld_early and w_ready)
        can_start = start_ok and w_ready and not (i_rows == 1 and (prev_vec or prev2_vec))
        issue_vec = not drain_slot and (i_in_pass or can_start)
        last_pending = (i_in_pass or can_start) and i_row == i_rows - 1
        ld_busy = ld_active or (ld_wr and lead > R)  # one row: the tile is marked ready in its write cycle
        ld_start = ld_todo and not ld_busy and (not w_ready or last_pending)
        take = bool(queue)  # the requantizer never stalls in the model (no out_stall)
        pop = take and buf_lane == C - 1
        o_valid, o_final = rq[-1]

        if o_valid and o_final:
            return GemmTiming(m, k, n, cycle, m * k * n, config.pe_count)

        # the row read last cycle (written at the end of the next cycle, and vectors reach rows a
        # cycle after their issue plus the skew, both one cycle later than the block RAM allows):
        # the previous pass's vectors have all used it, and none of its own pass's vectors has
        # reached it yet
        if ld_wr:
            g = ld_wrow // G
            if ld_tile - 1 in pass_last:
                assert cycle >= pass_last[ld_tile - 1] + 1 + g, "weight row rewritten while in use"
            if ld_tile in pass_first:
                assert cycle <= pass_first[ld_tile] + g, "weight row written after its pass reached it"

        # the accumulator row is read at meta[L - 2] (hw.gemm read_regs) and written at meta[L]: no
        # vector between the two may write the row read
        tap_r, tap_w = meta[L - 2], meta[L]
        if tap_r is not None and (tap_r[0] or tap_r[1]):
            for w in (meta[L - 1], tap_w):
                if w is not None and w[0]:
                    assert (tap_r[3], tap_r[4]) != (w[3], w[4]), "accumulator row read before its update is written"

        # ---------------- next state ----------------
        n_w_ready, n_acc_busy, n_block_ready = w_ready, list(acc_busy), list(block_ready)
        # loader
        n_ld_wr, n_ld_wrow, n_ld_early = ld_active, ld_step, ld_start and w_ready
        n_ld_active, n_ld_step = ld_active, ld_step
        n_ld_kt, n_ld_nt, n_ld_mb_left, n_ld_todo = ld_kt, ld_nt, ld_mb_left, ld_todo
        if ld_start:
            n_ld_active, n_ld_step = True, 0
        # applied after the issuer's clear; with one row, weight_lead 2 falls in the write cycle
        w_ready_set = (ld_active or ld_wr) and ld_step == lead - 1
        if ld_active:
            n_ld_step = ld_step + 1
            if ld_step == R - 1:
                n_ld_active = False
                if ld_kt == KT - 1:
                    n_ld_kt = 0
                    if ld_nt == NT - 1:
                        n_ld_nt, n_ld_mb_left = 0, ld_mb_left - Mb
                        if ld_mb_left <= Mb:
                            n_ld_todo = False
                    else:
                        n_ld_nt = ld_nt + 1
                else:
                    n_ld_kt = ld_kt + 1

        # issuer
        n_d_req, n_d_inflight = d_req, d_inflight
        n_running, n_i_kt, n_i_nt, n_i_mb_off = running, i_kt, i_nt, i_mb_off
        n_i_row, n_i_accbank, n_i_in_pass = i_row, i_accbank, i_in_pass
        slot = None
        if drain_slot:
            n_d_req, n_d_inflight = d_req + 1, d_inflight + 1
            slot = (False, True, False, d_bank, d_req)
        if issue_vec:
            block_end = last_kt and i_row == i_rows - 1
            slot = (True, False, block_end, i_accbank, i_row)
            n_i_in_pass, n_i_row = True, i_row + 1
            if i_row == 0:
                n_acc_busy[i_accbank] = True
                i_pass += 1
                # (the loader may already have started the next tile if this one-row pass's vector
                # was pending then, see ld_early)
                assert i_pass <= ld_tile <= i_pass + 1, "pass started without its weight tile"
                pass_first[i_pass] = cycle
            if i_row == i_rows - 1:
                pass_last[i_pass] = cycle
                n_i_in_pass, n_i_row = False, 0
                n_w_ready = False
                if last_kt:
                    n_i_kt, n_i_accbank = 0, 1 - i_accbank
                    if last_nt:
                        n_i_nt, n_i_mb_off = 0, i_mb_off + Mb
                        if last_mb:
                            n_running = False
                    else:
                        n_i_nt = i_nt + 1
                else:
                    n_i_kt = i_kt + 1

        if w_ready_set:
            n_w_ready = True
        # accumulator write tap
        if tap_w is not None and tap_w[0] and tap_w[2]:
            n_block_ready[tap_w[3]] = True
        # drain capture
        n_queue, n_buf_lane = (queue[1:] if pop else list(queue)), buf_lane
        n_d_bank, n_d_nt, n_d_mb_off, n_d_todo = d_bank, d_nt, d_mb_off, d_todo
        if tap_w is not None and tap_w[1]:
            row = tap_w[4]
            n_d_inflight -= 1
            n_queue.append(d_last_block and row == d_rows - 1)
            assert len(n_queue) <= drain_rows, "drain row captured with no free buffer entry"
            if row == d_rows - 1:
                n_acc_busy[d_bank] = False
                n_block_ready[d_bank] = False
                n_d_bank, n_d_req = 1 - d_bank, 0
                if d_nt == NT - 1:
                    n_d_nt, n_d_mb_off = 0, d_mb_off + Mb
                    if d_rows_left <= Mb:
                        n_d_todo = False
                else:
                    n_d_nt = d_nt + 1
        # lanes into the requantizer
        n_st_valid, n_st_final = False, st_final
        if take:
            n_st_valid = True
            n_st_final = queue[0] and buf_lane == C - 1
            n_buf_lane = 0 if pop else buf_lane + 1
        n_rq = [(st_valid, st_final and st_valid)] + rq[:-1]

        n_start_ok = running and (i_kt != 0 or not acc_busy[i_accbank])  # registered: a cycle behind
        n_drain_ok = d_todo and block_ready[d_bank] and d_req < d_rows and drain_room and not drain_slot

        # ---------------- commit ----------------
        drain_ok, start_ok = n_drain_ok, n_start_ok
        ld_tile += ld_start
        prev_vec, prev2_vec = issue_vec, prev_vec
        meta = [slot] + [slot] + meta[1:L]
        w_ready, acc_busy, block_ready = n_w_ready, n_acc_busy, n_block_ready
        ld_wr, ld_wrow, ld_active, ld_step, ld_early = n_ld_wr, n_ld_wrow, n_ld_active, n_ld_step, n_ld_early
        ld_kt, ld_nt, ld_mb_left, ld_todo = n_ld_kt, n_ld_nt, n_ld_mb_left, n_ld_todo
        d_req, d_inflight = n_d_req, n_d_inflight
        running, i_kt, i_nt, i_mb_off = n_running, n_i_kt, n_i_nt, n_i_mb_off
        i_row, i_accbank, i_in_pass = n_i_row, n_i_accbank, n_i_in_pass
        queue, buf_lane = n_queue, n_buf_lane
        d_bank, d_nt, d_mb_off, d_todo = n_d_bank, n_d_nt, n_d_mb_off, n_d_todo
        st_valid, st_final = n_st_valid, n_st_final
        rq = n_rq
