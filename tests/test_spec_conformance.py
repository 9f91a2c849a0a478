"""SPEC.md conformance: worked examples derived by hand from the SPEC's text, not from our code.

Each expected value below is computed in the comment beside it from the SPEC formula it tests, so a
change of rounding mode, saturation bound, code mapping or PWL segment rule in the golden model (or
in an RTL block checked here) fails one of these. Where the SPEC leaves a choice to the project (the
multiplier derivation, GRU's gating of ``U_n h``) the test says so and checks docs/arithmetic.md's rule.
"""

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.pwl import PWLUnit
from quant import codes
from quant.compile import CompileError, plan_gemm
from quant.config import NPUConfig
from quant.fixed import quantize_multiplier, requant, rshift_round, sat
from quant.gate_map import table_entries
from quant.golden import forward
from quant.model import DenseLayer, InputSpec, ModelFormatError, NPUModel, load_model
from quant.pwl import PWLTable, hardware_span_limits
from quant.rnn import RNNParams, accumulator_ranges, default_tables, gru_pointwise, lstm_pointwise, requant_gates

pytestmark = pytest.mark.filterwarnings("ignore:.*created but never used")

# -- SPEC §1: rshift_round(x, n) = (x + (1 << (n - 1))) >> n, arithmetic, round half up --------------

RSHIFT_CASES = [
    (5, 1, 3),  # (5 + 1) >> 1 = 3            (2.5 -> 3)
    (-5, 1, -2),  # (-5 + 1) >> 1 = -4 >> 1 = -2 (-2.5 -> -2: half UP, not away from zero)
    (-3, 1, -1),  # (-3 + 1) >> 1 = -1          (-1.5 -> -1; banker's and half-away would give -2)
    (3, 1, 2),  # (3 + 1) >> 1 = 2             (1.5 -> 2)
    (1, 1, 1),  # 0.5 -> 1
    (-1, 1, 0),  # -0.5 -> 0
    (6, 2, 2),  # (6 + 2) >> 2 = 2             (1.5 -> 2)
    (-6, 2, -1),  # (-6 + 2) >> 2 = -1          (-1.5 -> -1)
    (-2, 2, 0),  # (-2 + 2) >> 2 = 0            (-0.5 -> 0)
    (-7, 2, -2),  # (-7 + 2) >> 2 = -5 >> 2 = -2 (-1.75 -> -2: floor of the sum)
    (7, 0, 7),  # n = 0: identity
    (-7, 0, -7),
    (-1, 63, 0),  # (-1 + 2**62) >> 63 = 0
    (-(2**62), 63, 0),  # (-(2**62) + 2**62) >> 63 = 0  (-0.5 -> 0)
    (-(2**62) - 1, 63, -1),  # -1 >> 63 = -1
    (2**62, 63, 1),  # 2**63 >> 63 = 1             (0.5 -> 1)
]


@pytest.mark.parametrize("x,n,y", RSHIFT_CASES)
def test_rshift_round_worked_examples(x, n, y):
    assert rshift_round(x, n) == y
    if abs(x) < 2**62:  # the int64 array path (the golden model's) gives the same
        assert rshift_round(np.array([x, x], np.int64), n).tolist() == [y, y]
        assert rshift_round(np.array([x], np.int64), np.array([n])).tolist() == [y]


def test_rshift_round_exact_at_the_int64_limits():
    """The formula holds for every integer, so the int64 array path may not wrap inside it."""
    big = np.array([2**63 - 1, -(2**63), 2**62, -(2**62) - 1], np.int64)
    # (2**63 - 1 + 2**62) >> 63 = 1 (0.99.. -> 1); (-2**63 + 2**62) >> 63 = -1 (exactly -1.0);
    # (2**62 + 2**62) >> 63 = 1 (0.5 -> 1); (-2**62 - 1 + 2**62) >> 63 = -1 (-0.50..01 -> -1)
    assert rshift_round(big, 63).tolist() == [1, -1, 1, -1]
    assert rshift_round(big, np.full(4, 63)).tolist() == [1, -1, 1, -1]
    assert rshift_round(np.int64(2**62), 63) == 1  # a numpy scalar is exact too
    # n = 64: (x + 2**63) >> 64 = 0 for every int64 x (the sum lies in [0, 2**64))
    assert rshift_round(big, 64).tolist() == [0, 0, 0, 0]
    assert rshift_round(5, 64) == 0 and rshift_round(-(2**70), 64) == -64  # Python ints: any size


