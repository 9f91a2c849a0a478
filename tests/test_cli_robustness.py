"""The ``shiftnpu`` command line against what demanding users throw at it.

Bad option values, missing / corrupt / mistyped files, devices that are absent, silent, talk
garbage or hang up, input arrays of the wrong shape, type or range, outputs that cannot be written:
every one must end in a one-line error naming the problem and a non-zero exit status, never a
traceback, a hang, or values silently clipped or wrapped. No Verilator and no synthesis here: the
"devices" are Python models behind local TCP sockets.
"""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from quant import golden
from quant.model import _HEADER, ModelFormatError, NPUModel
from sw_driver.cli import COMMANDS, build_parser, main

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
MLP = EXAMPLES / "digits_mlp_3bit.npu"


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """Exit status (argparse's SystemExit included), stdout, stderr."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc, err, *words):
    assert rc not in (0, None), err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert lines, "no error message"
    last = lines[-1]
    assert "error" in last, err
    for w in words:
        assert w in last, f"{w!r} not in {last!r}"


# -- help -----------------------------------------------------------------------------------------


def test_every_subcommand_help_has_examples_and_version(capsys):
    build_parser()
    for name in COMMANDS:
        rc, out, _ = run_cli(capsys, name, "--help")
        assert rc == 0
        assert "examples:" in out and f"shiftnpu {name}" in out.split("examples:")[1], name
    rc, out, _ = run_cli(capsys, "--version")
    assert rc == 0 and out.startswith("shiftnpu ")
    rc, out, _ = run_cli(capsys, "train", "--help")
    flat = " ".join(out.split())
    assert "(default digits-mlp)" in flat and "(default 3)" in flat


# -- option values ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, what",
    [
        (["infer", "--model", MLP, "--limit", "0"], "--limit"),
        (["infer", "--model", MLP, "--limit", "-5"], "--limit"),  # was: x[:-5], 355 samples run silently
        (["infer", "--model", MLP, "--batch", "0"], "--batch"),
        (["infer", "--model", MLP, "--timeout", "0"], "--timeout"),
        (["infer", "--model", MLP, "--timeout", "nan"], "--timeout"),
        (["infer", "--model", MLP, "--baud", "-9600"], "--baud"),
        (["device-info", "--device", "x", "--timeout", "-1"], "--timeout"),
        (["demo", "--limit", "0"], "--limit"),  # was: all 360 digits through Verilator
        (["build", "--board", "icebreaker", "--seed", "-1"], "--seed"),
        (["sim-serve", "--port", "70000"], "--port"),
        (["train", "-o", "x.npu", "--epochs", "-3"], "--epochs"),  # was: trained, accuracy "nan%"
        (["train", "-o", "x.npu", "--epochs", "0"], "--epochs"),  # was: "ActQuant: the scale has not been observed"
        (["train", "-o", "x.npu", "--threads", "0"], "--threads"),  # was: RuntimeError traceback from torch
        (["train", "-o", "x.npu", "--task", "seq-digits", "--hidden", "0"], "--hidden"),  # was: a hang
        (["train", "-o", "x.npz", "--task", "charlm", "--steps", "-1"], "--steps"),
        (["train", "-o", "x.npu", "--bits", "5"], "--bits"),
    ],
)
def test_bad_option_values_are_usage_errors(capsys, argv, what):
    t0 = time.monotonic()
    rc, _, err = run_cli(capsys, *argv)
    assert rc == 2 and what in err and "Traceback" not in err
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize(
    "argv, words",
    [
        (["train", "-o", "x.npu", "--steps", "5"], ["--steps", "charlm"]),  # was: silently ignored
        (["train", "-o", "x.npu", "--cell", "gru"], ["--cell"]),
        (["train", "-o", "x.npu", "--task", "charlm"], [".npz"]),  # was: np.savez wrote x.npu.npz, then failed
        (["train", "-o", "x.npz"], [".npz"]),
        (["train", "--task", "seq-digits", "-o", "x.npu", "--pwl-pieces", "1"], ["pwl_pieces"]),
    ],
)
def test_train_refuses_options_of_another_task_before_training(capsys, argv, words, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    t0 = time.monotonic()
    rc, _, err = run_cli(capsys, *argv)
    assert_one_line_error(rc, err, *words)
    assert time.monotonic() - t0 < 5 and not list(tmp_path.iterdir())


def test_train_refuses_an_unwritable_output_before_training(capsys, tmp_path):
    (tmp_path / "file").write_text("")
    for out, why in [
        (tmp_path / "file" / "m.npu", "is not a directory"),
        (tmp_path / "missing" / "m.npu", "does not exist"),
        (tmp_path, "is a directory"),
    ]:
        t0 = time.monotonic()
        rc, _, err = run_cli(capsys, "train", "-o", out, "--no-progress")
        assert_one_line_error(rc, err, why)
        assert time.monotonic() - t0 < 5  # not after minutes of training


def test_missing_optional_packages_say_what_to_install(capsys, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "torch", None)  # `import torch` raises ImportError
    rc, _, err = run_cli(capsys, "train", "-o", "/tmp/never-written.npu")
    assert_one_line_error(rc, err, "torch", "pip install 'shiftnpu[train]'")
    monkeypatch.setitem(__import__("sys").modules, "sklearn", None)
    monkeypatch.setitem(__import__("sys").modules, "sklearn.datasets", None)
    rc, _, err = run_cli(capsys, "eval", MLP)
    assert_one_line_error(rc, err, "scikit-learn", "shiftnpu[train]")


def test_an_unexpected_exception_is_one_line_not_a_traceback(capsys, monkeypatch):
    build_parser()

    def boom(args):
        raise KeyError("oops")

    help_, add, _ = COMMANDS["info"]
    monkeypatch.setitem(COMMANDS, "info", (help_, add, boom))
    monkeypatch.setattr("sw_driver.cli._load_subcommand_modules", lambda: None)
    rc, _, err = run_cli(capsys, "info")
    assert_one_line_error(rc, err, "internal error", "KeyError", "SHIFTNPU_TRACEBACK")
    monkeypatch.setenv("SHIFTNPU_TRACEBACK", "1")
    with pytest.raises(KeyError):
        main(["info"])


# -- model files ----------------------------------------------------------------------------------


def _bad_model_files(d: Path) -> dict[str, tuple[Path, str]]:
    src = MLP.read_bytes()
    files = {}

    def put(name, data, why):
        p = d / name
        p.write_bytes(data)
        files[name] = (p, why)

    put("empty.npu", b"", "empty")
    put("json.npu", json.dumps({"rows": 4}).encode(), "looks like JSON")
    put("text.npu", b"hello world, not a model\n", "not a shiftnpu model file")
    put("magic.npu", b"XHIFTNPU" + src[8:], "not a shiftnpu model file")
    put("version.npu", src[:8] + (2).to_bytes(2, "little") + src[10:], "unsupported model format version 2")
    for cut in (4, 19, 20, 100, len(src) // 2, len(src) - 1):
        put(f"cut{cut}.npu", src[:cut], "truncated")
    for pos in (40, 2000, len(src) - 3):
        b = bytearray(src)
        b[pos] ^= 0x20
        put(f"flip{pos}.npu", bytes(b), "corrupt")
    (d / "dir.npu").mkdir()
    files["dir.npu"] = (d / "dir.npu", "is a directory")
    files["missing.npu"] = (d / "missing.npu", "does not exist")
    return files


@pytest.mark.parametrize("command", ["eval", "pack", "infer", "retarget", "build"])
def test_bad_model_files_are_one_line_errors(capsys, tmp_path, command, monkeypatch):
    # build/infer must refuse the model before synthesis / before opening the device
    monkeypatch.setattr("hw.build.build", lambda *a, **k: pytest.fail("build() ran"), raising=True)
    for name, (path, why) in _bad_model_files(tmp_path).items():
        argv = {
            "eval": ["eval", path],
            "pack": ["pack", path, "-o", tmp_path / "img"],
            "infer": ["infer", "--model", path, "--device", "socket://127.0.0.1:1"],
            "retarget": ["retarget", path, "-o", tmp_path / "out.npu", "--board", "icebreaker"],
            "build": ["build", "--board", "ulx3s-85f", "--model", path, "--build-dir", tmp_path / "b"],
        }[command]
        rc, _, err = run_cli(capsys, *argv)
        assert_one_line_error(rc, err, why)
        assert name in err


def _rebuild(src: bytes, manifest: dict) -> bytes:
    _magic, _ver, _res, mlen, _crc = _HEADER.unpack_from(src)
    data = src[_HEADER.size + mlen + (-(_HEADER.size + mlen) % 8) :]
    mb = json.dumps(manifest).encode()
    head = _HEADER.pack(b"SHIFTNPU", 1, 0, len(mb), zlib.crc32(mb))
    return head + mb + bytes(-(len(head) + len(mb)) % 8) + data


def test_crafted_manifests_raise_model_format_errors_only():
    """Manifests with a valid CRC but odd values (a crafted or hand-edited file): only
    ModelFormatError (before: OverflowError on a huge dimension, TypeError on a list as a name)."""
    src = MLP.read_bytes()
    mlen = _HEADER.unpack_from(src)[3]
    m0 = json.loads(src[_HEADER.size : _HEADER.size + mlen])
    cases = []
    for name in m0["arrays"]:
        for dim in (2**64, 2**63, -(2**64)):
            m = json.loads(json.dumps(m0))
            m["arrays"][name]["shape"][0] = dim
            cases.append(m)
    for key in m0["layers"][0]["arrays"]:
        for v in ([], {}, [1, 2], 3, None):
            m = json.loads(json.dumps(m0))
            m["layers"][0]["arrays"][key] = v
            cases.append(m)
    for m in cases:
        with pytest.raises(ModelFormatError):
            NPUModel.from_bytes(_rebuild(src, m))


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.npu")), ids=lambda p: p.name)
def test_every_truncation_and_header_flip_is_a_model_format_error(path):
    src = path.read_bytes()
    for cut in range(len(src)):
        with pytest.raises(ModelFormatError):
            NPUModel.from_bytes(src[:cut])
    for pos in [p for p in range(64) if p not in (10, 11)]:  # 10..11: the reserved field
        for bit in (0x01, 0x80):
            b = bytearray(src)
            b[pos] ^= bit
            with pytest.raises(ModelFormatError):
                NPUModel.from_bytes(bytes(b))


def test_model_save_is_atomic(tmp_path, monkeypatch):
    model = NPUModel.load(MLP)
    out = tmp_path / "m.npu"
    out.write_bytes(b"the old model")

    def fail(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="No space"):
        model.save(out)
    assert out.read_bytes() == b"the old model"  # untouched, not truncated
    assert [p.name for p in tmp_path.iterdir()] == ["m.npu"]  # no temporary left behind
    monkeypatch.undo()
    model.save(out)
    assert NPUModel.load(out).to_bytes() == model.to_bytes()
    assert out.stat().st_mode & 0o044  # readable by others as any file the user writes (not mkstemp's 0600)
    with pytest.raises(ModelFormatError, match="is a directory"):
        model.save(tmp_path)


# -- output paths -------------------------------------------------------------------------------


def test_unwritable_outputs_are_refused_before_work(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr("hw.build.build", lambda *a, **k: pytest.fail("build() ran"), raising=True)
    blocker = tmp_path / "file"
    blocker.write_text("")
    under = blocker / "sub"
    for argv in (
        ["pack", MLP, "-o", under],
        ["pack", MLP, "-o", blocker],
        ["generate", "--top", "array", "--rows", "2", "--cols", "2", "-o", under],
        ["retarget", MLP, "-o", under / "m.npu", "--board", "icebreaker"],
        ["build", "--board", "icebreaker", "--build-dir", under],
        ["infer", "--model", MLP, "--device", "socket://127.0.0.1:1", "--output", under / "o.npy"],
        ["infer", "--model", MLP, "--device", "socket://127.0.0.1:1", "--output", tmp_path / "o.txt"],
    ):
        rc, _, err = run_cli(capsys, *argv)
        assert_one_line_error(rc, err)
        assert str(blocker) in err or ".txt" in err
    assert not under.exists()


# -- boards, build, program, sim-serve -------------------------------------------------------------


def test_unknown_board_suggests_the_near_names(capsys):
    rc, _, err = run_cli(capsys, "estimate", "--board", "icebreakr")
    assert_one_line_error(rc, err, "did you mean 'icebreaker'")
    rc, _, err = run_cli(capsys, "estimate", "--board", "ulx3s")
    assert_one_line_error(rc, err, "ulx3s-85f", "ulx3s-25f")
    rc, _, err = run_cli(capsys, "program", "--board", "orangecrab", "--dry-run")  # was: "no build found"
    assert_one_line_error(rc, err, "unknown board", "orangecrab-85f")
    rc, out, _ = run_cli(capsys, "estimate", "--board", "ICEBreaker", "--json")
    assert rc == 0 and json.loads(out)["board"] == "icebreaker"


def test_build_refusals_run_no_tools(capsys, tmp_path, monkeypatch):
    import hw.build

    monkeypatch.setattr(hw.build, "_build_once", lambda *a, **k: pytest.fail("synthesis started"))
    for argv, words in [
        (["--rows", "0"], ["array size 0x4"]),
        (["--freq", "-5"], ["clock must be positive"]),
        (["--freq", "fast"], ["--freq"]),
        (["--freq", "nan"], ["PLL"]),
        (["--rows", "16", "--cols", "16"], ["does not fit"]),
    ]:
        rc, _, err = run_cli(capsys, "build", "--board", "icebreaker", "--build-dir", tmp_path / "b", *argv)
        assert rc == 1 and "Traceback" not in err
        assert all(w in err for w in words), err


def test_program_checks_its_inputs(capsys, tmp_path):
    rc, _, err = run_cli(capsys, "program", "--board", "icebreaker", "--bitstream", tmp_path, "--dry-run")
    assert_one_line_error(rc, err, "is a directory")
    (tmp_path / "empty.bin").write_bytes(b"")
    rc, _, err = run_cli(capsys, "program", "--board", "icebreaker", "--bitstream", tmp_path / "empty.bin")
    assert_one_line_error(rc, err, "is empty")
    for text in ("{}", "not json", "[1]", '{"bitstream": 3}'):
        (tmp_path / "report.json").write_text(text)
        rc, _, err = run_cli(capsys, "program", "--board", "icebreaker", "--build-dir", tmp_path, "--dry-run")
        assert_one_line_error(rc, err, "not a shiftnpu build report")  # was: KeyError traceback


def test_sim_serve_refuses_a_busy_port_before_building(capsys, monkeypatch):
    monkeypatch.setattr("sim.serve.serve", lambda *a, **k: pytest.fail("the build started"))
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        rc, _, err = run_cli(capsys, "sim-serve", "--port", s.getsockname()[1])
    finally:
        s.close()
    assert_one_line_error(rc, err, "--port", "0 for any")
    rc, _, err = run_cli(capsys, "sim-serve", "--uart", "--baud", "30000000")
    assert_one_line_error(rc, err, "too slow")
    rc, _, err = run_cli(capsys, "sim-serve", "--factory", "no.such.module:top")
    assert_one_line_error(rc, err, "cannot load factory")


# -- devices --------------------------------------------------------------------------------------


class Server:
    """A TCP server on 127.0.0.1 that answers each chunk it receives with ``respond(data)``
    (``None``: hang up)."""

    def __init__(self, respond):
        self.respond = respond
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(4)
        self.srv.settimeout(0.1)
        self.url = f"socket://127.0.0.1:{self.srv.getsockname()[1]}"
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                continue
            conn.settimeout(0.05)
            with conn:
                while not self.stop:
                    try:
                        data = conn.recv(65536)
                    except TimeoutError:
                        idle = getattr(self.respond, "idle", None)
                        if idle:
                            idle()
                        continue
                    except OSError:
                        break
                    if not data:
                        break
                    out = self.respond(data)
                    if out is None:
                        break
                    if out:
                        conn.sendall(out)

    def close(self):
        self.stop = True
        self.thread.join()
        self.srv.close()


@pytest.fixture
def server():
    made = []

    def make(respond):
        made.append(Server(respond))
        return made[-1]

    yield make
    for s in made:
        s.close()


def test_devices_that_talk_garbage_echo_or_hang_up(capsys, server):
    from sw_driver.device import Device, LinkError, NoAnswer

    garbage = server(lambda d: bytes(range(256)) * 2)
    echo = server(lambda d: d)
    hangup = server(lambda d: None)
    for srv, exc, words in [
        (garbage, NoAnswer, ["bytes arrived but no reply frame", "baud rate"]),  # was: "no answer ... powered?"
        (echo, NoAnswer, ["bytes arrived but no reply frame"]),
        (hangup, LinkError, ["lost the connection to socket://"]),  # was: "read failed: socket disconnected"
    ]:
        t0 = time.monotonic()
        with pytest.raises(exc) as e, Device(srv.url, timeout=0.2, retries=1) as dev:
            dev.info()
        assert all(w in str(e.value) for w in words), str(e.value)
        assert srv.url in str(e.value)
        assert time.monotonic() - t0 < 3
        rc, _, err = run_cli(capsys, "device-info", "--device", srv.url, "--timeout", "0.2")
        assert_one_line_error(rc, err, srv.url)


def test_a_device_with_an_unreadable_info_payload(capsys, server):
    from sw_driver.protocol import Command, encode_reply

    srv = server(lambda d: encode_reply(Command.INFO, 0, struct.pack("<HHIBB", 1, 256, 1000, 16, 11) + b"\x05ab"))
    rc, _, err = run_cli(capsys, "device-info", "--device", srv.url, "--timeout", "0.5")
    assert_one_line_error(rc, err, srv.url, "answered INFO with a payload this driver cannot read")


class FakeNPU:
    """The link protocol's reference model (sim.link_model) with the NPU's memory map, whose START
    runs the layer program on the word-level device model (quant.device_model): a whole NPU as far
    as the driver can tell, in Python."""

    def __init__(self, config):
        from hw.hostif import info_payload
        from quant.device_model import DeviceModel
        from quant.memmap import npu_memory_map
        from sim.link_model import LinkModel

        regions = npu_memory_map(config)
        link = LinkModel(config, regions, info_payload(config, regions, 1000))
        names = [r.name for r in regions]

        def start():
            dm = DeviceModel(config, prog_depth=config.prog_depth)
            for i, name in enumerate(names):
                mem = getattr(dm, name)
                for addr, w in link.mem[i].items():
                    mem[addr] = w
            dm.run()
            link.mem[names.index("feature")] = dict(enumerate(dm.feature))
            link.status, link.cycles = 2 | (1234 << 3), 1234

        link._start = start
        self.link = link
        self.idle = link.idle

    def __call__(self, data: bytes) -> bytes:
        return self.link.feed(data)


@pytest.fixture(scope="module")
def mlp():
    return NPUModel.load(MLP)


def test_infer_with_input_and_output_files_on_a_python_npu(capsys, server, tmp_path, mlp):
    srv = server(FakeNPU(mlp.config))
    rng = np.random.default_rng(5)
    raw = rng.integers(0, 17, (5, 64))
    np.save(tmp_path / "x.npy", raw)
    rc, out, err = run_cli(
        capsys, "infer", "--model", MLP, "--device", srv.url, "--input", tmp_path / "x.npy",
        "--output", tmp_path / "y.npz", "--batch", "2",
    )  # fmt: skip
    assert rc == 0, err
    assert "bit-exact with the golden model: yes" in out
    trace = golden.forward(mlp, mlp.input.quantize(raw), intermediates=True)
    with np.load(tmp_path / "y.npz") as f:
        assert np.array_equal(f["logits"], trace[-2][1].reshape(5, -1))
        assert np.array_equal(f["classes"], trace[-1][1])
    # the same inputs as int8, from a CSV, into a CSV
    np.savetxt(tmp_path / "x.csv", mlp.input.quantize(raw), fmt="%d", delimiter=",")
    rc, out, err = run_cli(
        capsys, "infer", "--model", MLP, "--device", srv.url, "--input", tmp_path / "x.csv", "--int8",
        "--output", tmp_path / "y.csv", "--limit", "3",
    )  # fmt: skip
    assert rc == 0, err
    rows = [list(map(int, ln.split(","))) for ln in (tmp_path / "y.csv").read_text().split()]
    assert [r[0] for r in rows] == list(trace[-1][1][:3])
    assert [r[1:] for r in rows] == trace[-2][1].reshape(5, -1)[:3].tolist()


def test_infer_refuses_bad_input_files_before_the_device(capsys, tmp_path, mlp):
    from sw_driver.infer_cli import load_inputs

    good = np.random.default_rng(0).integers(0, 17, (3, 64))
    cases = {
        "shape.npy": (np.zeros((3, 63)), False, "has shape [3, 63]"),
        "shape3.npy": (np.zeros((3, 8, 9)), False, "has shape"),
        "float.npy": (good + 0.5, False, "non-integer"),
        "nan.npy": (np.full((2, 64), np.nan), False, "NaN"),
        "bool.npy": (np.ones((2, 64), bool), False, "expected numbers"),
        "str.npy": (np.array([["a"] * 64]), False, "expected numbers"),
        "empty.npy": (np.zeros((0, 64)), False, "no samples"),
        "raw_big.npy": (good * 2, False, "leave int8"),  # 32 * 7 = 224 would saturate to 127
        "raw_neg.npy": (-good - 19, False, "leave int8"),
        "int8_big.npy": (good + 120, True, "do not fit int8"),  # would wrap to negative
        "int8_small.npy": (good - 200, True, "do not fit int8"),
    }
    for name, (a, int8, why) in cases.items():
        np.save(tmp_path / name, a)
        with pytest.raises(ValueError, match=re.escape(why)):
            load_inputs(tmp_path / name, mlp, int8=int8)
        argv = ["infer", "--model", MLP, "--device", "socket://127.0.0.1:1", "--input", tmp_path / name]
        rc, _, err = run_cli(capsys, *argv, *(["--int8"] if int8 else []))
        assert_one_line_error(rc, err, name)  # the file is named, the device never opened
        assert "cannot open device" not in err
    (tmp_path / "bad.csv").write_text("1,2,x\n")
    (tmp_path / "blank.csv").write_text("\n# nothing\n")
    (tmp_path / "x.json").write_text("[1]")
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    (tmp_path / "d.npy").mkdir()
    for name, why in [
        ("bad.csv", "not a readable"),
        ("blank.csv", "no samples"),
        ("x.json", "unknown type"),
        ("junk.npy", "not a readable"),
        ("d.npy", "is a directory"),
        ("nope.npy", "does not exist"),
    ]:
        with pytest.raises(ValueError, match=why):
            load_inputs(tmp_path / name, mlp)
    # accepted forms: [N, 64], [N, 8, 8, 1]-like shapes are refused for an MLP, a single sample [64]
    np.save(tmp_path / "one.npy", good[0])
    assert load_inputs(tmp_path / "one.npy", mlp).shape == (1, 64)
    np.save(tmp_path / "ok.npy", good.astype(np.uint8))
    assert np.array_equal(load_inputs(tmp_path / "ok.npy", mlp), mlp.input.quantize(good))
    rc, _, err = run_cli(capsys, "infer", "--model", MLP, "--int8")
    assert_one_line_error(rc, err, "--input")


def test_runner_refuses_inputs_it_would_clip_or_truncate(server, mlp):
    from sw_driver.device import Device
    from sw_driver.npu import NPURunner

    srv = server(FakeNPU(mlp.config))
    with Device(srv.url, timeout=2) as dev:
        runner = NPURunner(dev, batch=2)
        runner.load(mlp)
        x = mlp.input.quantize(np.random.default_rng(1).integers(0, 17, (2, 64)))
        r = runner.infer(x)
        assert np.array_equal(r.classes, golden.forward(mlp, x))
        with pytest.raises(ValueError, match="integers"):
            runner.infer(x + 0.5)  # was: truncated to int silently
        with pytest.raises(ValueError, match="-128..127"):
            runner.infer(x.astype(np.int64) + 100)
        with pytest.raises(ValueError, match="not clipped"):
            runner.infer(np.full((2, 64), 40), raw=True)  # 40 * 7 = 280: was saturated to 127
        with pytest.raises(ValueError, match="not clipped"):
            runner.infer(np.full((2, 64), 200, np.uint8), raw=True)  # 1400 must not pass as uint8 120
        with pytest.raises(ValueError, match="NaN"):
            runner.infer(np.full((2, 64), np.nan), raw=True)
        with pytest.raises(ValueError, match="no inputs"):
            runner.infer(np.zeros((0, 64), np.int8))


def test_device_urls_and_port_permissions_are_explained(capsys, monkeypatch, server):
    import errno

    import serial

    from sw_driver.device import Device
    from sw_driver.transport import DeviceNotFound

    for url in ("socket://127.0.0.1:99999", "socket://127.0.0.1", "socket://:5555"):
        rc, _, err = run_cli(capsys, "device-info", "--device", url)  # was: "'debug|info|warning|error'"
        assert_one_line_error(rc, err, "socket://HOST:PORT")
    srv = server(lambda d: b"")
    with Device(srv.url + "?logging=debug", timeout=0.1, retries=0) as dev:  # pyserial URL options still pass
        assert dev.url.endswith("?logging=debug")
    for code, why in [(errno.EACCES, "dialout"), (errno.EBUSY, "busy")]:

        def refuse(*a, code=code, **k):
            raise serial.SerialException(code, f"could not open port /dev/ttyUSB7: [Errno {code}]")

        monkeypatch.setattr(serial, "serial_for_url", refuse)
        with pytest.raises(DeviceNotFound, match=why):
            Device("/dev/ttyUSB7")


def test_a_failing_simulator_is_an_error_not_a_traceback(capsys, monkeypatch):
    from sim.runner import SimulationError

    def no_verilator(args):
        raise SimulationError("verilator: command not found")

    build_parser()
    help_, add, _ = COMMANDS["demo"]
    monkeypatch.setitem(COMMANDS, "demo", (help_, add, no_verilator))
    monkeypatch.setattr("sw_driver.cli._load_subcommand_modules", lambda: None)
    rc, _, err = run_cli(capsys, "demo")
    assert_one_line_error(rc, err, "SimulationError", "verilator: command not found")
    assert "internal error" not in err


def test_estimate_and_build_refuse_a_non_square_npu(capsys, tmp_path, monkeypatch):
    import hw.build

    monkeypatch.setattr(hw.build, "build", lambda *a, **k: pytest.fail("build() ran"))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "top.bin").write_bytes(b"the last good bitstream")
    rc, _, err = run_cli(capsys, "estimate", "--board", "icebreaker", "--rows", "3", "--cols", "5")
    assert_one_line_error(rc, err, "square array", "3x5")  # was: "fits"
    rc, _, err = run_cli(
        capsys, "build", "--board", "icebreaker", "--rows", "4", "--cols", "2", "--build-dir", tmp_path / "b"
    )
    assert_one_line_error(rc, err, "square array")
    assert (tmp_path / "b" / "top.bin").read_bytes() == b"the last good bitstream"
    rc, out, _ = run_cli(capsys, "estimate", "--board", "icebreaker", "--rows", "3", "--cols", "5", "--design", "array")
    assert rc == 0 and "fits" in out


def test_other_files_where_a_model_is_expected(capsys, tmp_path):
    np.savez(tmp_path / "lm.npz", a=np.zeros(3))
    np.save(tmp_path / "x.npy", np.zeros(3))
    for name, why in [("lm.npz", ".npz archive"), ("x.npy", ".npy array")]:
        rc, _, err = run_cli(capsys, "eval", tmp_path / name)
        assert_one_line_error(rc, err, "not a shiftnpu model file", why)


def test_infer_on_a_non_digits_model_asks_for_input(capsys, tmp_path):
    from tests.model_factory import random_lstm

    random_lstm(3, NPUModel.load(MLP).config, inputs=12, hidden=8, steps=4).save(tmp_path / "seq.npu")
    rc, _, err = run_cli(capsys, "infer", "--model", tmp_path / "seq.npu", "--device", "socket://127.0.0.1:1")
    assert_one_line_error(rc, err, "--input", "[4, 12]")  # was: "cannot reshape raw input of shape (360, 64)"


def test_eval_and_the_input_map_refuse_a_wrong_input_shape(capsys, tmp_path):
    from tests.model_factory import random_lstm

    model = random_lstm(3, NPUModel.load(MLP).config, inputs=12, hidden=8, steps=4)
    model.save(tmp_path / "seq.npu")
    rc, _, err = run_cli(capsys, "eval", tmp_path / "seq.npu")
    assert_one_line_error(rc, err, "[4, 12]", "digits")  # was: "operands could not be broadcast (480,) (360,)"
    with pytest.raises(ValueError, match="cannot reshape"):
        model.input.quantize(np.zeros((360, 64)))  # was: silently cut into 480 samples of [4, 12]
    assert model.input.quantize(np.zeros((2, 48))).shape == (2, 4, 12)
    assert model.input.quantize(np.zeros((2, 4, 12))).shape == (2, 4, 12)
    # one sample may leave out the batch dimension, as a [*shape] or a flat [size]
    assert model.input.quantize(np.full((4, 12), 3)).shape == (1, 4, 12)
    assert np.array_equal(model.input.quantize(np.arange(48) % 17)[0], model.input.quantize([np.arange(48) % 17])[0])
    with pytest.raises(ValueError, match=r"\[B, 48\] or \[B, 4, 12\]"):
        model.input.quantize(np.zeros((4, 11)))


def test_config_values_beyond_32_bits_are_refused(capsys):
    rc, _, err = run_cli(capsys, "estimate", "--board", "ulx3s-85f", "--max-k", "99999999999")
    assert_one_line_error(rc, err, "max_k", "32 bits")  # was: "error: error: 'I' format requires ..."


def test_infer_a_model_without_argmax(capsys, server, tmp_path, mlp):
    logits_only = NPUModel(mlp.config, mlp.input, mlp.layers[:-1], mlp.metadata)
    logits_only.save(tmp_path / "m.npu")
    raw = np.arange(128).reshape(2, 64) % 17
    np.save(tmp_path / "x.npy", raw)
    srv = server(FakeNPU(mlp.config))
    rc, out, err = run_cli(
        capsys, "infer", "--model", tmp_path / "m.npu", "--device", srv.url, "--input", tmp_path / "x.npy",
        "--output", tmp_path / "y.csv",
    )  # fmt: skip
    assert rc == 0 and "bit-exact with the golden model: yes" in out, out + err  # was: "NO", exit 1
    want = golden.forward(logits_only, mlp.input.quantize(raw)).reshape(2, -1)
    assert [list(map(int, ln.split(","))) for ln in (tmp_path / "y.csv").read_text().split()] == want.tolist()


def test_write_atomically_permissions_and_links(tmp_path):
    """A new file gets 0o666 less the umask, a replaced one keeps its mode, a link is written through."""
    from quant.cliargs import write_atomically

    mask = os.umask(0o027)
    try:
        write_atomically(tmp_path / "new.txt", "a")
    finally:
        os.umask(mask)
    assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o640
    old = tmp_path / "old.txt"
    old.write_text("old")
    old.chmod(0o600)
    write_atomically(old, b"new")
    assert old.read_text() == "new" and old.stat().st_mode & 0o777 == 0o600
    link = tmp_path / "link.txt"
    link.symlink_to(old)
    write_atomically(link, "via link")
    assert link.is_symlink() and old.read_text() == "via link"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.txt", "new.txt", "old.txt"]


def test_sim_serve_port_check_matches_the_server():
    """A port another program listens on is refused; one whose connections linger in TIME_WAIT after
    a stopped sim-serve is not (the server binds with SO_REUSEADDR)."""
    import socket

    from sim.serve import _check_port_free

    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    with pytest.raises(ValueError, match=f"--port {port}: cannot listen there"):
        _check_port_free(port)
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = srv.accept()
    conn.close()  # the server side closes first: its end of the connection stays in TIME_WAIT
    srv.close()
    client.close()
    _check_port_free(port)


def test_reply_timeout_defaults_agree_across_commands():
    """infer and device-info wait as long for the same device: 30 s on sim-serve's socket (its --uart mode
    is slow), 5 s on a serial port; --timeout replaces both."""
    from sw_driver.cli import build_parser
    from sw_driver.transport import default_reply_timeout

    assert [default_reply_timeout(u) for u in ("sim", "socket://127.0.0.1:5555", "/dev/ttyUSB1")] == [30.0, 30.0, 5.0]
    p = build_parser()
    assert p.parse_args(["device-info", "--device", "x"]).timeout is None
    assert p.parse_args(["infer", "--model", "m.npu"]).timeout is None
    assert p.parse_args(["device-info", "--device", "x", "--timeout", "0.5"]).timeout == 0.5
