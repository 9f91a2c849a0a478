"""cocotb bench: protocol fuzzing of the link top's byte port against the reference model.

Thousands of bursts -- valid requests, requests the device must refuse, frames with flipped bits,
truncated frames, oversize frames, random garbage -- go into the RTL and into
``sim.link_model.LinkModel``. After a burst that leaves a frame half-received the bench pauses past
the idle timeout. Every reply byte of the RTL must equal the model's, including the replies to the
valid requests mixed in between and the final ERRORS reply, so the device both keeps answering
correctly and accounts in its counters for everything that was sent.
"""

from __future__ import annotations

import json
import os
import random
import struct
import time
from collections import deque

import cocotb
from link_port import BytePort, start_clock

from hw.hostif import info_payload
from quant.config import NPUConfig
from quant.memmap import default_memory_map
from sim.link_model import LinkModel
from sw_driver.protocol import Command, Counter, encode_request


def _valid_request(rng: random.Random, cfg: NPUConfig, regions) -> bytes:
    kind = rng.choices(
        ["write_mem", "read_mem", "read_reg", "write_reg", "status", "errors", "start", "info"],
        weights=[30, 30, 10, 10, 5, 5, 3, 1],
    )[0]
    if kind in ("write_mem", "read_mem"):
        rid = rng.randrange(len(regions))
        r = regions[rid]
        limit = (cfg.max_payload - 5) // r.word_bytes if kind == "write_mem" else cfg.max_payload // r.word_bytes
        n = rng.randint(1, min(limit, r.depth, 8 if rng.random() < 0.8 else limit))
        addr = rng.choice([0, r.depth - n, rng.randint(0, r.depth - n)])
        if kind == "read_mem":
            return encode_request(Command.READ_MEM, struct.pack("<BIH", rid, addr, n))
        words = [rng.getrandbits(r.width) for _ in range(n)]
        body = b"".join(w.to_bytes(r.word_bytes, "little") for w in words)
        return encode_request(Command.WRITE_MEM, struct.pack("<BI", rid, addr) + body)
    if kind == "read_reg":
        return encode_request(Command.READ_REG, bytes([rng.randrange(16)]))
    if kind == "write_reg":
        # USER0 stays 0 so the stand-in job finishes at once and its status is predictable.
        idx = rng.choice([1] + list(range(9, 16)))
        return encode_request(Command.WRITE_REG, struct.pack("<BI", idx, rng.getrandbits(32)))
    return encode_request(
        {"status": Command.STATUS, "errors": Command.ERRORS, "start": Command.START}.get(kind, Command.INFO)
    )


def _refused_request(rng: random.Random, cfg: NPUConfig, regions) -> bytes:
    kind = rng.choice(["region", "address", "length", "unknown", "register", "readonly", "count"])
    rid = rng.randrange(len(regions))
    r = regions[rid]
    if kind == "region":
        return encode_request(rng.choice([2, 3]), struct.pack("<BIH", rng.randint(len(regions), 255), 0, 1))
    if kind == "address":
        n = rng.randint(1, 4)
        addr = rng.choice([r.depth - n + 1, r.depth, rng.randint(r.depth, 2**32 - 1)])
        if rng.random() < 0.5:
            return encode_request(Command.READ_MEM, struct.pack("<BIH", rid, addr, n))
        return encode_request(Command.WRITE_MEM, struct.pack("<BI", rid, addr) + bytes(n * r.word_bytes))
    if kind == "length":
        cmd = rng.choice(list(Command))
        return encode_request(cmd, bytes(rng.getrandbits(8) for _ in range(rng.choice([1, 2, 3, 6, 8, 9]))))
    if kind == "unknown":
        cmd = rng.choice([0x00, 0x09, 0x7F, 0xA5, 0xFF])
        return encode_request(cmd, bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 6))))
    if kind == "register":
        if rng.random() < 0.5:
            return encode_request(Command.READ_REG, bytes([rng.randint(16, 255)]))
        return encode_request(Command.WRITE_REG, struct.pack("<BI", rng.randint(16, 255), 1))
    if kind == "readonly":
        return encode_request(Command.WRITE_REG, struct.pack("<BI", rng.choice([0, 2, 3, 4, 5, 6, 7]), 0))
    return encode_request(
        Command.READ_MEM, struct.pack("<BIH", rid, 0, rng.choice([0, cfg.max_payload // r.word_bytes + 1]))
    )


def _burst(rng: random.Random, cfg: NPUConfig, regions) -> tuple[str, bytes]:
    kind = rng.choices(
        ["valid", "refused", "corrupt", "truncated", "oversize", "garbage"], weights=[35, 15, 20, 15, 5, 10]
    )[0]
    if kind == "valid":
        return kind, _valid_request(rng, cfg, regions)
    if kind == "refused":
        return kind, _refused_request(rng, cfg, regions)
    frame = bytearray(_valid_request(rng, cfg, regions) if rng.random() < 0.8 else _refused_request(rng, cfg, regions))
    if kind == "corrupt":
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            pos = rng.randrange(1, len(frame))
            frame[pos] ^= 1 << rng.randrange(8)
        return kind, bytes(frame)
    if kind == "truncated":
        return kind, bytes(frame[: rng.randrange(1, len(frame))])
    if kind == "oversize":
        plen = rng.randint(cfg.max_payload + 1, cfg.max_payload + 40)
        tail = bytes(rng.getrandbits(8) for _ in range(plen + 2 if rng.random() < 0.5 else rng.randint(0, plen)))
        return kind, bytes([0xA5]) + struct.pack("<HB", plen, rng.choice(list(Command))) + tail
    return kind, bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 40)))


