"""The NPU in the form the iCEBreaker build ships, end to end through the driver, bit-exact.

Everything else simulates the generic form (``platform=None``). Here the NPU of the iCEBreaker's
default config (4x4, LSTM memories) is elaborated for the board's own platform object, so every
iCE40 form is the one simulated: the single-stage ARGMAX, the host read latency of 1, the engine
without its read registers, the requantizer's early add, the sequencer's unregistered fetch, the
feature/program/accumulator/PWL/cell memories as SB_RAM40_4K, the weight and bias memories as
SB_SPRAM256KA, the link's byte RAMs as 512 x 8 blocks with their INIT contents -- the primitives
replaced by their simulation models (sim/board_form.py), whose undefined read data come out
complemented. Models (MLP, ARGMAX corner cases, a two-convolution CNN, the seq-digits LSTM, random
LSTMs, the shipped MLP) go through the driver and compare with quant.golden, cycles with the exact
cycle model; the review's adversarial raw programs compare with quant.device_model; every region
reads back; the UART top (what the board build wraps) answers over the serial line. One simulated
device serves the module (a Verilator build of 15-50 s, cached); the UART top is a second build.
"""

import numpy as np
import pytest
from amaranth.hdl import ClockSignal, Const, Fragment, Instance, Module, Signal

from quant import golden
from quant.lstm_perf import program_cycles
from quant.model import ArgmaxLayer, Conv2dLayer, DenseLayer, FlattenLayer, InputSpec, MaxPool2dLayer, NPUModel
from quant.npu_compile import largest_batch
from quant.program import Op, decode_program
from quant.retarget import retarget
from sim.board_form import BoardForm, substitute_primitives
from sim.npu_device import board_config, simulated_npu
from sw_driver.device import Device
from sw_driver.npu import NPURunner
from tests.model_factory import _requant, random_lstm, random_mlp

BOARD = "icebreaker"
CFG = board_config(BOARD)  # the board's default config at its default build's clock (39.75 MHz)


@pytest.fixture(scope="module")
def npu_url():
    with simulated_npu(CFG, board=BOARD) as url:
        yield url


def _run(url, model, x, batch, timeout=30.0):
    """``model`` on ``x`` through the driver: logits and classes must equal quant.golden's."""
    with Device(url, timeout=timeout) as dev:
        runner = NPURunner(dev, batch=batch)
        compiled = runner.load(model)
        r = runner.infer(x)
    trace = golden.forward(model, x, intermediates=True)
    logits = trace[-2][1].reshape(len(x), -1)
    assert np.array_equal(r.logits, logits)
    assert np.array_equal(r.classes, trace[-1][1])
    return r, compiled, logits


# -- the board form itself (no simulator) ------------------------------------------------------


def test_the_board_form_is_the_ice40_one():
    """The default iCEBreaker NPU elaborates to the primitives its build reports (23 EBR, 3 SPRAM)."""
    from hw.boards import get_board
    from hw.npu import NPU

    assert CFG.replace(clk_hz=get_board(BOARD).default_config().clk_hz) == get_board(BOARD).default_config()
    form = BoardForm(NPU(CFG), BOARD)
    Fragment.get(form, None)
    assert dict(form.primitives) == {"SB_RAM40_4K": 23, "SB_SPRAM256KA": 3}
    # off the iCE40 nothing is replaced: the ULX3S form is the generic one
    form = BoardForm(NPU(board_config("ulx3s-85f")), "ulx3s-85f")
    Fragment.get(form, None)
    assert not form.primitives


def _fragment_with(inst):
    m = Module()
    m.submodules.prim = inst
    return Fragment.get(m, None)


def test_a_primitive_the_model_does_not_cover_is_refused():
    ok = dict(
        i_ADDRESS=Signal(14),
        i_DATAIN=Signal(16),
        i_MASKWREN=Const(0xF, 4),
        i_WREN=Signal(),
        i_CHIPSELECT=Signal(),
        i_CLOCK=ClockSignal("sync"),
        i_STANDBY=Const(0, 1),
        i_SLEEP=Const(0, 1),
        o_DATAOUT=Signal(16),
    )
    assert substitute_primitives(_fragment_with(Instance("SB_SPRAM256KA", **ok, i_POWEROFF=Const(1, 1)))) == {
        "SB_SPRAM256KA": 1
    }
    with pytest.raises(ValueError, match="POWEROFF tied to 1"):  # powered off: the model would not do that
        substitute_primitives(_fragment_with(Instance("SB_SPRAM256KA", **ok, i_POWEROFF=Signal())))
    with pytest.raises(ValueError, match="no simulation model of the primitive SB_MAC16"):
        substitute_primitives(_fragment_with(Instance("SB_MAC16", i_A=Signal(16))))
    with pytest.raises(ValueError, match="READ_MODE/WRITE_MODE"):
        substitute_primitives(_fragment_with(Instance("SB_RAM40_4K", p_READ_MODE=2, p_WRITE_MODE=2)))