def test_integer_sequences_and_refused_floats():
    """Lists work like arrays; a float is refused rather than silently truncated (SPEC §1: no float)."""
    assert rshift_round([5, -5, -3], 1).tolist() == [3, -2, -1]
    assert sat([300, -300], 8).tolist() == [127, -128]
    assert requant(5, 0, np.array([1, 2]), [0, 1]).tolist() == [5, 5]  # 5; (10 + 1) >> 1 = 5
    for bad in ((2.5, 1), (5, 1.0)):
        with pytest.raises(TypeError):
            rshift_round(*bad)
    with pytest.raises(TypeError):
        requant(2.5, 0, 1, 0)


def test_sat_bounds():
    # sat(x, bits) clamps to [-(2**(bits-1)), 2**(bits-1) - 1]
    assert [sat(v, 8) for v in (-129, -128, 127, 128, 0)] == [-128, -128, 127, 127, 0]
    assert [sat(v, 16) for v in (-40000, -32768, 32767, 32768)] == [-32768, -32768, 32767, 32767]
    assert sat(2**31, 32) == 2**31 - 1 and sat(-(2**40), 32) == -(2**31)
    assert sat(np.array([-129, 128, 5]), 8).tolist() == [-128, 127, 5]


# -- SPEC §2: DenseShift codes: top bit sign (1 = negative), low b-1 bits k, v = (-1)**sign * 2**k ---


def test_code_table_every_width():
    assert codes.decode(np.arange(4), 2).tolist() == [1, 2, -1, -2]  # 0b00 +1, 0b01 +2, 0b10 -1, 0b11 -2
    assert codes.decode(np.arange(8), 3).tolist() == [1, 2, 4, 8, -1, -2, -4, -8]
    assert codes.decode(np.arange(16), 4).tolist() == [1 << k for k in range(8)] + [-(1 << k) for k in range(8)]
    for b in (2, 3, 4):  # no zero code, no code wasted
        assert 0 not in codes.decode(np.arange(1 << b), b).tolist()
        assert len(set(codes.decode(np.arange(1 << b), b).tolist())) == 1 << b


def test_shift_products_in_a_gemm():
    # p = sign ? -(a << k) : (a << k): a = -128 with 4-bit +128 (0b0111) is -16384, with -128
    # (0b1111) +16384; a = 127 with 3-bit 0b110 (-4) is -508.
    from quant.golden import gemm_acc

    assert gemm_acc(np.array([[-128]]), np.array([[0b0111, 0b1111]]), 4).tolist() == [[-16384, 16384]]
    assert gemm_acc(np.array([[127, 1]]), np.array([[0b110], [0b011]]), 3).tolist() == [[-508 + 8]]


# -- SPEC §3: y = sat(rshift_round((acc + bias) * M, n), 8), M unsigned 16-bit, n in [0, 63] ---------

REQUANT_CASES = [
    # acc, bias, M, n, relu, y
    (100, 28, 3, 2, False, 96),  # (128 * 3 + 2) >> 2 = 386 >> 2 = 96
    (4, 1, 1, 1, False, 3),  # 5 -> (5 + 1) >> 1 = 3
    (-4, -1, 1, 1, False, -2),  # -5 -> (-5 + 1) >> 1 = -2 (half up)
    (-3, 0, 1, 1, False, -1),  # -1.5 -> -1
    (-1000, 0, 65535, 16, False, -128),  # (-65535000 + 32768) >> 16 = -1000 -> sat -128
    (-1000, 0, 65535, 16, True, 0),  # fused ReLU: the low end clamps to 0
    (100, 0, 2, 0, False, 127),  # n = 0: 200 -> sat 127
    (50, 10, 2, 0, True, 120),  # ReLU leaves a positive value alone
    (-(2**21), -(2**31), 65535, 63, False, 0),  # |x * M| < 2**62: rounds to 0 at n = 63
    (12345, 678, 0, 0, False, 0),  # M = 0 is an unsigned 16-bit value: the output is 0
    (-129, 0, 1, 0, False, -128),
    (0, 255, 1, 1, False, 127),  # 255 -> 128 -> sat 127
    (0, -257, 1, 1, False, -128),  # -257 -> -128
]