@cocotb.test()
async def fuzz(dut):
    p = json.loads(os.environ["SHIFTNPU_PARAMS"])
    cfg = NPUConfig.from_dict(p["config"])
    regions = default_memory_map(cfg)
    timeout = int(p["idle_timeout"])
    rng = random.Random(p.get("seed", 1))
    model = LinkModel(cfg, regions, info_payload(cfg, regions, timeout))
    await start_clock(dut)
    port = BytePort(dut)
    t0 = time.monotonic()
    kinds: dict[str, int] = {}
    mismatches = 0
    sent = 0

    async def exchange(data: bytes, tag: str) -> None:
        nonlocal mismatches, sent
        expected = model.feed(data)
        gap = model.mid_frame
        if gap:
            expected += model.idle()
        pending = deque(data)
        accept_p = 1.0 if rng.random() < 0.7 else 0.6
        while pending:
            await port.step(pending, accept=rng.random() < accept_p)
        if gap:
            await port.idle(timeout + 4)
        budget = 200 + 4 * len(expected)
        while len(port.out) < len(expected) and budget > 0:
            await port.step(pending)
            budget -= 1
        for _ in range(2):  # nothing more may follow
            await port.step(pending)
        got = port.take()
        sent += 1
        if got != expected:
            mismatches += 1
            if mismatches <= 10:
                dut._log.error(f"burst {sent} ({tag}) {data.hex()}: got {got.hex()}, expected {expected.hex()}")

    for _ in range(int(p["frames"])):
        kind, data = _burst(rng, cfg, regions)
        kinds[kind] = kinds.get(kind, 0) + 1
        await exchange(data, kind)

    # Afterwards: every memory word read back, then the counters.
    for rid, r in enumerate(regions):
        per = cfg.max_payload // r.word_bytes
        for a in range(0, r.depth, per):
            await exchange(
                encode_request(Command.READ_MEM, struct.pack("<BIH", rid, a, min(per, r.depth - a))), "readback"
            )
    await exchange(encode_request(Command.ERRORS), "errors")
    counters = {c.name.lower(): model.counters[c] for c in Counter}
    seconds = time.monotonic() - t0
    dut._log.info(f"{sent} bursts ({kinds}) in {seconds:.1f} s; counters {counters}; {mismatches} mismatches")
    if p.get("report"):
        with open(p["report"], "w") as f:
            json.dump({"bursts": sent, "kinds": kinds, "counters": counters, "mismatches": mismatches}, f)
    assert mismatches == 0, f"{mismatches} of {sent} bursts got replies that differ from the reference model"
    for name, v in counters.items():
        if name != "framing_errors":
            assert v > 0, f"the fuzzer never exercised {name}"