def test_512x8_init_contents_round_trip():
    from hw.byteram import ebr512x8_init
    from sim.board_form import _init_bytes_512x8

    data = list(np.random.default_rng(3).integers(0, 256, 512))
    inst = Instance("SB_RAM40_4K", **{f"p_INIT_{k:X}": Const(v, 256) for k, v in enumerate(ebr512x8_init(data))})
    assert _init_bytes_512x8(inst) == data


# -- through the driver -------------------------------------------------------------------------


def test_device_reports_the_board_config(npu_url):
    with Device(npu_url, timeout=30.0) as dev:
        info = dev.info()  # (the INFO reply comes out of the 512 x 8 blocks' INIT contents)
    assert info.config == CFG
    assert [(r.name, r.depth) for r in info.regions] == [
        ("feature", 256),
        ("weight", 2048),
        ("channel", 256),
        ("program", 128),
    ]


def test_mlp_batches(npu_url):
    model = random_mlp(1, CFG, sizes=(64, 32, 10))
    x = np.random.default_rng(1).integers(-128, 128, size=(40, 64)).astype(np.int8)
    x[0], x[1], x[2] = -128, 127, 0
    batch = largest_batch(model, CFG)
    assert batch == 9
    r, compiled, _ = _run(npu_url, model, x, batch=batch)  # 5 runs, the last one padded
    assert r.cycles == 5 * program_cycles(compiled)


def _tie_mlp(seed: int, bias) -> NPUModel:
    """64 -> 32 -> 10 with output columns copied (0=1, 2=3, 4=7 across N-tiles, 8=9) and scaled
    so that many rows are all negative; ``bias`` per output (-2**30: always -128, 2**30: 127)."""
    base = random_mlp(seed, CFG, sizes=(64, 32, 10))
    fc1, fc2 = base.layers[0], base.layers[1]
    src = [0, 0, 1, 1, 2, 3, 4, 2, 5, 5]
    last = DenseLayer(
        "fc2",
        fc2.codes[:, src].copy(),
        np.full(10, 1 << 15, np.uint16),
        np.full(10, 20, np.uint8),
        np.asarray(bias, np.int32),
        relu=False,
    )
    return NPUModel(CFG, base.input, [fc1, last, ArgmaxLayer("argmax")], {"task": "ties"})


def test_argmax_ties_all_negative_rows_and_saturation(npu_url):
    x = np.random.default_rng(5).integers(-128, 128, size=(24, 64)).astype(np.int8)
    x[0], x[1], x[2] = -128, 127, 0
    ties = [-1500, -1500, 1500, 1500, 1200, -(2**30), -800, 1200, 2500, 2500]
    r, compiled, logits = _run(npu_url, _tie_mlp(1, ties), x, batch=7)
    top = logits.max(1)
    tied = (logits == top[:, None]).sum(1) > 1
    # the cases are there: ties (all but column 6 come in pairs), one across N-tiles,
    # all-negative rows, -128 everywhere in column 5
    assert tied.sum() >= len(x) // 2 and (top < 0).sum() >= 5 and (logits[:, 5] == -128).all()
    assert {4, 8} <= set(r.classes.tolist())  # 4 ties 7 (next N-tile), 8 ties 9 (last, partial tile)
    assert r.cycles == 4 * program_cycles(compiled)
    # every output saturated: all -128 (class 0), and 127 from column 5 on (class 5)
    for bias, cls in (([-(2**30)] * 10, 0), ([-(2**30)] * 5 + [2**30] * 5, 5)):
        r, _, logits = _run(npu_url, _tie_mlp(1, bias), x[:7], batch=7)
        assert (r.classes == cls).all()


