"""SCface closed-set rank-1 identification at distances d1/d2/d3, with a feature-norm quality view.

    python tools/eval_scface.py --network r50 --model model.pt --data DIR --output out/ \
        [--protocol all|test80] [--subjects FILE] [--flip sum|norm_weighted|none] [--batch-size 64] \
        [--arcface-root PATH]

``--data`` holds ``all.txt`` (tab-separated, first column the key such as ``001_cam1_1``) and
``aligned_dir/<key>.jpg``, or just the aligned ``*.jpg`` images (in ``aligned_dir/`` or ``--data``
itself). Gallery = the ``<subject>_frontal*`` mug-shots; probes = visible-light cameras 1-5
(``<subject>_cam<c>_<d>``; IR cameras 6-8 excluded), d1 = 4.2 m, d2 = 2.6 m, d3 = 1.0 m.
``--protocol all`` (default) uses every subject with no fine-tuning, as the QGFace authors report;
``test80`` restricts gallery and probes to subjects 051-130 (the split common in the literature), or to
the subjects listed in ``--subjects FILE`` (one id per line; labelled ``custom``). See
``qgface_plugin.eval.scface`` for the details. ``--model`` is an arcface_torch ``model.pt`` (needs
``--network``) or an ``.onnx`` file.

Writes ``<output>/scface.json`` (fractions), ``<output>/scface.md`` (percent) and
``<output>/scface_quality.csv`` (the quality of each image of the protocol: ``role`` probe / gallery, ``key``,
``subject``, ``camera``, ``distance`` d1/d2/d3, ``norm`` = raw non-flipped feature norm, ``rank1_correct``
1/0; camera, distance and rank1_correct are empty for the gallery), and prints the table.

Error-versus-reject curve (``--erc-fractions``, ``--erc-draws``, ``--erc-seed``): the rank-1 error over the
probes kept (every distance together) as the lowest-norm probes are rejected, against random rejection
(JSON ``erc``, a table in the Markdown, ``<output>/scface_erc.png``; see ``qgface_plugin.eval.erc``).
``<output>/scface_items.npz`` keeps each probe's rank, norm, distance and camera at full precision (for
``tools/compare_models.py``).
"""
from __future__ import annotations

import sys
from pathlib import Path

from qgface_plugin.eval import erc
from qgface_plugin.eval.cli import (add_erc_flags, erc_options, evaluator_parser, run_evaluation, write_items,
                                    write_quality, write_report)
from qgface_plugin.eval.identification import quality_markdown
from qgface_plugin.eval.scface import PROTOCOLS, evaluate_scface, read_subjects


def parse_args(argv=None):
    p = evaluator_parser(__doc__.split("\n\n")[0], 'SCface folder with all.txt + aligned_dir/ (see above)')
    p.add_argument("--protocol", choices=PROTOCOLS, default="all",
                   help="all: every subject, no fine-tuning; test80: subjects 051-130")
    p.add_argument("--subjects", default=None,
                   help="file of subject ids, one per line (replaces 051-130; default: none)")
    p.add_argument("--quality-bins", type=int, default=3, help="probe-norm quantile bins of the quality view")
    add_erc_flags(p)
    args = p.parse_args(argv)
    args.erc = erc_options(p, args)
    return args


def _pct(x):
    return "–" if x is None else f"{100 * x:.2f}"


def markdown(res: dict, flip: str) -> str:
    c, n = res["counts"], res["probes"]
    cols = ["d1", "d2", "d3", "overall"]
    head = ["d1 (4.2 m)", "d2 (2.6 m)", "d3 (1.0 m)", "overall"]
    lines = [f"SCface rank-1 identification, % — protocol **{res['protocol']}** "
             f"(score: {res['score']}; flip fusion: {flip})", "",
             f"Root: `{res['root']}` — {res['subjects']} subjects (ids {res['subject_range'][0]:03d}–"
             f"{res['subject_range'][1]:03d}), gallery {c['gallery']} frontal mug-shots, {c['probes']} "
             f"visible-light probes (cameras 1–5; {c['skipped_keys']} IR/other keys skipped)", "",
             "| protocol | " + " | ".join(head) + " |", "|---" * (len(cols) + 1) + "|",
             f"| {res['protocol']} | " + " | ".join(_pct(res["rank1"][k]) for k in cols) + " |",
             "| probes | " + " | ".join(str(n[k]) for k in cols) + " |", "",
             "Rank-1 by camera", "", "| camera | d1 | d2 | d3 |", "|---|---|---|---|"]
    for cam, v in res["per_camera"].items():
        lines.append(f"| {cam} | " + " | ".join(_pct(v[k]) for k in ("d1", "d2", "d3")) + " |")
    lines += quality_markdown(res)
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    got = run_evaluation(args, lambda ex, subjects: evaluate_scface(
        ex, Path(args.data), protocol=args.protocol, subjects=subjects, bins=args.quality_bins,
        progress=args.progress, workers=args.workers, cache_dir=args.cache, erc=args.erc),
        prepare=lambda: read_subjects(args.subjects) if args.subjects else None)
    if got is None:
        return 2
    res, info, seconds = got
    quality_file = write_quality(args.output, "scface", res.pop("per_image"))
    items_file = write_items(args.output, "scface", {f"probe_{k}": v for k, v in res.pop("per_probe").items()})
    erc.plot_erc(Path(args.output) / "scface_erc.png", [(f"SCface ({res['protocol']})", res["erc"])],
                 f"SCface error-versus-reject — {Path(args.model).name}", "rank-1 error (%)")
    report = {"model": str(args.model), "model_info": info, "flip": args.flip, "seconds": seconds,
              "subjects_file": args.subjects,
              "units": {"rank1": "fraction", "quality_bins.rank1": "fraction", "distance_m": "metres",
                        "erc": "fraction"}, **res,
              "quality_file": quality_file, "items_file": items_file, "erc_plot": "scface_erc.png"}
    write_report(args.output, "scface", report, markdown(res, args.flip))
    return 0


if __name__ == "__main__":
    sys.exit(main())
