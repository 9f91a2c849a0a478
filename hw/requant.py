"""The per-channel output requantizer (SPEC §3), one value per cycle, pipelined.

    y = sat(rshift_round((acc + bias) * M, n), 8), optionally max(y, 0) (fused ReLU)

In *gate mode* (``gate = 1`` in the payload, the LSTM path) the result saturates to 16 bits
instead, without ReLU: the Q3.12 gate pre-activation ``z = sat(rshift_round(acc * M, n), 16)`` of
SPEC §4. A requantizer built with ``gate=True`` therefore has a 16-bit output and shifter window,
and saturates an int8 result from the 16-bit one (``sat8(sat16(v)) == sat8(v)``).

It is time-shared by the columns of the array: one requantizer per engine, not per MAC.

Area: the output has only 8 bits, so the rounding shift never builds the full shifted value.

* ``rshift_round(p, n) == (t + 1) >> 1`` with ``t = (2 * p) >> n`` (floor of ``p / 2**(n-1)``;
  for ``n == 0``, ``t = 2p`` and the result is ``p``): the rounding adder is as wide as the
  output, not as the product, and there is no ``2**(n-1)`` decoder.
* The shifter is logarithmic, largest stage first, and keeps only a window of the low bits the
  result can still need (``out_bits + 2`` at the end) plus one flag: "a bit shifted out of the
  top of the window differs from the sign", which is exactly "the result saturates".
* The multiply ``(acc + bias) * M`` is written as 16-bit partial products so that Yosys maps
  them onto iCE40 SB_MAC16 blocks (``synth_ice40 -dsp``) or ECP5 multipliers; the stage after
  the multiply adds the partial products.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from quant.config import NPUConfig
from quant.fixed import N_MAX

from .ebr import is_ice40

__all__ = ["RequantInput", "Requantizer"]


def RequantInput(config: NPUConfig, gate: bool = False) -> data.StructLayout:  # noqa: N802 - a layout factory
    """Payload of one requantization: the accumulator and its channel's parameters (``gate``: the
    gate-mode flag, on a gate-capable requantizer only)."""
    fields = {
        "acc": signed(config.acc_width),
        "bias": signed(config.BIAS_BITS),
        "mult": unsigned(config.M_BITS),
        "shift": unsigned(6),
        "relu": unsigned(1),
    }
    if gate:
        fields["gate"] = unsigned(1)
    return data.StructLayout(fields)


class Requantizer(wiring.Component):
    """Pipelined SPEC §3 requantizer with a valid/ready stream on each side.

    Members
    -------
    i_stream : In(stream.Signature(RequantInput(config)))
        Accumulator value with bias, multiplier ``M``, shift ``n`` and ReLU flag.
    o_stream : Out(stream.Signature(signed(8 or 16)))
        The result, :attr:`latency` cycles later when the output is not stalled: int8, or with
        ``gate=True`` a 16-bit value holding the int8 result or, in gate mode, the int16 one.
    i_tag, o_tag : In(tag_width), Out(tag_width)
        Side information (e.g. a destination address) that travels with each value.
    """

    #: Pipeline stages: add bias; multiply; add the partial products and shift by the large steps;
    #: the small steps; round and saturate; and one more, placed by ``add_late``: with it (the
    #: ECP5 build) an input register in front of the bias add (the engine's bias comes straight
    #: from a block RAM, and the DP16KD's 5.6 ns clock-to-output plus a 33-bit add missed 100 MHz),
    #: without it (the iCE40) the rounding and the saturation take a stage each (there the
    #: register shares the logic cell of the LUT in front of it: few extra cells).
    latency = 6

    #: Operand width of one partial product (the SB_MAC16's 16 x 16).
    PART_BITS = 16

    def __init__(
        self,
        config: NPUConfig,
        tag_width: int = 0,
        *,
        gate: bool = False,
        add_late: bool | None = None,
        collapse: bool = True,
    ):
        self.config = config
        self.tag_width = tag_width
        self.gate = gate
        #: Where the partial products are added: at the end of stage 2, behind the multipliers
        #: (``False``), or at the start of stage 3, in front of the shifter (``True``). Same
        #: latency, same results; ``None`` picks by the target: the iCE40's slow carry chain and
        #: long saturation test want the sum beside the SB_MAC16s, while on the ECP5 a
        #: MULT18X18D and a 50-bit carry chain in one cycle miss 100 MHz. In simulation (no
        #: platform) the default is ``True``; the tests build both.
        self.add_late = add_late
        #: The stages advance when the output is free or taken (``True``: a bubble is filled while
        #: the output is held) or only when the output may move (``False``: the stage enables are
        #: ``o_stream.ready`` alone, so a consumer whose ready is a flip-flop keeps the output valid
        #: off the enables' path; the GEMM engine does this).
        self.collapse = collapse
        self.out_bits = 16 if gate else config.ACT_BITS
        super().__init__(
            {
                "i_stream": In(stream.Signature(RequantInput(config, gate))),
                "o_stream": Out(stream.Signature(signed(self.out_bits))),
                "i_tag": In(max(tag_width, 1)),
                "o_tag": Out(max(tag_width, 1)),
            }
        )

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        ob = self.out_bits
        x_w = max(cfg.acc_width, cfg.BIAS_BITS) + 1
        p_w = x_w + cfg.M_BITS + 1  # signed product width
        P = self.PART_BITS

        # Every stage advances together when the output is free or being taken.
        advance = Signal()
        m.d.comb += [
            advance.eq((~self.o_stream.valid | self.o_stream.ready) if self.collapse else self.o_stream.ready),
            self.i_stream.ready.eq(advance),
        ]
        L = self.latency
        v = [Signal(name=f"valid{i}") for i in range(L)]
        tags = [Signal(len(self.i_tag), name=f"tag{i}") for i in range(L)]
        relu = [Signal(name=f"relu{i}") for i in range(L - 1)]
        gate = [Signal(name=f"gate{i}") for i in range(L - 1)]
        shift = [Signal(range(N_MAX + 1), name=f"shift{i}") for i in range(3)]

        i = self.i_stream.payload
        # The stage registers of the core pipeline (bias add .. saturate) are v[o : o + 5] etc.:
        # o = 1 with the input register (add_late), 0 with the split round / saturate stage.
        late = (not is_ice40(platform)) if self.add_late is None else self.add_late
        o = int(late)
        in_valid = self.i_stream.valid
        if late:
            i_q = Signal.like(i, name="i_q")
            with m.If(advance):
                m.d.sync += [i_q.eq(i), v[0].eq(in_valid)]
            i, in_valid = i_q, v[0]
        x = Signal(signed(x_w))
        mult = Signal(unsigned(cfg.M_BITS))

        # Stage 2: the product, as unsigned 16 x M partial products of the low parts of x (one
        # SB_MAC16 each) and -M for the sign bit of x (weight -2**(x_w-1)), added in LUTs.
        n_parts = (x_w - 1 + P - 1) // P
        parts = [Signal(unsigned(P + cfg.M_BITS), name=f"pp{k}") for k in range(n_parts)]
        for k in range(n_parts):
            m.d.comb += parts[k].eq(x[k * P : min((k + 1) * P, x_w - 1)] * mult)
        # With add_late the partial products leave the multipliers through a register and are
        # added at the start of stage 3: a MULT18X18D and a 50-bit carry chain in one cycle were
        # the ECP5 NPU's critical path at 100 MHz. On the iCE40 that sum in front of the shifter
        # and its saturation test is the slower place (28 vs 41.5 MHz), so there p is registered.
        p = Signal(signed(p_w))
        if late:
            parts_q = [Signal(unsigned(P + cfg.M_BITS), name=f"pp{k}_q") for k in range(n_parts)]
            x_neg = Signal()
            mult_q = Signal(unsigned(cfg.M_BITS))
            m.d.comb += p.eq(sum(parts_q[k] << (k * P) for k in range(n_parts)) - Mux(x_neg, mult_q << (x_w - 1), 0))
            stage2 = [*(parts_q[k].eq(parts[k]) for k in range(n_parts)), x_neg.eq(x[-1]), mult_q.eq(mult)]
        else:
            stage2 = [p.eq(sum(parts[k] << (k * P) for k in range(n_parts)) - Mux(x[-1], mult << (x_w - 1), 0))]
        # Stages 3 and 4 (with add_late, stage 3 first adds the partial products into p): t = (2p) >> n, as a
        # low window of W bits plus "the bits above differ from the sign"; the shifter is split after its first SPLIT (largest) steps for the clock.
        W = ob + 2
        t_lo = Signal(unsigned(W))
        t_ovf = Signal()
        t_sign = Signal()
        y = Signal(signed(ob))

        # The windowed shifter (combinational, from p): largest stage first.
        val = Cat(Const(0, 1), p)  # 2p, p_w + 1 bits, sign-extended above
        sign = p[-1]
        n_stages = N_MAX.bit_length()
        need = [W]  # window width needed after each stage, last stage first
        for s in range(n_stages):
            need.append(need[-1] + (1 << s))
        need = need[::-1]  # need[k]: width needed before stage k (stage k shifts by 2**(n_stages-1-k))

        SPLIT = 2
        mid = Signal(need[SPLIT])
        mid_ovf, mid_sign = Signal(), Signal()

        def shifter(cur, sign, ovf, steps, n_bits):
            for k in steps:
                amount = 1 << (n_stages - 1 - k)
                sel = n_bits[n_stages - 1 - k]
                w_out = need[k + 1]

                def bit(j, cur=cur):
                    return cur[j] if j < len(cur) else sign

                nxt = Signal(w_out, name=f"sh{amount}")
                m.d.comb += nxt.eq(Cat(Mux(sel, bit(j + amount), bit(j)) for j in range(w_out)))
                # without the shift, bits [w_out, w_out + amount) leave the window at the top
                above = [bit(j) ^ sign for j in range(w_out, min(w_out + amount, max(len(cur), w_out)))]
                if above:
                    ovf = ovf | (~sel & Cat(*above).any())
                cur = nxt
            return cur, ovf

        mid_next, mid_ovf_next = shifter(val, sign, Const(0, 1), range(SPLIT), shift[1])
        cur, ovf = shifter(mid, mid_sign, mid_ovf, range(SPLIT, n_stages), shift[2])

        with m.If(advance):
            m.d.sync += [
                # 1: bias
                v[o].eq(in_valid),
                x.eq(i.acc + i.bias),
                mult.eq(i.mult),
                shift[0].eq(i.shift),
                relu[o].eq(i.relu),
                gate[o].eq(i.gate if self.gate else 0),
                # 2: product
                v[o + 1].eq(v[o]),
                *stage2,
                shift[1].eq(shift[0]),
                relu[o + 1].eq(relu[o]),
                gate[o + 1].eq(gate[o]),
                # 3: windowed shift, large steps
                v[o + 2].eq(v[o + 1]),
                mid.eq(mid_next),
                mid_ovf.eq(mid_ovf_next),
                mid_sign.eq(sign),
                shift[2].eq(shift[1]),
                relu[o + 2].eq(relu[o + 1]),
                gate[o + 2].eq(gate[o + 1]),
                # 4: windowed shift, small steps
                v[o + 3].eq(v[o + 2]),
                t_lo.eq(cur),
                t_ovf.eq(ovf),
                t_sign.eq(mid_sign),
                relu[o + 3].eq(relu[o + 2]),
                gate[o + 3].eq(gate[o + 2]),
                # 5: round and saturate (without add_late: round, then saturate in stage 6)
                v[o + 4].eq(v[o + 3]),
            ]

            # t is W-bit signed (its bits above the window all equal the sign) unless t_ovf.
            t = Signal(signed(W + 1))
            r = Signal(signed(W + 1))
            m.d.comb += t.eq(Cat(t_lo, t_sign))
            s_ovf, s_sign, s_relu, s_gate = t_ovf, t_sign, relu[o + 3], gate[o + 3]
            if late:
                m.d.comb += r.eq((t + 1) >> 1)
            else:
                s_ovf, s_sign = Signal(), Signal()
                m.d.sync += [
                    r.eq((t + 1) >> 1),
                    s_ovf.eq(t_ovf),
                    s_sign.eq(t_sign),
                    relu[4].eq(relu[3]),
                    gate[4].eq(gate[3]),
                    v[5].eq(v[4]),
                ]
                s_relu, s_gate = relu[4], gate[4]
            a8 = self.config.ACT_BITS
            if self.gate:  # the int8 limits unless in gate mode (16-bit, no ReLU)
                hi_lim = Mux(s_gate, (1 << (ob - 1)) - 1, (1 << (a8 - 1)) - 1)
                lo_lim = Mux(s_gate, -(1 << (ob - 1)), -(1 << (a8 - 1)))
                lo = Mux(s_relu & ~s_gate, 0, lo_lim)
            else:
                hi_lim, lo_lim = (1 << (ob - 1)) - 1, -(1 << (ob - 1))
                lo = Mux(s_relu, 0, lo_lim)
            t_ovf, t_sign = s_ovf, s_sign
            with m.If(t_ovf):
                m.d.sync += y.eq(Mux(t_sign, lo, hi_lim))
            with m.Else():
                m.d.sync += y.eq(Mux(r > hi_lim, hi_lim, Mux(r < lo, lo, r)))
            m.d.sync += [tags[0].eq(self.i_tag)] + [tags[k].eq(tags[k - 1]) for k in range(1, L)]
        m.d.comb += [self.o_stream.valid.eq(v[-1]), self.o_stream.payload.eq(y), self.o_tag.eq(tags[-1])]
        return m
