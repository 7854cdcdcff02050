"""TinyFace closed-set identification (CMC rank-1/5/20) with a feature-norm quality view.

    python tools/eval_tinyface.py --network r50 --model model.pt --data DIR --output out/ \
        [--flip sum|norm_weighted|none] [--batch-size 64] [--arcface-root PATH]

``--data`` holds AdaFace's aligned copy ``{Probe,Gallery_Match,Gallery_Distractor}/*.jpg`` (or that
layout inside ``aligned_pad_0.1_pad_high/``, ``tinyface/Testing_Set/`` or another direct sub-folder; the
root used is reported). Gallery = Gallery_Match + all Gallery_Distractor images (distractors never match);
identity = file-name prefix before the first "_"; score = cosine similarity of the L2-normalised fused
features (see ``qgface_plugin.eval.identification`` for the tie rule). ``--model`` is an arcface_torch
``model.pt`` (needs ``--network``) or an ``.onnx`` file.

Writes ``<output>/tinyface.json`` (fractions), ``<output>/tinyface.md`` (percent) and
``<output>/tinyface_quality.csv`` (the quality of each image: ``role`` probe / gallery_match / distractor,
``file`` relative to the root, ``identity`` (-1 for distractors), ``norm`` = raw non-flipped feature norm,
``rank`` = the probe's CMC rank, empty for the gallery), and prints the table.

Error-versus-reject curve (``--erc-fractions``, ``--erc-draws``, ``--erc-seed``): the rank-1 error over the
probes kept as the lowest-norm probes are rejected, against random rejection (JSON ``erc``, a table in the
Markdown, ``<output>/tinyface_erc.png``; see ``qgface_plugin.eval.erc``). ``<output>/tinyface_items.npz``
keeps each probe's rank and norm at full precision (for ``tools/compare_models.py``).
"""
from __future__ import annotations

import sys
from pathlib import Path

from qgface_plugin.eval import erc
from qgface_plugin.eval.cli import (add_erc_flags, erc_options, evaluator_parser, run_evaluation, write_items,
                                    write_quality, write_report)
from qgface_plugin.eval.identification import quality_markdown
from qgface_plugin.eval.tinyface import evaluate_tinyface


def parse_args(argv=None):
    p = evaluator_parser(__doc__.split("\n\n")[0], 'TinyFace aligned folder (see above)')
    p.add_argument("--ranks", nargs="+", type=int, default=[1, 5, 20], help="CMC ranks reported")
    p.add_argument("--quality-bins", type=int, default=3, help="probe-norm quantile bins of the quality view")
    add_erc_flags(p)
    args = p.parse_args(argv)
    args.erc = erc_options(p, args)
    return args


def markdown(res: dict, flip: str) -> str:
    c = res["counts"]
    names = list(res["cmc"])
    lines = [f"TinyFace closed-set identification, % (score: {res['score']}; flip fusion: {flip})", "",
             f"Root: `{res['root']}` — {c['probes']} probes ({c['identities']} identities), gallery "
             f"{c['gallery_match']} match + {c['distractors']} distractors", "",
             "| " + " | ".join(n.replace("rank", "rank-") for n in names) + " |", "|---" * len(names) + "|",
             "| " + " | ".join(f"{100 * res['cmc'][n]:.2f}" for n in names) + " |"]
    lines += quality_markdown(res)
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    got = run_evaluation(args, lambda ex: evaluate_tinyface(
        ex, Path(args.data), ranks=tuple(args.ranks), bins=args.quality_bins, progress=args.progress,
        workers=args.workers, cache_dir=args.cache, erc=args.erc))
    if got is None:
        return 2
    res, info, seconds = got
    quality_file = write_quality(args.output, "tinyface", res.pop("per_image"))
    items_file = write_items(args.output, "tinyface", {f"probe_{k}": v for k, v in res.pop("per_probe").items()})
    erc.plot_erc(Path(args.output) / "tinyface_erc.png", [("TinyFace", res["erc"])],
                 f"TinyFace error-versus-reject — {Path(args.model).name}", "rank-1 error (%)")
    report = {"model": str(args.model), "model_info": info, "flip": args.flip, "seconds": seconds,
              "units": {"cmc": "fraction", "quality_bins.rank1": "fraction", "erc": "fraction"}, **res,
              "quality_file": quality_file, "items_file": items_file, "erc_plot": "tinyface_erc.png"}
    write_report(args.output, "tinyface", report, markdown(res, args.flip))
    return 0


if __name__ == "__main__":
    sys.exit(main())