@pytest.mark.parametrize("acc,bias,M,n,relu,y", REQUANT_CASES)
def test_requant_worked_examples(acc, bias, M, n, relu, y):
    assert requant(acc, bias, M, n, relu=relu) == y
    got = requant(np.array([acc], np.int64), np.array([bias]), np.array([M]), np.array([n]), relu=relu)
    assert got.tolist() == [y]


def test_requant_rejects_out_of_range_parameters():
    for M, n in ((65536, 0), (-1, 0), (1, 64), (1, -1)):
        with pytest.raises(ValueError):
            requant(0, 0, M, n)


def test_model_with_zero_multiplier_is_valid_and_outputs_zero():
    """SPEC §3: M is unsigned 16-bit, so M = 0 is a legal channel multiplier (its output is 0)."""
    codes3 = np.array([[0], [4]], np.uint8)  # weights +1, -1
    la = DenseLayer(
        "fc",
        np.repeat(codes3, 2, axis=1),
        np.array([0, 1], np.uint16),
        np.array([0, 0], np.uint8),
        np.zeros(2, np.int32),
        False,
    )
    m = NPUModel(NPUConfig(), InputSpec(shape=(2,)), [la])
    m.validate()
    # acc = 100 * 1 + (-20) * (-1) = 120 in both channels: M = 0 gives 0, M = 1 (n = 0) gives 120
    assert forward(m, np.array([[100, -20]])).tolist() == [[0, 120]]


def test_acc_width_from_max_k():
    # The largest |product| is 128 * max|w| (a = -128 times the most negative weight); max_k of them
    # reach +max_k * 128 * max|w|, which needs one bit more than that power of two.
    assert NPUConfig(weight_bits=3, max_k=1024).acc_width == 22  # 2**20 -> 22 bits
    assert NPUConfig(weight_bits=4, max_k=1024).acc_width == 26  # 2**24
    assert NPUConfig(weight_bits=8, max_k=1024).acc_width == 26  # 128 * 128 * 1024 = 2**24
    assert NPUConfig(weight_bits=2, rows=8, max_k=8).acc_width == 13  # 8 * 256 = 2**11


def test_compiler_refuses_exactly_the_reductions_that_could_overflow():
    """SPEC §3: refuse a layer whose worst case could overflow, and only such a layer."""
    cfg = NPUConfig(weight_bits=3, rows=8, max_k=8)  # 8 * 1024 = 2**13: 15-bit accumulator [-16384, 16383]
    assert cfg.acc_width == 15
    # 16 taps of +8: a = 127 gives 16256, a = -128 gives -16384: both fit, so the layer is accepted
    plan_gemm(cfg, 1, 16, 1, w_codes=np.full((16, 1), 3))
    # 16 taps of -8: a = -128 everywhere gives +16384 > 16383: refused
    with pytest.raises(CompileError, match="overflow.* 16384"):
        plan_gemm(cfg, 1, 16, 1, w_codes=np.full((16, 1), 7))
    # 17 taps of +8: a = -128 gives -17408 < -16384: refused
    with pytest.raises(CompileError, match="overflow.* -17408"):
        plan_gemm(cfg, 1, 17, 1, w_codes=np.full((17, 1), 3))
    # the same rule in the model file's validation
    layer = DenseLayer(
        "fc", np.full((16, 1), 3, np.uint8), np.ones(1, np.uint16), np.zeros(1, np.uint8), np.zeros(1, np.int32), False
    )
    NPUModel(cfg, InputSpec(shape=(16,)), [layer]).validate()
    layer.codes[:] = 7
    with pytest.raises(ModelFormatError, match=r"range \[-16256, 16384\] needs 16 bits"):
        NPUModel(cfg, InputSpec(shape=(16,)), [layer]).validate()


# -- SPEC §5: y = sat(y_i + rshift_round(m_i * (z - k_i), S), 16) on k_i <= z < k_{i+1}, last closed --

