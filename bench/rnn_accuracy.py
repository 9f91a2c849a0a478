"""Integer-only RNN accuracy: FP32 vs int8 vs DenseShift 4/3-bit; PWL pieces; layer norm; GRU; model size.

Two tasks (:mod:`quant.train.seq_digits`, :mod:`quant.train.charlm`), each at its default recipe.
Every quantized figure is that of the integer network (exact phase: what the golden model runs).
Runs are appended to ``bench/results/rnn_accuracy.jsonl`` as they finish, and a run already there is
not repeated, so the sweep can be stopped and resumed; ``bench/results/rnn_accuracy.md`` is written
from the JSONL after every run.

    PYTHONPATH=. nice -n 10 python bench/rnn_accuracy.py             # the full sweep (hours on a shared 2-core box)
    PYTHONPATH=. nice -n 10 python bench/rnn_accuracy.py --reduced   # the sweep committed in results/

``--reduced``: the acceptance variants of seq-digits (FP32, int8, DenseShift 4-bit) with 3 seeds, the
PWL / layer-norm / GRU / 3-bit variants and the char-LM with seed 0 only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RESULTS = Path(__file__).parent / "results"
SEEDS = (0, 1, 2)

#: (label, config overrides) for seq-digits; the first four are the weight-kind comparison
SEQ_VARIANTS = [
    ("FP32", {"kind": "fp32", "bits": 32}),
    ("int8", {"kind": "int8", "bits": 8}),
    ("DenseShift 4-bit", {"kind": "denseshift", "bits": 4}),
    ("DenseShift 3-bit", {"kind": "denseshift", "bits": 3}),
    ("DenseShift 4-bit, PWL N=8", {"kind": "denseshift", "bits": 4, "pwl_pieces": 8}),
    ("DenseShift 4-bit, PWL N=8 adaptive", {"kind": "denseshift", "bits": 4, "pwl_pieces": 8, "adaptive_pwl": True}),
    ("DenseShift 4-bit, PWL N=32", {"kind": "denseshift", "bits": 4, "pwl_pieces": 32}),
    ("DenseShift 4-bit, PWL N=16 adaptive", {"kind": "denseshift", "bits": 4, "adaptive_pwl": True}),
    ("DenseShift 4-bit, layer norm", {"kind": "denseshift", "bits": 4, "layer_norm": True}),
    ("int8, layer norm", {"kind": "int8", "bits": 8, "layer_norm": True}),
    ("GRU FP32", {"kind": "fp32", "bits": 32, "cell": "gru"}),
    ("GRU DenseShift 4-bit", {"kind": "denseshift", "bits": 4, "cell": "gru"}),
]
CHAR_VARIANTS = [
    ("FP32", {"kind": "fp32", "bits": 32}),
    ("int8", {"kind": "int8", "bits": 8}),
    ("DenseShift 4-bit", {"kind": "denseshift", "bits": 4}),
    ("DenseShift 3-bit", {"kind": "denseshift", "bits": 3}),
]


def _plan(reduced: bool) -> list[tuple[str, str, dict, int]]:
    """The runs, most important first: (task, label, overrides, seed)."""
    main3 = SEQ_VARIANTS[:3]
    if not reduced:
        return [("seq-digits", lab, o, s) for lab, o in SEQ_VARIANTS for s in SEEDS] + [
            ("charlm", lab, o, s) for lab, o in CHAR_VARIANTS for s in SEEDS
        ]
    runs = [("seq-digits", "FP32", main3[0][1], s) for s in SEEDS]
    runs += [("charlm", lab, o, 0) for lab, o in (CHAR_VARIANTS[0], CHAR_VARIANTS[2])]
    runs += [("seq-digits", lab, o, s) for lab, o in main3[1:] for s in SEEDS]
    runs += [("charlm", "int8", CHAR_VARIANTS[1][1], 0)]
    runs += [("seq-digits", lab, o, 0) for lab, o in SEQ_VARIANTS[3:]]
    runs += [("charlm", lab, o, 0) for lab, o in CHAR_VARIANTS[3:]]
    runs += [("seq-digits", "DenseShift 3-bit", SEQ_VARIANTS[3][1], s) for s in SEEDS[1:]]
    return runs


def _key(task: str, label: str, seed: int) -> str:
    return f"{task}|{label}|{seed}"


def _run_seq(o: dict, seed: int) -> dict:
    from quant.digits import load_split
    from quant.train.seq_digits import SeqTrainConfig, export_seq_model, train_seq

    r = train_seq(SeqTrainConfig(seed=seed, **o), load_split(), progress=False)
    out = {"accuracy": 100 * r.test_accuracy, "seconds": r.seconds}
    out |= _seq_sizes(r.net, export_seq_model if o["kind"] != "fp32" else None)
    return out


def _seq_sizes(net, exporter) -> dict:
    """FP32 bytes (4 per parameter, BatchNorm folded into a bias) or the integer model's packed bytes."""
    lstm = net.lstm
    H, n_in, G = lstm.hidden, lstm.inputs, lstm.rows
    n_w = G * H * (n_in + H) + H * 10
    if exporter is None:
        n_other = 4 * H * (3 if lstm.layer_norm else 1) + 10
        return {"weight_bytes": 4 * n_w, "param_bytes": 4 * (n_w + n_other)}
    model = exporter(net)
    bits = model.config.weight_bits
    wbytes = -(-n_w * bits // 8)
    other = 0
    for la in model.layers:
        for name, a in la.arrays().items():
            if name not in ("W", "U", "codes"):
                other += a.nbytes
    return {"weight_bytes": wbytes, "param_bytes": wbytes + other, "file_bytes": len(model.to_bytes())}


def _run_char(o: dict, seed: int) -> dict:
    from quant.train.charlm import CharTrainConfig, load_charlm, train_charlm

    data = load_charlm()
    r = train_charlm(CharTrainConfig(seed=seed, **o), data, progress=False)
    sizes = r.net.parameter_bytes()
    return {
        "valid_bpc": r.valid_bpc,
        "test_bpc": r.test_bpc,
        "seconds": r.seconds,
        "cpu_seconds": r.cpu_seconds,
        "weight_bytes": sizes["weights"],
        "param_bytes": sizes["total"],
        "text_sha256": data.sha256,
    }


def _load(path: Path) -> dict[str, dict]:
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {_key(r["task"], r["label"], r["seed"]): r for r in rows}


def _fmt(vals: list[float], digits: int = 2) -> str:
    if not vals:
        return "—"
    m = statistics.mean(vals)
    per = ", ".join(f"{v:.{digits}f}" for v in vals)
    if len(vals) == 1:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ± {statistics.stdev(vals):.{digits}f} ({per})"


def write_markdown(rows: dict[str, dict], out: Path, note: str) -> None:
    by: dict[tuple[str, str], list[dict]] = {}
    for r in rows.values():
        by.setdefault((r["task"], r["label"]), []).append(r)
    for v in by.values():
        v.sort(key=lambda r: r["seed"])
    lines = [
        "# Integer-only RNNs: accuracy and model size",
        "",
        f"Generated by `bench/rnn_accuracy.py` ({note}); last update {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC.",
        "Quantized figures are those of the integer network (the one the golden model runs). Mean ± sample",
        "standard deviation over the seeds listed in brackets (seed order 0, 1, 2). Timing: wall seconds on a",
        "2-core machine shared with 3 other jobs (about a third of a core each), so only the ratios mean much.",
        "",
        "## Sequential digits (LSTM H = 32 + dense, 360 test images)",
        "",
        "| variant | seeds | test accuracy % | params bytes (packed) | weights bytes | x smaller (params / weights) | train s |",
        "|---|---|---|---|---|---|---|",
    ]
    fp = by.get(("seq-digits", "FP32"), [{}])[0]
    for lab, _ in SEQ_VARIANTS:
        rs = by.get(("seq-digits", lab))
        if not rs:
            continue
        ref = by.get(("seq-digits", "GRU FP32" if lab.startswith("GRU") else "FP32"), [fp])[0]
        pb, wb = rs[0]["param_bytes"], rs[0]["weight_bytes"]
        ratio = f"{ref.get('param_bytes', 0) / pb:.2f} / {ref.get('weight_bytes', 0) / wb:.2f}" if ref else "—"
        lines.append(
            f"| {lab} | {len(rs)} | {_fmt([r['accuracy'] for r in rs])} | {pb} | {wb} | {ratio} | "
            f"{statistics.mean(r['seconds'] for r in rs):.0f} |"
        )
    lines += [
        "",
        "## Character LM on `pydoc_data.topics` (embedding 32, LSTM H = 128, dense 97; bits per character)",
        "",
        "| variant | seeds | valid bpc | test bpc | test bpc / FP32 | params bytes | weights bytes | x smaller (params / weights) | train s (wall / CPU) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    cfp = by.get(("charlm", "FP32"))
    for lab, _ in CHAR_VARIANTS:
        rs = by.get(("charlm", lab))
        if not rs:
            continue
        tb = [r["test_bpc"] for r in rs]
        rel = f"{statistics.mean(tb) / statistics.mean(r['test_bpc'] for r in cfp):.3f}" if cfp else "—"
        pb, wb = rs[0]["param_bytes"], rs[0]["weight_bytes"]
        ratio = f"{cfp[0]['param_bytes'] / pb:.2f} / {cfp[0]['weight_bytes'] / wb:.2f}" if cfp else "—"
        lines.append(
            f"| {lab} | {len(rs)} | {_fmt([r['valid_bpc'] for r in rs], 3)} | {_fmt(tb, 3)} | {rel} | {pb} | {wb} | "
            f"{ratio} | {statistics.mean(r['seconds'] for r in rs):.0f} / {statistics.mean(r['cpu_seconds'] for r in rs):.0f} |"
        )
    if cfp:
        lines += ["", f"Text SHA-256 (CPython's `pydoc_data.topics`): `{cfp[0]['text_sha256']}`."]
    lines += ["", "## Acceptance (issue 6)", ""]
    mean = {k: statistics.mean(r["accuracy"] for r in v) for k, v in by.items() if k[0] == "seq-digits"}
    f = mean.get(("seq-digits", "FP32"))
    for lab, lim in (("int8", 1.0), ("DenseShift 4-bit", 1.5)):
        m = mean.get(("seq-digits", lab))
        if f is not None and m is not None:
            n = len(by[("seq-digits", lab)])
            ok = "meets" if f - m <= lim else "MISSES"
            lines.append(f"- seq-digits {lab}: FP32 - {lab} = {f - m:+.2f} points over {n} seed(s) (limit {lim}): {ok}")
    if cfp:
        for lab in ("int8", "DenseShift 4-bit", "DenseShift 3-bit"):
            rs = by.get(("charlm", lab))
            if rs:
                q = statistics.mean(r["test_bpc"] for r in rs) / statistics.mean(r["test_bpc"] for r in cfp)
                lines.append(
                    f"- char-LM {lab}: test bpc = {q:.3f} x FP32 (limit 1.05): {'meets' if q <= 1.05 else 'MISSES'}"
                )
    for task in ("seq-digits", "charlm"):
        ref = by.get((task, "FP32"))
        for lab, lim in (("int8", 4.0), ("DenseShift 4-bit", 7.0)):
            rs = by.get((task, lab))
            if ref and rs:
                rp = ref[0]["param_bytes"] / rs[0]["param_bytes"]
                rw = ref[0]["weight_bytes"] / rs[0]["weight_bytes"]
                verdict = "meets" if rp >= lim else ("meets on weights only" if rw >= lim else "MISSES")
                lines.append(
                    f"- {task} {lab} size: {rp:.2f}x smaller (all parameters), {rw:.2f}x (weights) "
                    f"(limit {lim:.0f}x): {verdict}"
                )
    lines += [
        "",
        "Sizes: FP32 counts 4 bytes per parameter (weights, biases, layer-norm gains; BatchNorm folded).",
        "Integer: weight codes packed at b bits, plus int32 biases, uint16 M and uint8 n per requantized row,",
        "int16 layer-norm gamma/beta and PWL tables (int16 knots, y, m) -- what the device stores; the model",
        "file itself keeps one code per byte. 'weights bytes' counts the weight matrices only.",
    ]
    out.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reduced", action="store_true", help="the reduced sweep (see the module docstring)")
    ap.add_argument("--only", choices=("seq-digits", "charlm"), help="one task only")
    ap.add_argument("--jsonl", default=str(RESULTS / "rnn_accuracy.jsonl"))
    ap.add_argument("-o", "--output", default=str(RESULTS / "rnn_accuracy.md"))
    args = ap.parse_args(argv)
    jl, out = Path(args.jsonl), Path(args.output)
    note = "reduced sweep: see the seeds column" if args.reduced else "full sweep"
    done = _load(jl)
    for task, label, o, seed in _plan(args.reduced):
        if args.only and task != args.only:
            continue
        if _key(task, label, seed) in done:
            continue
        t0 = time.time()
        res = _run_seq(o, seed) if task == "seq-digits" else _run_char(o, seed)
        row = {"task": task, "label": label, "seed": seed, "config": o, "load1": os.getloadavg()[0]} | res
        with jl.open("a") as f:
            f.write(json.dumps(row) + "\n")
        done[_key(task, label, seed)] = row
        metric = f"{res['accuracy']:.2f}%" if task == "seq-digits" else f"test bpc {res['test_bpc']:.3f}"
        print(f"{task} | {label} | seed {seed}: {metric} ({time.time() - t0:.0f} s)", flush=True)
        write_markdown(done, out, note)
    write_markdown(done, out, note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
