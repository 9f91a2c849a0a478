"""The host driver against a device that is absent, silent, flaky or refusing (no RTL needed).

The "device" here is the reference model (sim.link_model) behind a local TCP socket, with faults
injected: dropped requests, corrupted replies. The driver reaches it through ``socket://`` exactly
as it reaches sim-serve or a board.
"""

import socket
import struct
import threading
import time

import pytest

from hw.hostif import info_payload
from quant.config import NPUConfig
from quant.memmap import default_memory_map
from sim.link_model import LinkModel
from sw_driver.device import ConfigMismatch, CRCError, Device, DeviceError, NoAnswer
from sw_driver.protocol import Command, Status
from sw_driver.transport import DeviceNotFound

CFG = NPUConfig(act_depth=64, weight_depth=300, chan_depth=16, max_payload=64)


class FakeDevice:
    """LinkModel on 127.0.0.1; ``drop`` requests are ignored, ``corrupt`` replies get a flipped bit."""

    def __init__(self, *, drop=0, corrupt=0, silent=False):
        regions = default_memory_map(CFG)
        self.model = LinkModel(CFG, regions, info_payload(CFG, regions, 1000))
        self.drop, self.corrupt, self.silent = drop, corrupt, silent
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(1)
        self.url = f"socket://127.0.0.1:{self.srv.getsockname()[1]}"
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        self.srv.settimeout(0.1)
        while not self.stop:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                continue
            conn.settimeout(0.05)
            while not self.stop:
                try:
                    data = conn.recv(4096)
                except TimeoutError:
                    self.model.idle()  # the host paused: a half frame is dropped, as by the device
                    continue
                if not data:
                    break
                if self.silent:
                    continue
                out = self.model.feed(data)
                if out and self.drop:
                    self.drop -= 1
                    continue
                if out and self.corrupt:
                    self.corrupt -= 1
                    out = bytearray(out)
                    out[-1] ^= 0x10
                conn.sendall(bytes(out))
            conn.close()

    def close(self):
        self.stop = True
        self.thread.join()
        self.srv.close()


@pytest.fixture
def fake():
    devs = []

    def make(**kw):
        devs.append(FakeDevice(**kw))
        return devs[-1]

    yield make
    for d in devs:
        d.close()


def test_absent_device_is_a_clear_error():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    t0 = time.monotonic()
    with pytest.raises(DeviceNotFound, match="cannot open device"):
        Device(f"socket://127.0.0.1:{port}")
    with pytest.raises(DeviceNotFound, match="cannot open device"):
        Device("/dev/does-not-exist-ttyUSB9")
    assert time.monotonic() - t0 < 5


def test_silent_device_times_out_without_hanging(fake):
    dev = fake(silent=True)
    d = Device(dev.url, timeout=0.3, retries=2)
    t0 = time.monotonic()
    with pytest.raises(NoAnswer, match="no answer from .* INFO .*attempt 3 of 3"):
        d.info()
    assert time.monotonic() - t0 < 3
    d.close()


def test_retries_recover_from_lost_and_corrupted_replies(fake):
    dev = fake(drop=1, corrupt=1)
    with Device(dev.url, timeout=0.3, retries=2) as d:
        assert d.info().config == CFG
        assert d.stats["retries"] == 2
    dev2 = fake(corrupt=5)
    with Device(dev2.url, timeout=0.3, retries=2) as d, pytest.raises(CRCError, match="corrupted reply"):
        d.info()


def test_memory_registers_and_errors_on_the_model(fake):
    import random

    rng = random.Random(5)
    with Device(fake().url, timeout=1.0, retries=0) as d:
        d.check_config(CFG)
        with pytest.raises(ConfigMismatch, match="rows: 4 != 8"):
            d.check_config(CFG.replace(rows=4))
        words = [rng.getrandbits(32) for _ in range(300)]
        d.write_mem("weight", 0, words)  # 300 words: chunked into 15-word frames
        assert d.read_mem("weight", 0, 300) == words
        assert d.read_mem(1, 290, 10) == words[290:]
        d.write_reg(9, 0xDEADBEEF)
        assert d.read_reg(9) == 0xDEADBEEF
        with pytest.raises(ValueError, match="outside region 'out'"):
            d.write_mem("out", 10, [0] * 7)
        with pytest.raises(ValueError, match="does not fit region"):
            d.write_mem("act", 0, [1 << 32])
        with pytest.raises(KeyError, match="no memory region 'tables'"):
            d.read_mem("tables", 0, 1)
        # Refusals by the device itself come back as DeviceError with the status.
        with pytest.raises(DeviceError, match="BAD_ADDRESS") as e:
            d.request(Command.READ_MEM, struct.pack("<BIH", 2, 16, 1))
        assert e.value.status == Status.BAD_ADDRESS
        with pytest.raises(DeviceError, match="BAD_REGISTER"):
            d.write_reg(2, 1)
        c = d.error_counters()
        assert c["bad_address"] == 1 and c["bad_register"] == 1 and c["ok"] > 40
