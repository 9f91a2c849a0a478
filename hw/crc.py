"""CRC-16/CCITT-FALSE, one byte per clock, for the host link.

Polynomial 0x1021, initial value 0xFFFF, no reflection, no final XOR (``binascii.crc_hqx(data,
0xFFFF)`` on the host). The link sends the CRC high byte first, so feeding a frame *and* its CRC
through the register leaves zero: the receiver checks one condition instead of comparing bytes.
"""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["CRC16", "crc16_next", "POLY", "INIT"]

POLY = 0x1021
INIT = 0xFFFF


def _next_state_terms() -> list[tuple[set[int], set[int]]]:
    """For each bit of the next CRC, the sets of current-CRC bits and data bits it XORs.

    The CRC is linear over GF(2), so eight bit-serial steps collapse into one XOR per output bit;
    computing the sets here keeps the gateware a flat XOR tree.
    """
    c = [({b}, set()) for b in range(16)]
    for i in range(8):
        fb = (c[15][0] ^ set(), c[15][1] ^ {7 - i})
        shifted = [(set(), set())] + c[:15]
        c = [(s[0] ^ fb[0], s[1] ^ fb[1]) if (POLY >> b) & 1 else s for b, s in enumerate(shifted)]
    return c


def crc16_next(crc, byte):
    """Expression for the CRC after ``byte`` (8 bits, MSB first)."""
    bits = []
    for crc_bits, data_bits in _next_state_terms():
        terms = [crc[b] for b in sorted(crc_bits)] + [byte[b] for b in sorted(data_bits)]
        x = terms[0]
        for t in terms[1:]:
            x = x ^ t
        bits.append(x)
    return Cat(*bits)


class CRC16(wiring.Component):
    """Byte-serial CRC-16/CCITT-FALSE register.

    Members
    -------
    clear : In(1)
        Reset the register to 0xFFFF (takes priority over ``en``).
    en : In(1)
        Fold ``data`` into the register this cycle.
    data : In(8)
        The byte to fold in.
    crc : Out(16)
        The current CRC (of every byte folded in since the last ``clear``).
    zero : Out(1)
        ``crc == 0``: a frame followed by its CRC (high byte first) was received intact.
    """

    clear: In(1)
    en: In(1)
    data: In(8)
    crc: Out(16, init=INIT)
    zero: Out(1)

    def elaborate(self, platform):
        m = Module()
        reg = Signal(16, init=INIT)
        with m.If(self.clear):
            m.d.sync += reg.eq(INIT)
        with m.Elif(self.en):
            m.d.sync += reg.eq(crc16_next(reg, self.data))
        m.d.comb += [self.crc.eq(reg), self.zero.eq(reg == 0)]
        return m
