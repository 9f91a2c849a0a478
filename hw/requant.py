"""The per-channel output requantizer (SPEC §3), one value per cycle, pipelined.

    y = sat(rshift_round((acc + bias) * M, n), 8), optionally max(y, 0) (fused ReLU)

In *gate mode* (``gate = 1``, the LSTM path) the result saturates to 16 bits instead, without
ReLU: the Q3.12 gate pre-activation ``z = sat(rshift_round(acc * M, n), 16)`` of SPEC §4.

It is time-shared by the columns of the array: one requantizer per engine, not per MAC.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from quant.config import NPUConfig

__all__ = ["RequantInput", "Requantizer"]


def RequantInput(config: NPUConfig) -> data.StructLayout:  # noqa: N802 - a layout factory reads like a type
    """Payload of one requantization: the accumulator and its channel's parameters."""
    return data.StructLayout(
        {
            "acc": signed(config.acc_width),
            "bias": signed(config.BIAS_BITS),
            "mult": unsigned(config.M_BITS),
            "shift": unsigned(6),
            "relu": unsigned(1),
            "gate": unsigned(1),
        }
    )


class Requantizer(wiring.Component):
    """Pipelined SPEC §3 requantizer with a valid/ready stream on each side.

    Members
    -------
    i_stream : In(stream.Signature(RequantInput(config)))
        Accumulator value with bias, multiplier ``M``, shift ``n`` and ReLU flag.
    o_stream : Out(stream.Signature(signed(16)))
        The result (int8, or int16 in gate mode), :attr:`latency` cycles later when the output is not stalled.
    i_tag, o_tag : In(tag_width), Out(tag_width)
        Side information (e.g. a destination address) that travels with each value.
    """

    #: Pipeline stages (add bias, multiply, add rounding half, shift and saturate).
    latency = 4

    def __init__(self, config: NPUConfig, tag_width: int = 0):
        self.config = config
        self.tag_width = tag_width
        super().__init__(
            {
                "i_stream": In(stream.Signature(RequantInput(config))),
                "o_stream": Out(stream.Signature(signed(16))),
                "i_tag": In(max(tag_width, 1)),
                "o_tag": Out(max(tag_width, 1)),
            }
        )

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        x_w = max(cfg.acc_width, cfg.BIAS_BITS) + 1
        p_w = x_w + cfg.M_BITS + 1

        # Every stage advances together when the output is free or being taken.
        advance = Signal()
        m.d.comb += [advance.eq(~self.o_stream.valid | self.o_stream.ready), self.i_stream.ready.eq(advance)]

        v = [Signal(name=f"valid{i}") for i in range(self.latency)]
        x = Signal(signed(x_w))
        mult1, shift1, relu1 = Signal(unsigned(16)), Signal(unsigned(6)), Signal()
        gate1, gate2, gate3 = Signal(), Signal(), Signal()
        p = Signal(signed(p_w))
        shift2, relu2 = Signal(range(p_w + 1)), Signal()
        q = Signal(signed(p_w + 2))
        half = Signal(unsigned(p_w))
        # A one-hot decode of the shift rather than a wide variable shift: cheaper, and it keeps
        # the generated Verilog free of >64-bit shift expressions.
        m.d.comb += [half[i - 1].eq(shift2 == i) for i in range(1, p_w + 1)]
        shift3, relu3 = Signal(range(p_w + 1)), Signal()
        y = Signal(signed(16))
        tags = [Signal(len(self.i_tag), name=f"tag{i}") for i in range(self.latency)]

        with m.If(advance):
            i = self.i_stream.payload
            m.d.sync += [
                v[0].eq(self.i_stream.valid),
                x.eq(i.acc + i.bias),
                mult1.eq(i.mult),
                shift1.eq(i.shift),
                relu1.eq(i.relu),
                gate1.eq(i.gate),
                v[1].eq(v[0]),
                p.eq(x * mult1),
                # |p| < 2**(p_w - 1), so any shift >= p_w rounds to 0 exactly as p_w does: clamp it
                # and the rounding adder stays p_w + 1 bits wide instead of 64.
                shift2.eq(Mux(shift1 > p_w, p_w, shift1)),
                relu2.eq(relu1),
                gate2.eq(gate1),
                v[2].eq(v[1]),
                # rshift_round(p, n) == (p + half) >> n with half = 2**(n-1), and 0 for n == 0.
                q.eq(p + half),
                shift3.eq(shift2),
                relu3.eq(relu2),
                gate3.eq(gate2),
                v[3].eq(v[2]),
            ]
            r = Signal(signed(p_w + 2))
            m.d.comb += r.eq(q >> shift3)
            lo = Mux(gate3, -32768, Mux(relu3, 0, -128))
            hi = Mux(gate3, 32767, 127)
            m.d.sync += y.eq(Mux(r > hi, hi, Mux(r < lo, lo, r)))
            m.d.sync += [tags[0].eq(self.i_tag)] + [tags[k].eq(tags[k - 1]) for k in range(1, self.latency)]
        m.d.comb += [self.o_stream.valid.eq(v[3]), self.o_stream.payload.eq(y), self.o_tag.eq(tags[-1])]
        return m
