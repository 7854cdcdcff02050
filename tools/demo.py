#!/usr/bin/env python
"""The main job, end to end on an embedded default: make a small mixed-quality face-like dataset,
train QGFace on it with arcface_torch's parts (GPU if present, else CPU), verify on held-out
identities (HQ–HQ and LQ–HQ pairs), then run the whole evaluation suite (tools/eval_suite.py) on
synthetic versions of every benchmark in its upstream layout (IJB-C, TinyFace, SCface, the .bin sets),
and print the summary.

    python tools/demo.py --output work_dirs/demo            # ~5 minutes on a 2-core CPU
    python tools/demo.py --output work_dirs/demo --loss arcface   # the single-view baseline, same data
    python tools/demo.py --output work_dirs/demo --skip-eval      # training and .bin verification only

Everything lands in --output: data/ (train.rec/.idx, .bin sets, preview.png), train/ (model.pt,
checkpoints, tensorboard/, summary.json), benchmarks/ (synthetic IJBC/, tinyface/, scface/ of identities
not in training; qgface_plugin.synthetic.benchmarks.make_benchmarks), eval/ (the suite's summary.md/.json and
each evaluator's report) and demo_summary.json. data/ and benchmarks/ are reused when they were made
with the same settings. arcface_torch comes from --arcface-root, $ARCFACE_TORCH_ROOT or
third_party/arcface_torch (tools/fetch_arcface_torch.py).
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import time
from pathlib import Path

from qgface_plugin import cli
from qgface_plugin.arcface.checkout import find_root
from qgface_plugin.arcface.config import load_config
from qgface_plugin.errors import QGFaceConfigError, QGFaceInputError


def _make_data(out: Path, args) -> dict:
    from qgface_plugin.synthetic import make_dataset
    summary_path = out / "dataset.json"
    if summary_path.is_file():
        info = json.loads(summary_path.read_text())
        if (info.get("num_classes"), info.get("images_per_identity"), info.get("seed")) == \
                (args.identities, args.images_per_identity, args.seed):
            print(f"[demo] reusing the dataset in {out}", flush=True)
            return info
    print(f"[demo] writing {args.identities} identities x {args.images_per_identity} images "
          f"(30% low quality) to {out}", flush=True)
    info = make_dataset(out, num_identities=args.identities, images_per_identity=args.images_per_identity,
                        num_val_identities=args.val_identities, val_pairs=args.val_pairs, seed=args.seed)
    import cv2
    from qgface_plugin.synthetic import contact_sheet
    cv2.imwrite(str(out / "preview.png"), contact_sheet(out, rows=8, cols=12)[..., ::-1])
    return info


def _make_benchmarks(out: Path, args) -> dict:
    from qgface_plugin.synthetic.benchmarks import SUMMARY_FILE, make_benchmarks
    summary_path = out / SUMMARY_FILE
    if summary_path.is_file():
        info = json.loads(summary_path.read_text())
        if (info.get("generator"), info.get("format_version"), info.get("seed"), info.get("size")) == \
                ("qgface_plugin.synthetic.benchmarks", 1, args.seed, args.benchmarks_size):
            print(f"[demo] reusing the benchmarks in {out}", flush=True)
            return {**info, "seconds": 0.0}
        shutil.rmtree(out)  # made by an earlier demo with other settings: start afresh
    print(f"[demo] writing synthetic benchmarks ({args.benchmarks_size}: IJB, TinyFace, SCface) to {out}", flush=True)
    return make_benchmarks(out, seed=args.seed, size=args.benchmarks_size)


def _load_eval_suite():
    path = Path(__file__).resolve().parent / "eval_suite.py"
    spec = importlib.util.spec_from_file_location("_qgface_demo_eval_suite", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_eval(out: Path, args, cfg, train_summary, root) -> dict:
    """Make the benchmarks, run the whole suite on the trained model; the figures the summary shows."""
    import torch
    bench = _make_benchmarks(out / "benchmarks", args)
    argv = ["--network", cfg.network, "--model", train_summary["model"], "--data", str(out / "benchmarks"),
            "--bins", str(out / "data"), "--output", str(out / "eval"), "--arcface-root", str(root),
            "--lowres", *map(str, args.eval_lowres),
            "--device", "cuda" if torch.cuda.is_available() else "cpu"]
    targets = [t for t in (getattr(cfg, "val_targets", None) or []) if (out / "data" / f"{t}.bin").is_file()]
    if targets:  # the training-end .bin sets (synthetic_val is their union: evaluating it too adds nothing)
        argv += ["--targets", *targets]
    print(f"[demo] evaluation suite: tools/eval_suite.py {' '.join(argv)}", flush=True)
    t0 = time.time()
    rc = _load_eval_suite().main(argv)
    seconds = time.time() - t0
    summary_path = out / "eval" / "summary.json"
    if not summary_path.is_file():
        return {"rc": rc, "seconds": round(seconds, 1), "generate_seconds": bench["seconds"], "error": "no summary"}
    suite = json.loads(summary_path.read_text())
    res = {"rc": rc, "seconds": round(seconds, 1), "generate_seconds": bench["seconds"],
           "benchmarks": bench["counts"], "summary": str(out / "eval" / "summary.md"),
           "status": {k: b["status"] for k, b in suite["benchmarks"].items()},
           "benchmark_seconds": {k: b.get("seconds") for k, b in suite["benchmarks"].items()},
           "headline": {k: b["headline"] for k, b in suite["benchmarks"].items() if "headline" in b},
           "quality_view": suite["quality_view"]}
    return res


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.2f}%"


def _eval_lines(ev: dict) -> list:
    """The evaluation part of the printed summary."""
    if "status" not in ev:
        return [f"  evaluation  failed ({ev.get('error')}, exit status {ev['rc']})"]
    status, head, counts = ev["status"], ev["headline"], ev["benchmarks"]
    ran = [k for k, v in status.items() if v != "skipped"]
    ok = [k for k in ran if status[k] == "ok"]
    lines = [f"  evaluation  {len(ok)}/{len(ran)} benchmarks ok in {ev['seconds']:.1f} s "
             f"(+ {ev['generate_seconds']:.1f} s making them); report {ev['summary']}"]
    failed = [k for k in ran if status[k] != "ok"]
    if failed:
        lines.append(f"    FAILED        {', '.join(failed)} (see the report)")
    for t, title in (("ijbc", "IJB-C"), ("ijbb", "IJB-B")):
        if t in head:
            n, h = counts[t], head[t]
            # the two smallest FARs from 1e-4 that the set resolves (at least 1 / impostor pairs)
            fars = [k for k in ("TAR@FAR=1e-4", "TAR@FAR=1e-3", "TAR@FAR=1e-2", "TAR@FAR=1e-1")
                    if k in h["resolved"]][:2]
            note = "" if "TAR@FAR=1e-4" in fars else "; too few to resolve FAR 1e-4"
            lines.append(f"    {title:13s} " + ", ".join(f"{k} {_pct(h.get(k))}" for k in fars)
                         + f"  ({n['templates']} templates; {n['genuine']} genuine, {n['impostor']} impostor pairs{note})")
    if "tinyface" in head:
        n = counts["tinyface"]
        lines.append(f"    {'TinyFace':13s} rank-1 {_pct(head['tinyface'].get('rank1'))}, rank-5 "
                     f"{_pct(head['tinyface'].get('rank5'))}  ({n['probes']} tiny probes of {n['identities']} "
                     f"identities; gallery {n['gallery_match']} + {n['distractors']} distractors)")
    for prot in ("all", "test80"):
        h = head.get(f"scface_{prot}")
        if h:
            lines.append(f"    {'SCface ' + prot:13s} rank-1 d1 (4.2 m) {_pct(h['d1'])}, d2 (2.6 m) {_pct(h['d2'])}, "
                         f"d3 (1.0 m) {_pct(h['d3'])}, overall {_pct(h['overall'])}")
    if "verification" in head:
        parts = []
        for t, rows in head["verification"].items():
            extra = ", ".join(f"{v[2:]} px {_pct(r['accuracy'])}" for v, r in rows.items() if v != "original")
            parts.append(f"{t} {_pct(rows['original']['accuracy'])}" + (f" ({extra})" if extra else ""))
        lines.append(f"    {'.bin':13s} " + "; ".join(parts))
    q = []
    for r in ev["quality_view"]:
        if r["benchmark"] == "scface_test80":
            continue
        if r["benchmark"] == "verification" and r["variant"] != "original":
            continue
        fig = r["figure"].replace("rank1", "rank-1")
        q.append(f"{r['label']} {fig} {_pct(r['lowest'])} / {_pct(r['highest'])}")
    if q:
        lines.append("    quality       lowest / highest feature-norm third: " + q[0])
        lines += [f"                  {x}" for x in q[1:]]
    lines.append("    timings       " + ", ".join(f"{k} {s:.1f} s" for k, s in ev["benchmark_seconds"].items()
                                              if s is not None))
    return lines


def build_parser():
    parser = cli.parser(__doc__)
    parser.add_argument("--output", default="work_dirs/demo", help="folder for data, model, logs")
    parser.add_argument("--config", default="qgface_demo_cpu", help="training config (name or path)")
    parser.add_argument("--loss", choices=("qgface", "arcface", "cosface"),
                        help="override config.loss (default: the config's)")
    parser.add_argument("--identities", type=int, default=60, help="training identities of the synthetic dataset")
    parser.add_argument("--images-per-identity", type=int, default=16, help="images of each training identity")
    parser.add_argument("--val-identities", type=int, default=40,
                        help="held-out identities of the .bin verification sets")
    parser.add_argument("--val-pairs", type=int, default=400, help="pairs of each .bin verification set")
    parser.add_argument("--epochs", type=int, help="override config.num_epoch (default: the config's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic dataset and benchmarks")
    parser.add_argument("--arcface-root", help="arcface_torch folder (default: $ARCFACE_TORCH_ROOT or third_party/)")
    parser.add_argument("--skip-eval", action="store_true",
                        help="stop after training (no synthetic benchmarks, no evaluation suite)")
    parser.add_argument("--benchmarks-size", choices=("small", "medium"), default="small",
                        help="size of the synthetic benchmarks (small: the suite takes ~2 min on 2 CPU cores)")
    parser.add_argument("--eval-lowres", nargs="*", type=int, default=[12],
                        help="low-resolution variants (px) of the .bin sets in the suite (default: 12; each one "
                             "re-embeds the first image of every pair: ~20 s on 2 CPU cores; none: --eval-lowres)")
    return parser


def main(argv=None) -> int:
    """Exit 0 when the demo ran (and every benchmark of the suite succeeded), 1 when the suite failed,
    2 for bad input (flags, config, data, no arcface_torch)."""
    args = build_parser().parse_args(argv)

    t0 = time.time()
    out = Path(args.output)
    try:
        root = find_root(args.arcface_root)
    except QGFaceConfigError as exc:
        return cli.error(exc)
    import torch
    device = "GPU (" + torch.cuda.get_device_name(0) + ")" if torch.cuda.is_available() else \
        f"CPU ({torch.get_num_threads()} threads)"
    print(f"[demo] arcface_torch: {root}\n[demo] device: {device}", flush=True)
    data = _make_data(out / "data", args)
    overrides = {"rec": str(out / "data"), "num_classes": data["num_classes"], "num_image": data["num_images"],
                 "output": str(out / "train")}
    if args.loss:
        overrides["loss"] = args.loss
    if args.epochs:
        overrides["num_epoch"] = args.epochs
    try:
        cfg = load_config(args.config, overrides)
        print(f"[demo] training {cfg.loss} ({cfg.network}, batch {cfg.batch_size}, {cfg.num_epoch} epochs)", flush=True)
        from qgface_plugin.arcface.training import train
        summary = train(cfg, str(root))
    except (QGFaceConfigError, QGFaceInputError) as exc:
        return cli.error(exc)
    ev = None if args.skip_eval else _run_eval(out, args, cfg, summary, root)
    wall = time.time() - t0
    ver = summary["verification"]
    lines = ["", f"QGFace demo finished in {wall / 60:.1f} min on {device}",
             f"  trained     {summary['steps']} steps, {summary['samples_per_s'] or 0:.1f} images/s, "
             f"final loss {summary['final'].get('loss', float('nan')):.3f}"]
    for name, r in ver.items():
        kind = {"synthetic_val_hq": "HQ-HQ pairs", "synthetic_val_lq": "LQ-HQ pairs"}.get(name, name)
        lines.append(f"  verification {kind:12s} {100 * r['accuracy']:.2f}% ± {100 * r['std']:.2f} "
                     f"(held-out identities; chance 50%)")
    lines += [f"  model       {summary['model']}",
              f"  logs        {Path(summary['output']) / 'tensorboard'}  (tensorboard --logdir ...)",
              f"  summary     {Path(summary['output']) / 'summary.json'}",
              f"  data        {out / 'data'}  (preview: {out / 'data' / 'preview.png'})"]
    if ev is not None:
        lines += _eval_lines(ev)
    print("\n".join(lines))
    (out / "demo_summary.json").write_text(json.dumps({**summary, "demo_wall_s": round(wall, 1), "eval": ev},
                                                      indent=1))
    return cli.EXIT_FAILED if ev is not None and ev["rc"] else cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