HAND_TABLE = PWLTable(np.array([-100, 0, 50, 200]), np.array([10, -20, 1000]), np.array([3, -5, 70]), 2)
PWL_CASES = [
    (-200, 10),  # clamped to k_0 = -100: segment 0, d = 0 -> 10
    (-100, 10),  # at k_0
    (-99, 11),  # d = 1: (3 + 2) >> 2 = 1
    (-98, 12),  # d = 2: (6 + 2) >> 2 = 2 (1.5 -> 2)
    (-1, 84),  # d = 99: (297 + 2) >> 2 = 74
    (0, -20),  # z = k_1 belongs to segment 1 (k_1 <= z): d = 0
    (2, -22),  # d = 2: (-10 + 2) >> 2 = -2 (-2.5 -> -2, half up)
    (49, -81),  # d = 49: (-245 + 2) >> 2 = -61
    (50, 1000),  # z = k_2 starts segment 2
    (200, 3625),  # z = k_N: the last segment is closed: d = 150, (10500 + 2) >> 2 = 2625
    (201, 3625),  # clamped to k_N
    (32767, 3625),
    (-32768, 10),
]


@pytest.mark.parametrize("z,y", PWL_CASES)
def test_pwl_worked_examples(z, y):
    assert HAND_TABLE(z) == y
    assert HAND_TABLE(np.array([z])).tolist() == [y]


def test_pwl_saturates_to_int16():
    up = PWLTable(np.array([0, 10]), np.array([32000]), np.array([32767]), 0)
    down = PWLTable(np.array([0, 10]), np.array([-32000]), np.array([-32768]), 0)
    assert up(10) == 32767 and down(10) == -32768  # 32000 + 327670 -> 32767; -32000 - 327680 -> -32768
    assert up(0) == 32000 and down(0) == -32000


def test_pwl_any_int16_knots_are_valid():
    """SPEC §5 sets no limit on a segment's span: the golden model evaluates a full-range segment."""
    one = PWLTable(np.array([-32768, 32767]), np.array([-32768]), np.array([1]), 1)
    assert one(32767) == 0  # d = 65535: (65535 + 1) >> 1 = 32768 -> -32768 + 32768 = 0
    assert one(0) == -16384  # d = 32768: (32768 + 1) >> 1 = 16384
    assert one(-32768) == -32768
    with pytest.raises(ValueError, match="segment 0 spans 65535"):
        one.check_hardware()  # ... but the hardware's int16 offset cannot reach it
    two = PWLTable(np.array([-32768, 0, 32767]), np.array([0, 0]), np.array([1, 1]), 0)
    assert two(-1) == 32767 and two(32767) == 32767 and two(0) == 0  # d = 32767 in both segments
    two.check_hardware()  # spans 32768 (half-open) and 32767 (closed): the int16 offset holds both
    assert hardware_span_limits(2) == [32768, 32767]
    last_long = PWLTable(np.array([-32768, -1, 32767]), np.array([0, 0]), np.array([1, 1]), 0)
    assert last_long(32767) == 32767  # d = 32768 -> 32768 -> sat 32767
    with pytest.raises(ValueError, match="segment 1 spans 32768"):
        last_long.check_hardware()
    cfg = NPUConfig(pwl_pieces=2, pwl_shift=0)
    with pytest.raises(ValueError, match="segment 1 spans 32768"):
        PWLUnit(cfg, init=[last_long])
    with pytest.raises(ValueError, match="'sigmoid'.*segment 1 spans 32768"):
        table_entries(cfg, {"sigmoid": last_long, "tanh": two, "tanh_cell": two})


def test_two_piece_fits_load_into_the_hardware():
    """pwl_pieces = 2 is a valid config: its fitted tables split the int16 range at 0, the only knot
    that leaves both segments within the unit's int16 offset."""
    cfg = NPUConfig(pwl_pieces=2)
    tables = default_tables(cfg)
    for t in tables.values():
        assert t.knots.tolist() == [-32768, 0, 32767]
        t.check_hardware()
    PWLUnit(cfg, tables=3, init=list(tables.values()))
    table_entries(cfg, tables)


