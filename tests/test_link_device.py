"""The host driver against the RTL: LinkTestTop under Verilator behind sim-serve (socket://).

The byte-level bridge is used for the bulk of the traffic; one test goes through the real UARTs,
bit by bit, with the same driver.
"""

import random
import time

import pytest

from hw.linktest import STATUS_BUSY, STATUS_DONE
from quant.config import NPUConfig
from sim.serve import simulated_device
from sw_driver.device import Device, DeviceError
from sw_driver.protocol import PROTOCOL_VERSION, Command, Reg

CFG = NPUConfig(act_depth=512, weight_depth=1024, chan_depth=256, max_payload=256)


@pytest.fixture(scope="module")
def device():
    with simulated_device(params={"config": CFG.to_dict()}) as url, Device(url, timeout=10.0) as d:
        yield d


def test_info_reports_the_config_and_memory_map(device):
    info = device.info()
    assert info.protocol_version == PROTOCOL_VERSION == CFG.protocol_version
    assert info.config == CFG
    device.check_config(CFG)
    assert [(r.name, r.width, r.depth) for r in info.regions] == [
        ("act", 32, 512),
        ("weight", 32, 1024),
        ("out", 32, 256),
    ]
    assert device.read_reg(Reg.ID) == 0x534E0000 | PROTOCOL_VERSION


def test_random_data_across_the_whole_address_space(device):
    rng = random.Random(11)
    images = {}
    for r in device.info().regions:
        words = [rng.getrandbits(r.width) for _ in range(r.depth)]
        words[0], words[-1] = (1 << r.width) - 1, 0
        device.write_mem(r.name, 0, words)
        images[r.name] = words
    for name, words in images.items():  # read back after every region was written: no aliasing
        assert device.read_mem(name, 0, len(words)) == words
    # Unaligned pieces at the edges of a region.
    piece = [rng.getrandbits(32) for _ in range(70)]
    device.write_mem("out", 256 - 70, piece)
    assert device.read_mem("out", 256 - 71, 71) == images["out"][256 - 71 : 256 - 70] + piece


def test_registers_start_status_and_counters(device):
    before = device.error_counters()
    device.write_reg(Reg.USER0 + 3, 0x12345678)
    assert device.read_reg(Reg.USER0 + 3) == 0x12345678
    device.write_reg(Reg.USER0, 500)  # the stand-in job: busy for 500 cycles
    device.start()
    status, cycles = device.wait_done(STATUS_DONE, timeout=20)
    assert status & STATUS_DONE and not status & STATUS_BUSY and cycles == 500
    assert device.read_reg(Reg.CYCLES) == 500
    with pytest.raises(DeviceError, match="BAD_REGISTER"):
        device.write_reg(Reg.STATUS, 0)
    with pytest.raises(DeviceError, match="UNKNOWN_CMD"):
        device.request(0x42)
    after = device.error_counters()
    assert after["bad_register"] == before["bad_register"] + 1
    assert after["unknown_cmd"] == before["unknown_cmd"] + 1
    # write, read, write, start, >= 1 status poll, read CYCLES, this ERRORS request
    assert after["ok"] >= before["ok"] + 7 and after["bad_crc"] == before["bad_crc"] == 0


def test_garbage_on_the_line_then_valid_requests(device):
    before = device.error_counters()
    device.transport.write(bytes([0x00, 0x13, 0x37]))  # noise: dropped while hunting for sync
    assert device.read_mem("act", 0, 2) == device.read_mem("act", 0, 2)
    assert device.error_counters()["sync_discards"] == before["sync_discards"] + 3
    assert Command.INFO in list(Command)


def test_end_to_end_through_the_real_uart():
    cfg = NPUConfig(act_depth=16, weight_depth=32, chan_depth=8, clk_hz=1_843_200, baud=115_200, max_payload=64)
    rng = random.Random(3)
    t0 = time.monotonic()
    with simulated_device(params={"config": cfg.to_dict(), "uart": True}) as url, Device(url, timeout=10.0) as d:
        assert d.info().config == cfg
        words = [rng.getrandbits(32) for _ in range(32)]
        d.write_mem("weight", 0, words)
        assert d.read_mem("weight", 0, 32) == words
        c = d.error_counters()
        # info, 3 write frames (14 words each), 2 read frames, this ERRORS request
        assert c["framing_errors"] == 0 and c["bad_crc"] == 0 and c["ok"] == 7
    assert time.monotonic() - t0 < 300