def _small_cnn(seed: int, c1: int = 4, c2: int = 8) -> NPUModel:
    """conv 3x3 (1 -> c1) relu, maxpool, conv 3x3 (c1 -> c2, on-chip im2col) relu, maxpool,
    flatten, dense -> 10, argmax on 4x4 images (an 8x8 one does not fit the 256-word feature memory)."""
    rng = np.random.default_rng(seed)
    top = 1 << CFG.weight_bits
    layers = [
        Conv2dLayer(
            "conv1", rng.integers(0, top, (3, 3, 1, c1)).astype(np.uint8), *_requant(rng, c1), relu=True, padding=1
        ),
        MaxPool2dLayer("pool1", size=2),
        Conv2dLayer(
            "conv2", rng.integers(0, top, (3, 3, c1, c2)).astype(np.uint8), *_requant(rng, c2), relu=True, padding=1
        ),
        MaxPool2dLayer("pool2", size=2),
        FlattenLayer("flatten"),
        DenseLayer("fc", rng.integers(0, top, (c2, 10)).astype(np.uint8), *_requant(rng, 10), relu=False),
        ArgmaxLayer("argmax"),
    ]
    return NPUModel(CFG, InputSpec(shape=(4, 4, 1)), layers, {})


def test_small_cnn(npu_url):
    """MAXPOOL2, IM2COL3 and ARGMAX in their iCE40 forms."""
    model = _small_cnn(2)
    x = np.random.default_rng(2).integers(-128, 128, size=(6, 4, 4, 1)).astype(np.int8)
    x[0] = -128
    assert largest_batch(model, CFG) == 2
    _run(npu_url, model, x, batch=2)


def test_seq_digits_lstm(npu_url):
    from quant.digits import load_split

    model, batch = retarget(NPUModel.load("examples/seq_digits_lstm_3bit.npu"), CFG)
    assert batch == 1  # (the 256-word feature memory holds one sequence's state)
    split = load_split()
    n = 12
    x = model.input.quantize(split.x_test[:n])
    r, compiled, _ = _run(npu_url, model, x, batch=1)
    assert r.cycles == n * program_cycles(compiled)
    assert float(np.mean(r.classes == split.y_test[:n])) > 0.8


@pytest.mark.parametrize("inputs,hidden,steps,batch", [(6, 12, 4, 2), (4, 8, 5, 4)])
def test_random_lstm_batches(npu_url, inputs, hidden, steps, batch):
    """Several sequences per run (the gate unit's cell memory holds one cell block per sample); partial tiles."""
    model = random_lstm(3, CFG, inputs=inputs, hidden=hidden, steps=steps)
    assert largest_batch(model, CFG) == batch
    x = np.random.default_rng(inputs).integers(-128, 128, size=(2 * batch + 1, steps, inputs)).astype(np.int8)
    r, compiled, _ = _run(npu_url, model, x, batch=batch)  # 3 runs, the last one padded
    assert r.cycles == 3 * program_cycles(compiled)


def _review_scenarios():
    """tests/test_review_sequencer.py's adversarial programs, sized for the board's 256-word feature memory."""
    from tests.test_review_sequencer import (
        argmax_scenario,
        bad_opcode_scenario,
        gemm_chain_scenario,
        pool_im2col_scenario,
        zero_size_scenario,
    )

    mb = CFG.m_block
    return [
        argmax_scenario(1, 13, 20, "ties", CFG),
        argmax_scenario(2, 9, 17, "negative", CFG),
        argmax_scenario(3, 17, 8, "random", CFG),
        argmax_scenario(4, 1, 1, "random", CFG),
        pool_im2col_scenario(5, 4, 2, 2, CFG),
        pool_im2col_scenario(6, 2, 4, 1, CFG),
        bad_opcode_scenario(),
        # after an error, a good program must run cleanly again
        gemm_chain_scenario(7, 1, (5, 13, 3), CFG),
        gemm_chain_scenario(8, mb, (8, 7, 5), CFG),
        gemm_chain_scenario(9, mb + 1, (5, 6, 3), CFG),
        gemm_chain_scenario(10, 2 * mb, (4, 3, 2), CFG),
        gemm_chain_scenario(11, mb - 1, (1, 1, 1), CFG),
        zero_size_scenario(Op.ARGMAX, {"src": 0, "dst": 20, "m": 0, "n": 4, "nt": 1}),
        zero_size_scenario(Op.MAXPOOL2, {"src": 0, "dst": 20, "h": 0, "w": 2, "ct": 1}),
        zero_size_scenario(Op.IM2COL3, {"src": 0, "dst": 20, "h": 2, "w": 2, "ct": 0}),
        zero_size_scenario(
            Op.GEMM, {"m": 0, "n": 4, "kt": 1, "nt": 1, "act_base": 0, "out_base": 20, "wgt_base": 0, "chan_base": 0}
        ),
    ]