def _run_pwl_unit(cfg: NPUConfig, t: PWLTable, zs: list[int]) -> list[int]:
    """The RTL PWL unit (table built in) on ``zs``, one input per cycle, results in order."""
    dut = PWLUnit(cfg, tables=1, init=[t])
    got = []

    async def tb(ctx):
        ctx.set(dut.o_stream.ready, 1)
        pending = list(zs)
        while len(got) < len(zs):
            if pending:
                ctx.set(dut.i_stream.payload.z, pending[0])
            ctx.set(dut.i_stream.valid, bool(pending))
            _, _, iv, ir, ov, out = await ctx.tick().sample(
                dut.i_stream.valid, dut.i_stream.ready, dut.o_stream.valid, dut.o_stream.payload
            )
            if iv and ir:
                pending.pop(0)
            if ov:
                got.append(int(out))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return got


def test_pwl_unit_long_segment_amaranth_sim():
    """The RTL PWL unit on a 2-piece table whose first segment spans 2**15 (the most its int16
    offset allows), bit-exact with the golden model around every knot and across the range."""
    t = PWLTable(np.array([-32768, 0, 32767]), np.array([-30000, 1234]), np.array([-32768, 32767]), 11)
    zs = sorted({*range(-32768, 32768, 997), -32768, -32767, -1, 0, 1, 32766, 32767, -16384, 16384})
    assert _run_pwl_unit(NPUConfig(pwl_pieces=2, pwl_shift=11), t, zs) == [t(z) for z in zs]
    assert t(-1) == sat(-30000 + rshift_round(-32768 * 32767, 11), 16)  # d = 32767, the largest offset


@pytest.mark.parametrize("N", [4, 8])
def test_pwl_unit_interior_end_knots_amaranth_sim(N):
    """Tables whose end knots lie inside int16 (the clamp binds) and random y, m over all of int16:
    the RTL agrees with the golden model on and around every knot and far outside the table."""
    rng = np.random.default_rng(N)
    cfg = NPUConfig(pwl_pieces=N, pwl_shift=11)
    for lo, hi in ((-3000, 3000), (-32768, 20000), (-100, 32767)):
        k = np.sort(rng.choice(np.arange(lo, hi + 1), N + 1, replace=False))
        t = PWLTable(k, rng.integers(-32768, 32768, N), rng.integers(-32768, 32768, N), 11)
        near = {int(v) + d for v in k for d in (-1, 0, 1)} | {-32768, 32767}
        zs = sorted(z for z in near | set(rng.integers(-32768, 32768, 20).tolist()) if -32768 <= z <= 32767)
        assert _run_pwl_unit(cfg, t, zs) == [t(z) for z in zs], k.tolist()


@pytest.mark.parametrize("S", [0, 17, 18, 30])
def test_pwl_unit_every_slope_shift_amaranth_sim(S):
    """Every ``pwl_shift`` the config accepts (0..30): extreme y and m saturate instead of wrapping
    (the unit's sum was too narrow for S >= 18)."""
    zs = [-32768, -32767, -16384, -1, 0, 1, 100, 16384, 32766, 32767]
    for y, m in ((32767, 32767), (-32768, -32768), (32767, -32768), (100, -5)):
        t = PWLTable(np.array([-32768, 0, 32767]), np.array([y, -1 - y]), np.array([m, -1 - m]), S)
        assert _run_pwl_unit(NPUConfig(pwl_pieces=2, pwl_shift=S), t, zs) == [t(z) for z in zs], (y, m)
    if S == 30:  # by hand: z = -1, d = 32767: (32767 * 32767 + 2**29) >> 30 = 1, so 32767 + 1 -> 32767
        t = PWLTable(np.array([-32768, 0, 32767]), np.array([32767, 100]), np.array([32767, -5]), 30)
        assert t(-1) == 32767 and t(32767) == 100  # (-5 * 32767 + 2**29) >> 30 = 0


# -- SPEC §4: integer LSTM, with tables simple enough to evaluate by hand ------------------------------

FULL = np.array([-32768, 0, 32767])
HALF = PWLTable(FULL, np.array([16384, 16384]), np.array([0, 0]), 0)  # σ == 0.5 (Q0.15)
ONE = PWLTable(FULL, np.array([32767, 32767]), np.array([0, 0]), 0)  # σ == 32767 / 32768
IDENT = PWLTable(FULL, np.array([-32768, 0]), np.array([1, 1]), 0)  # tanh(z) == z


