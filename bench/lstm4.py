"""The 1-layer LSTM (hidden 32, 3-bit DenseShift weights) on a 4x4 iCEBreaker NPU (issue #5's last item).

The iCEBreaker's default config with a 4x4 array and the memories a hidden-32 LSTM needs (``chan_depth``
256 for its 4H + 10 channels and the cells, ``weight_depth`` 2048 for its (XT + HT) * 4 x 4H gate weights
plus the head): the shipped seq-digits model (examples/seq_digits_lstm_3bit.npu, LSTM 8 -> 32 over 8
steps, dense 32 -> 10, argmax) re-embedded with that config (its integer network does not depend on
the array; the file keeps its 8x8 config), compiled at the largest batch, run on the word-level device
model against the golden model over the test set, with quant.lstm_perf's cycles. ``--build lstm``
also builds the whole NPU (``hw.build.build``, 10-12 minutes a build), ``--build plain`` the same
config without the LSTM path (``NPU(rnn=False)``). Writes ``bench/results/lstm4.md`` (and
``lstm4.json``, which keeps the builds, so a rerun without ``--build`` still reports them).

    PYTHONPATH=. python bench/lstm4.py [--build lstm,plain] [--freq 40]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from quant import golden  # noqa: E402
from quant.config import NPUConfig  # noqa: E402
from quant.device_model import DeviceModel  # noqa: E402
from quant.lstm_perf import program_cycles  # noqa: E402
from quant.model import NPUModel  # noqa: E402
from quant.npu_compile import compile_model, largest_batch  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = Path(__file__).resolve().parent.parent / "examples" / "seq_digits_lstm_3bit.npu"


def config() -> NPUConfig:
    """The iCEBreaker default with a 4x4 array and room for a hidden-32 LSTM."""
    from hw.boards import get_board

    return get_board("icebreaker").default_config(rows=4, cols=4, chan_depth=256, weight_depth=2048)


def run_device_model(model: NPUModel, cfg: NPUConfig, batch: int, x: np.ndarray) -> np.ndarray:
    """Classes of ``x`` from the device model, ``batch`` sequences a run (the last run padded)."""
    compiled = compile_model(model, batch, cfg)
    out = []
    for i in range(0, len(x), batch):
        xb = x[i : i + batch]
        pad = np.concatenate([xb, np.zeros((batch - len(xb), *xb.shape[1:]), xb.dtype)])
        dm = DeviceModel(cfg)
        feature = [0] * compiled.feature_words
        for base, words in compiled.feature_init + compiled.input_images(pad):
            feature[base : base + len(words)] = words
        dm.feature[: len(feature)] = feature
        dm.weight[: len(compiled.weight)] = compiled.weight
        dm.channel[: len(compiled.channel)] = compiled.channel
        dm.program[: len(compiled.program)] = compiled.program
        dm.run()
        reads = [dm.feature[b : b + n] for b, n in compiled.read_plan()]
        out.append(compiled.decode_outputs(reads)[1][: len(xb)])
    return np.concatenate(out)


def _build(cfg: NPUConfig, freq: float, rnn: bool, build_root: str) -> dict:
    from hw.build import TimingError, build
    from hw.npu import NPU

    name = "lstm" if rnn else "plain"

    def design(c: NPUConfig):  # the build's default design (hw.build.npu_design), with rnn chosen
        return NPU(c, uart=True, rnn=rnn)

    design.design_name = "npu"
    try:
        rep = build(cfg, "icebreaker", freq, f"{build_root}/lstm4-{name}", design=design, progress=True)
        met = True
    except TimingError as e:
        rep, met = e.report, False
    print(rep.text())
    return {"rnn": rnn, "freq": freq, "met": met, "fmax": rep.fmax, "used": {k: v[0] for k, v in rep.resources.items()}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--build",
        default="",
        help="comma-separated: lstm (the whole NPU with the LSTM path), plain (without it); 10-12 min each",
    )
    ap.add_argument("--freq", type=float, default=40.0, help="requested clock in MHz (default 40)")
    ap.add_argument("--build-root", default="build", help="builds go to <root>/lstm4-lstm, -plain (default build)")
    ap.add_argument("-n", type=int, default=200, help="test sequences on the device model (default 200)")
    args = ap.parse_args(argv)
    from quant.digits import load_split

    cfg = config()
    model8 = NPUModel.load(MODEL)
    model = dataclasses.replace(model8, config=cfg)
    batch = largest_batch(model, cfg)
    compiled = compile_model(model, batch, cfg)
    cycles = program_cycles(compiled)
    cyc8 = program_cycles(compile_model(model8, batch, model8.config))
    split = load_split()
    x = model.input.quantize(split.x_test[: args.n])
    got = run_device_model(model, cfg, batch, x)
    want = golden.forward(model8, x)
    assert np.array_equal(got, want), "device model != golden model"
    acc = float(np.mean(got == split.y_test[: args.n]))
    cache = RESULTS / "lstm4.json"
    builds = json.loads(cache.read_text()) if cache.exists() else {}
    for which in filter(None, args.build.split(",")):
        if which not in ("lstm", "plain"):
            raise SystemExit(f"--build: unknown build {which!r} (lstm or plain)")
        builds[which] = _build(cfg, args.freq, which == "lstm", args.build_root)
        cache.write_text(json.dumps(builds, indent=1) + "\n")
    lines = [
        "# LSTM hidden 32 on a 4x4 iCEBreaker NPU",
        "",
        "Written by `PYTHONPATH=. python bench/lstm4.py` (builds: `--build lstm,plain`; nextpnr seed 1).",
        "",
        f"Config: `{json.dumps({k: v for k, v in cfg.to_dict().items() if v != getattr(NPUConfig(), k)})}` "
        "over NPUConfig's defaults (the iCEBreaker default with rows/cols 4, chan_depth 256, weight_depth 2048).",
        "",
        f"Model: {MODEL.name} re-embedded with this config (same integer network): batch {batch} "
        f"(feature memory {compiled.feature_words} of {cfg.act_depth} words), weights {len(compiled.weight)} of "
        f"{cfg.weight_depth}, channels {len(compiled.channel)} of {cfg.chan_depth}, program {len(compiled.program)} words.",
        f"Device model == golden model on the first {args.n} test sequences; accuracy {100 * acc:.1f} %.",
        f"Cycles per run of {batch} (quant.lstm_perf.program_cycles): **{cycles}**, "
        f"{cycles / batch:.0f} per sequence; the 8x8 default config at the same batch: {cyc8}.",
        "",
    ]
    if builds:
        lines += [
            "| NPU (whole, UART) | logic (LC) | EBR | SPRAM | DSP | Fmax (MHz) | requested |",
            "|---|---|---|---|---|---|---|",
        ]
        for key, title in (("lstm", "4x4 with the LSTM path"), ("plain", "4x4 without it (`rnn=False`)")):
            b = builds.get(key)
            if b:
                u = b["used"]
                lines.append(
                    f"| {title} | {u.get('logic')} | {u.get('bram')} | {u.get('spram')} | {u.get('dsp')} | "
                    f"{b['fmax']:.1f} | {b['freq']:g} ({'met' if b['met'] else 'NOT met'}) |"
                )
        lines.append("")
    out = RESULTS / "lstm4.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