def test_adversarial_programs(npu_url):
    """ARGMAX (ties, all-negative and -128 rows, junk in padding lanes), MAXPOOL2/IM2COL3, GEMM chains around
    m_block, zero extents and an unknown opcode, as raw programs, against quant.device_model; cycles against
    the cycle model where it covers the ops."""
    from types import SimpleNamespace

    from quant.device_model import DeviceModel

    with Device(npu_url, timeout=30.0) as dev:
        for sc in _review_scenarios():
            model = DeviceModel(CFG, CFG.prog_depth)
            dev.write_mem("feature", 0, [0] * CFG.act_depth)  # (the model starts from zeros)
            for name, words in sc["images"].items():
                if name == "feature":  # (zero_size_scenario's words are 62-bit, for 8 lanes)
                    words = [int(w) % (1 << 8 * CFG.rows) for w in words]
                getattr(model, name)[: len(words)] = words
                if words:
                    dev.write_mem(name, 0, words)
            dev.start()
            status, _ = dev.wait_done(2, timeout=30.0)
            assert bool(status & 4) == bool(sc.get("expect_error")), sc["name"]
            if sc.get("expect_error"):
                continue
            model.run()
            n = sc["check_words"]
            assert dev.read_mem("feature", 0, n) == [int(w) for w in model.feature[:n]], sc["name"]
            prog = sc["images"]["program"]
            ops = decode_program(prog)
            if any(i.op in (Op.MAXPOOL2, Op.IM2COL3) for i in ops):
                continue  # (no cycle model)
            # (incl. a second ARGMAX with nt = 1 for n = 5, as on 8 lanes: the device scans nt tiles)
            assert status >> 3 == program_cycles(SimpleNamespace(program=prog, config=CFG)), sc["name"]