def _lstm(z4, c, sig):
    z = np.array(z4, np.int64).reshape(1, 4, 1)
    h, c2 = lstm_pointwise(z, np.array([[c]]), {"sigmoid": sig, "tanh": IDENT, "tanh_cell": IDENT}, 11)
    return int(h[0, 0]), int(c2[0, 0])


def test_lstm_worked_examples():
    # i = f = o = 16384 (0.5), g = z_g, c = 2048 (1.0 in Q4.11):
    # f*c: (16384 * 2048 + 2**14) >> 15 = 1024; i*g: (16384 * 8192 + 2**18) >> 19 = 256 (+ 0.5 floors)
    # c' = 1280; h' = (16384 * 1280 + 2**22) >> 23 = 2.5 -> 3 (half up)
    assert _lstm([0, 0, 8192, 0], 2048, HALF) == (3, 1280)
    # the mirror image: c' = -1280, h' = -2.5 -> -2 (half up, not away from zero)
    assert _lstm([0, 0, -8192, 0], -2048, HALF) == (-2, -1280)
    # i = f = o = 32767: f*c = (32767 * 32767 + 2**14) >> 15 = 32766; i*g = (32767**2 + 2**18) >> 19
    # = 2048; c' = sat(34814, 16) = 32767; h' = (32767**2 + 2**22) >> 23 = 128 -> sat 127
    assert _lstm([0, 0, 32767, 0], 32767, ONE) == (127, 32767)
    assert _lstm([0, 0, -32768, 0], -32768, ONE) == (-128, -32768)  # c' = sat(-32767 - 2048) = -32768


def test_gate_requant_to_q3_12():
    # z = sat(rshift_round(acc * M, n), 16), the bias already inside acc
    acc = np.array([[100000, 3, -3, -5]]).reshape(1, 4, 1)
    M, n = np.array([[1], [1], [1], [3]]), np.array([[0], [1], [1], [2]])
    # 100000 -> 32767; (3 + 1) >> 1 = 2; (-3 + 1) >> 1 = -1; (-15 + 2) >> 2 = -4 (-3.75 -> -4)
    assert requant_gates(acc, M, n).ravel().tolist() == [32767, 2, -1, -4]


def test_gru_worked_example():
    """SPEC §4 gives h' = n + z (h - n) in the LSTM's formats; docs/arithmetic.md fixes the rest
    (r gates the separately requantized U_n h + b_nh, one rounding of the Q0.30 sum)."""
    z = np.array([0, 0, 8192, 0]).reshape(1, 4, 1)  # z-gate, r-gate via σ == 0.5; a = 8192, b = 0
    # n = tanh(8192 + 0) = 8192 (0.25); h = 64 (0.5 in Q0.7): h' = 0.25 + 0.5 (0.5 - 0.25) = 0.375 = 48
    assert gru_pointwise(z, np.array([[64]]), {"sigmoid": HALF, "tanh": IDENT}).tolist() == [[48]]


def test_rnn_bias_takes_every_int32():
    """SPEC §3: the bias is int32, so -2**31 is a valid bias (and 2**31 is not)."""
    tables = {"sigmoid": HALF, "tanh": IDENT, "tanh_cell": IDENT}
    b = np.array([[-(2**31)], [2**31 - 1], [0], [0]])
    RNNParams("lstm", np.zeros((4, 1)), np.zeros((4, 1)), b, np.ones((4, 1)), np.zeros((4, 1)), 3, tables)
    with pytest.raises(ValueError, match="int32"):
        RNNParams("lstm", np.zeros((4, 1)), np.zeros((4, 1)), -b, np.ones((4, 1)), np.zeros((4, 1)), 3, tables)


