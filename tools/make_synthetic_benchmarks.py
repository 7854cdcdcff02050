#!/usr/bin/env python
"""Write small synthetic versions of the evaluation benchmarks, each in its upstream layout.

    python tools/make_synthetic_benchmarks.py --output work_dirs/benchmarks [--seed 0] [--size small|medium]
    python tools/eval_suite.py --network mbf --model model.pt --data work_dirs/benchmarks --output out/

Writes, under --output: ``tinyface/`` (Probe/, Gallery_Match/, Gallery_Distractor/), ``scface/`` (all.txt,
aligned_dir/), ``IJBC/`` (loose_crop/, meta/; with --size medium also ``IJBB/``) and ``benchmarks.json``
(seed, size, counts) -- where ``tools/eval_suite.py --data`` finds them. The identities are not those of
the synthetic training set (tools/make_synthetic_data.py), whose .bin sets the suite takes with --bins.
``small`` (837 images, ~4 s) keeps the whole suite on a MobileFaceNet under two minutes on 2 CPU cores
(with the demo's .bin sets); ``medium`` (7,217 images, ~30 s; the full SCface subject range, IJB-B too)
resolves TAR@FAR=1e-4 on IJB-C and takes ~5 minutes there. Same seed and size -> same bytes.
"""
from __future__ import annotations

import sys
from pathlib import Path

from qgface_plugin import cli
from qgface_plugin.errors import QGFaceConfigError
from qgface_plugin.synthetic.benchmarks import SIZES, SUMMARY_FILE, make_benchmarks


def build_parser():
    p = cli.parser(__doc__.split("\n\n")[0], raw_description=False)
    p.add_argument("--output", required=True, help="output folder (created; same-named files replaced)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed -> same bytes)")
    p.add_argument("--size", choices=tuple(SIZES), default="small", help="benchmark sizes")
    return p


def describe(summary, output) -> list:
    """Human-readable lines: one per benchmark folder written."""
    c, f, out = summary["counts"], summary["folders"], Path(output)
    t, s = c["tinyface"], c["scface"]
    lines = [f"tinyface  {out / f['tinyface']}: {t['probes']} probes of {t['identities']} identities, "
             f"{t['gallery_match']} gallery matches, {t['distractors']} distractors",
             f"scface    {out / f['scface']}: {s['subjects']} subjects ({s['test80_subjects']} in test80), "
             f"{s['gallery']} frontal, {s['probes']} visible probes (5 cameras x 3 distances), "
             f"{s['ir_excluded']} infrared (excluded by the evaluator)"]
    for key in ("ijbc", "ijbb"):
        if key in c:
            n = c[key]
            lines.append(f"{key:9s} {out / f[key]}: {n['images']} images, {n['templates']} templates, "
                         f"{n['pairs']} pairs ({n['genuine']} genuine)")
    lines.append(f"summary   {out / SUMMARY_FILE} ({summary['images']} images, seed {summary['seed']}, "
                 f"size {summary['size']}, {summary['seconds']:.1f} s)")
    return lines


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = make_benchmarks(args.output, seed=args.seed, size=args.size)
    except QGFaceConfigError as exc:
        return cli.error(exc, "make_synthetic_benchmarks")
    print("\n".join(describe(summary, args.output)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