def test_every_region_reads_back_through_the_link(npu_url):
    """Host writes and reads of all four regions (SPRAM weight and bias, EBR feature, scale and program)."""
    rng = np.random.default_rng(7)
    with Device(npu_url, timeout=30.0) as dev:
        for reg in dev.info().regions:
            for base, n in ((0, 40), (reg.depth // 2 - 3, 6), (reg.depth - 37, 37)):
                if reg.name == "channel":  # bias | M << 32 | shift << 48: the memory keeps 6 shift bits
                    words = [
                        int(b) | int(mu) << 32 | int(sh) << 48
                        for b, mu, sh in rng.integers(0, [1 << 32, 1 << 16, 64], (n, 3))
                    ]
                else:
                    words = [int.from_bytes(rng.bytes(reg.word_bytes), "little") % (1 << reg.width) for _ in range(n)]
                dev.write_mem(reg.name, base, words)
                assert dev.read_mem(reg.name, base, n) == words, (reg.name, base)
                assert dev.read_mem(reg.name, base + n - 1, 1) == words[-1:], reg.name


def test_shipped_digits_mlp_moved_to_the_board(npu_url):
    """`shiftnpu retarget --board icebreaker` and run: the model says 40 MHz, the build 39.75 MHz
    (its PLL's clock), which the driver does not hold against it (it did: ConfigMismatch clk_hz)."""
    from hw.boards import get_board
    from quant.digits import load_split
    from sw_driver.device import ConfigMismatch

    shipped = NPUModel.load("examples/digits_mlp_3bit.npu")
    with Device(npu_url, timeout=30.0) as dev, pytest.raises(ConfigMismatch, match="rows: 8 != 4"):
        NPURunner(dev).load(shipped)  # (the 8x8 model as it is: refused, naming the array)
    model, batch = retarget(shipped, get_board(BOARD).default_config())
    assert model.config.clk_hz == 40_000_000 != CFG.clk_hz
    split = load_split()
    x = model.input.quantize(split.x_test[:21])
    r, compiled, _ = _run(npu_url, model, x, batch=batch)
    assert batch == 7 and r.cycles == 3 * program_cycles(compiled)
    assert float(np.mean(r.classes == split.y_test[:21])) > 0.9


# -- shiftnpu sim-serve --board ----------------------------------------------------------------


@pytest.mark.parametrize(
    "argv,board,factory,name,rows",
    [
        (["--board", "icebreaker"], "icebreaker", "sim.npu_device:npu_top", "npu", 4),
        (
            ["--board", "ICEBreakerPlatform", "--rows", "8", "--cols", "8"],
            "icebreaker",
            "sim.npu_device:npu_top",
            "npu",
            8,
        ),
        (
            ["--board", "ulx3s-85f", "--factory", "sim.serve:link_test_top"],
            "ulx3s-85f",
            "sim.serve:link_test_top",
            "linktop",
            16,
        ),
        ([], None, "sim.serve:link_test_top", "linktop", 8),
    ],
)
def test_sim_serve_board_option(monkeypatch, argv, board, factory, name, rows):
    import sim.serve
    from quant.config import NPUConfig
    from sw_driver.cli import main

    seen = {}
    monkeypatch.setattr(sim.serve, "serve", lambda f, p, **kw: seen.update(factory=f, params=p, **kw))
    assert main(["sim-serve", "--port", "0", *argv]) == 0
    p = seen["params"]
    assert (seen["factory"], seen["name"], p.get("board")) == (factory, name, board)
    cfg = NPUConfig.from_dict(p["config"])
    assert cfg.rows == cfg.cols == rows
    if board is None:
        assert cfg == NPUConfig() and set(p) == {"config", "uart"}  # (the cache key of before)
    else:
        assert cfg == board_config(board, rows=rows, cols=rows)


def test_sim_serve_refuses_an_unknown_board(capsys):
    from sw_driver.cli import main

    assert main(["sim-serve", "--board", "nosuchboard"]) == 1
    assert "unknown board 'nosuchboard'" in capsys.readouterr().err


def test_the_shipped_top_behind_its_uart():
    """NPU(uart=True), the design a board build wraps: its INFO and a memory round trip over the real
    UARTs at the board's baud rate and clock (the bench bit-bangs the serial line)."""
    rng = np.random.default_rng(11)
    with simulated_npu(CFG, board=BOARD, uart=True) as url, Device(url, timeout=60.0) as dev:
        assert dev.info().config == CFG
        words = [int(w) for w in rng.integers(0, 1 << 12, 8)]
        dev.write_mem("weight", 2040, words)
        assert dev.read_mem("weight", 2040, 8) == words


def _sim(dut, bench):
    from amaranth.sim import Simulator

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


def test_spram_read_data_are_undefined_after_a_write():
    """SinglePortRAM on SB_SPRAM256KA: rdata holds across idle cycles, but a write leaves it undefined
    (cells_sim.v: DATAOUT <= 'x), which the board form's model shows as the complement."""
    from hw.spram import SinglePortRAM

    for board, after_write in (("icebreaker", 0xFFFF ^ 0x1234), (None, 0x1234)):
        ram = SinglePortRAM(16, 64)
        dut = BoardForm(ram, board) if board else ram

        async def bench(ctx, ram=ram, after_write=after_write):
            for addr, we, re in ((5, 1, 0), (5, 0, 1), (0, 0, 0), (9, 1, 0)):
                ctx.set(ram.addr, addr)
                ctx.set(ram.wdata, 0x1234 if addr == 5 else 0x5678)
                ctx.set(ram.we, we)
                ctx.set(ram.re, re)
                await ctx.tick()
                if (addr, re) == (5, 1) or addr == 0:
                    assert ctx.get(ram.rdata) == 0x1234
            assert ctx.get(ram.rdata) == after_write

        _sim(dut, bench)
        assert board is None or dict(dut.primitives) == {"SB_SPRAM256KA": 1}


def test_ebr_read_of_the_word_being_written_is_undefined():
    from hw.ebr import CollisionFreeRAM

    ram = CollisionFreeRAM(16, 256)
    dut = BoardForm(ram, "icebreaker")

    async def bench(ctx):
        for raddr, re, waddr, we, want in ((0, 0, 7, 1, None), (7, 1, 8, 1, 0x0007), (8, 1, 8, 1, 0xFFF7)):
            ctx.set(ram.raddr, raddr)
            ctx.set(ram.re, re)
            ctx.set(ram.waddr, waddr)
            ctx.set(ram.wdata, waddr)
            ctx.set(ram.we, we)
            await ctx.tick()
            if want is not None:
                assert ctx.get(ram.rdata) == want, hex(ctx.get(ram.rdata))

    _sim(dut, bench)