def test_rnn_accumulator_ranges():
    """SPEC §3 (no silent wrap) for the recurrent layers: with x, h in [-128, 127] a slot reaches
    b + 127 * (positive |w|) + 128 * (negative |w|) at the top and b - 128 * pos - 127 * neg at the bottom."""
    H, wb = 1, 3
    W = np.full((4, 2), 3)  # +8 each: 2 inputs, pos = 16
    U = np.full((4, 1), 7)  # -8: neg = 8
    b = np.array([[10], [-20], [0], [5]])
    tables = {"sigmoid": HALF, "tanh": IDENT, "tanh_cell": IDENT}
    p = RNNParams("lstm", W, U, b, np.ones((4, H)), np.zeros((4, H)), wb, tables)
    lo, hi = accumulator_ranges(p)
    # lo = b - 128 * 16 - 127 * 8 = b - 3064; hi = b + 127 * 16 + 128 * 8 = b + 3056
    assert lo.ravel().tolist() == [10 - 3064, -20 - 3064, -3064, 5 - 3064]
    assert hi.ravel().tolist() == [10 + 3056, -20 + 3056, 3056, 5 + 3056]
    g = RNNParams("gru", W[:3], U[:3], b, np.ones((4, H)), np.zeros((4, H)), wb, tables)
    # z, r: W and U rows as above; nx: W row 2 only (pos 16: -2048, 2032); nh: U row 2 only (neg 8: 5 - 1016, 5 + 1024)
    lo, hi = accumulator_ranges(g)
    assert lo.ravel().tolist() == [10 - 3064, -20 - 3064, -2048, 5 - 1016]
    assert hi.ravel().tolist() == [10 + 3056, -20 + 3056, 2032, 5 + 1024]


def test_sequential_rnn_layer_refuses_exactly_the_overflowing_accumulators():
    from hw.rnn_layer import SequentialRNNLayer

    cfg = NPUConfig(weight_bits=3, rows=8, max_k=8, pwl_pieces=2, pwl_shift=0)  # 15-bit: [-16384, 16383]
    tables = {"sigmoid": HALF, "tanh": IDENT, "tanh_cell": IDENT}
    layer = SequentialRNNLayer(cfg, "lstm", max_in=4, max_hidden=2, max_steps=2)
    W, U = np.full((8, 4), 3), np.full((8, 2), 3)  # 6 taps of +8: the sums reach b - 6144 .. b + 6096

    def params(bias: int) -> RNNParams:
        return RNNParams("lstm", W, U, np.full((4, 2), bias), np.ones((4, 2)), np.zeros((4, 2)), 3, tables)

    layer.param_writes(params(10287))  # 10287 + 127 * 48 = 16383 fits
    layer.param_writes(params(-10240))  # -10240 - 128 * 48 = -16384 fits
    for bias in (10288, -10241):  # 16384 and -16385 would wrap
        with pytest.raises(ValueError, match="accumulator overflow"):
            layer.param_writes(params(bias))


# -- the project's multiplier derivation (docs/arithmetic.md; the SPEC fixes only M's and n's ranges) --


def test_quantize_multiplier_worked_examples():
    assert quantize_multiplier(0.5) == (32768, 16)  # 0.5 * 2**16; 2**17 would not fit 16 bits
    assert quantize_multiplier(1 / 3) == (43691, 17)  # 43690.67 -> 43691
    assert quantize_multiplier(1 - 2**-20) == (32768, 15)  # 65535.94 rounds to 2**16: one shift less
    assert quantize_multiplier(65535.0) == (65535, 0)
    assert quantize_multiplier(2**-48) == (32768, 63)
    with pytest.raises(ValueError):
        quantize_multiplier(65535.5)  # rounds to 65536 at n = 0


def test_shipped_examples_use_spec_ranges():
    """Every shipped model's requantizers and PWL tables lie in the SPEC's ranges and its tables load
    into the hardware unit."""
    from pathlib import Path

    for path in sorted(Path(__file__).resolve().parent.parent.glob("examples/*.npu")):
        m = load_model(path)
        for la in m.layers:
            for name in ("M", "n", "bias"):
                a = getattr(la, name, None)
                if a is not None:
                    assert {"M": np.uint16, "n": np.uint8, "bias": np.int32}[name] == a.dtype
            if getattr(la, "n", None) is not None:
                assert int(la.n.max()) <= 63
            for t in getattr(la, "tables", {}).values():
                t.check_hardware()
                assert t.pieces == m.config.pwl_pieces and t.shift == m.config.pwl_shift
