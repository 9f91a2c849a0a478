"""The host codec (sw_driver.protocol) against binascii, the RTL's CRC and the RTL's constants."""

import binascii
import random
import struct

import pytest
from amaranth.sim import Simulator

from hw import hostif
from hw.crc import CRC16
from quant.config import NPUConfig
from quant.memmap import Region, default_memory_map
from sw_driver import protocol as P


def test_crc16_matches_binascii():
    rng = random.Random(0)
    assert P.crc16(b"123456789") == 0x29B1  # the CCITT-FALSE check value
    for n in [0, 1, 2, 7, 64, 300]:
        data = bytes(rng.getrandbits(8) for _ in range(n))
        assert P.crc16(data) == binascii.crc_hqx(data, 0xFFFF)
        # Appending the CRC high byte first leaves a zero residue (what the RTL checks).
        assert P.crc16(data + P.crc16(data).to_bytes(2, "big")) == 0


def test_rtl_crc_matches_host_crc():
    rng = random.Random(1)
    messages = [b"123456789", b"", bytes([0xFF] * 5)] + [
        bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 40))) for _ in range(20)
    ]
    dut = CRC16()
    results = []

    async def tb(ctx):
        for msg in messages:
            ctx.set(dut.clear, 1)
            await ctx.tick()
            ctx.set(dut.clear, 0)
            for b in msg:
                ctx.set(dut.en, 1)
                ctx.set(dut.data, b)
                await ctx.tick()
            ctx.set(dut.en, 0)
            results.append((ctx.get(dut.crc), ctx.get(dut.zero)))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    for msg, (crc, zero) in zip(messages, results, strict=True):
        assert crc == P.crc16(msg) == binascii.crc_hqx(msg, 0xFFFF)
        assert zero == (crc == 0)


def test_rtl_and_driver_agree_on_codes():
    for cmd in P.Command:
        assert getattr(hostif.Command, cmd.name) == cmd.value
    for st in P.Status:
        assert getattr(hostif.Status, st.name) == st.value
    assert len(P.Counter) == hostif.Counter.COUNT
    assert P.Counter.SYNC_DISCARDS == hostif.Counter.SYNC_DISCARDS
    assert P.Counter.FRAMING_ERRORS == hostif.Counter.FRAMING_ERRORS
    assert (P.SYNC_REQUEST, P.SYNC_REPLY, P.REG_ID_MAGIC, P.N_REGS) == (
        hostif.SYNC_REQUEST,
        hostif.SYNC_REPLY,
        hostif.REG_ID_MAGIC,
        hostif.N_REGS,
    )
    assert P.Reg.USER0 == hostif.Reg.USER and P.Reg.CYCLES == hostif.Reg.CYCLES
    # The protocol version the driver speaks is the one a default device reports.
    assert NPUConfig().protocol_version == P.PROTOCOL_VERSION


@pytest.mark.parametrize(
    "cfg",
    [NPUConfig(), NPUConfig(rows=4, cols=16, weight_bits=8, mem_width=64, act_depth=100, max_payload=1000)],
)
def test_info_payload_decodes_to_the_config(cfg):
    regions = default_memory_map(cfg) + (Region("pwl", 48, 17),)
    info = P.decode_info(hostif.info_payload(cfg, regions, 1234))
    assert info.config == cfg and info.protocol_version == cfg.protocol_version
    assert info.regions == regions and info.max_payload == cfg.max_payload and info.idle_timeout == 1234
    assert info.region("pwl") == (3, regions[3]) and info.region(1) == (1, regions[1])
    with pytest.raises(KeyError, match="no memory region 'nope'"):
        info.region("nope")
    with pytest.raises(P.FrameError, match="malformed"):
        P.decode_info(hostif.info_payload(cfg, regions, 1)[:-3])


def test_frames_roundtrip_through_the_reply_parser():
    rng = random.Random(2)
    frames = [
        P.encode_reply(rng.choice(list(P.Command)), 0, bytes(rng.getrandbits(8) for _ in range(n)))
        for n in (0, 1, 5, 300)
    ]
    stream = b"\x00\x11" + b"".join(frames)
    parser = P.ReplyParser()
    got = []
    for i in range(0, len(stream), 7):  # arbitrary splits
        got += parser.feed(stream[i : i + 7])
    assert [P.encode_reply(r.cmd, r.status, r.payload) for r in got] == frames
    assert parser.skipped == 2 and parser.pending == 0
    bad = bytearray(frames[1])
    bad[-1] ^= 1
    with pytest.raises(P.FrameError, match="CRC"):
        P.ReplyParser().feed(bytes(bad))


def test_request_encoding():
    f = P.encode_request(P.Command.READ_MEM, struct.pack("<BIH", 1, 2, 3))
    assert f[0] == 0xA5 and f[1:4] == bytes([7, 0, P.Command.READ_MEM]) and P.crc16(f[1:]) == 0
    with pytest.raises(ValueError, match="does not fit"):
        P.encode_request(1, bytes(70000))
