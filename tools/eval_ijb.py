#!/usr/bin/env python
"""IJB-B / IJB-C 1:1 verification (TAR@FAR), upstream ``eval_ijbc.py`` protocol, with a quality view.

    python tools/eval_ijb.py --network r50 --model model.pt --data IJBC --target IJBC --output out/ \
        [--flip sum|norm_weighted|none] [--no-norm-score] [--no-detector-score] [--cache DIR] \
        [--workers N] [--batch-size 64] [--device cuda] [--fp16] [--progress]

``--data`` holds ``loose_crop/`` and ``meta/`` (insightface's IJB release layout: ``meta/<t>_face_tid_mid.txt``,
``<t>_template_pair_label.txt``, ``<t>_name_5pts_score.txt`` with ``t`` = ``ijbc`` or ``ijbb``). Each image is
aligned with its 5 landmarks to the 112x112 ArcFace template. The defaults are upstream's protocol: flip
(sum of original and flipped raw features, F1), feature norm kept (N1) and detector-score weighting (D1);
each can be switched off. ``--model`` is an arcface_torch ``model.pt`` (needs ``--network``) or an ``.onnx``.
``--cache DIR`` keeps image features on disk: an interrupted run continues where it stopped, and a rerun
with other pooling options (``--no-norm-score`` ...) reuses them.

Writes ``<output>/<t>.json`` (fractions), ``<t>.md`` (percent), ``<t>_roc.png`` (ROC, overall and per
quality third), ``<t>_scores.npy`` (pair scores in pair-file order, as upstream's ``<t>.npy``),
``<t>_quality.csv`` (the quality of each image, in meta-file order: ``image`` (name as in the meta files),
``template``, ``media``, ``det_score``, ``norm`` = raw non-flipped feature norm) and ``<t>_template_quality.csv``
(``template``, ``images``, ``quality`` = mean norm of its images, as the quality view uses).

Error-versus-reject curve (``--erc-far``, default 1e-4, ``--erc-fractions``, ``--erc-draws``, ``--erc-seed``):
the FNMR (1 - TAR) at the global threshold of that FAR -- or, when the set has fewer than 1 / FAR impostor
pairs, of the smallest larger decade it resolves; the JSON says which -- as the pairs of lowest pair quality
are rejected, against random rejection (JSON ``erc``, a table in the Markdown, ``<t>_erc.png``; see
``qgface_plugin.eval.erc``). ``<t>_items.npz`` keeps each template's quality at full precision (with the
scores and the pair file, what ``tools/compare_models.py`` resamples).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from qgface_plugin.eval import erc
from qgface_plugin.eval.cli import (add_erc_flags, erc_options, evaluator_parser, run_evaluation, write_items,
                                    write_quality, write_report)
from qgface_plugin.eval.ijb import DEFAULT_ERC_FAR, DEFAULT_FARS, evaluate_ijb
from qgface_plugin.eval.roc import far_label, far_resolved


def parse_args(argv=None):
    p = evaluator_parser(__doc__.split("\n\n")[0], "IJB folder holding loose_crop/ and meta/")
    p.add_argument("--target", default="IJBC", type=str.upper, choices=("IJBC", "IJBB"),
                   help="benchmark (its meta files' prefix)")
    p.add_argument("--no-norm-score", dest="norm_score", action="store_false",
                   help="L2-normalise each image feature before pooling (upstream N0; default: the raw features, "
                        "upstream N1)")
    p.add_argument("--no-detector-score", dest="detector_score", action="store_false",
                   help="do not weight image features by the detector score (upstream D0; default: weighted, "
                        "upstream D1)")
    p.add_argument("--fars", nargs="+", type=float, default=list(DEFAULT_FARS), help="FARs the TAR is read at")
    p.add_argument("--quality-bins", type=int, default=3, help="pair-quality bins of the quality view (0 = off)")
    p.add_argument("--load-batch", type=int, default=1024, help="images decoded per chunk (= cache shard size)")
    add_erc_flags(p, "--erc-far", DEFAULT_ERC_FAR, "FAR of the ERC's fixed threshold (the smallest larger decade "
                  "the set resolves when it has fewer than 1/FAR impostor pairs)")
    args = p.parse_args(argv)
    args.erc = erc_options(p, args, "--erc-far")
    return args


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def markdown(res: dict, args) -> str:
    keys = list(res["tar_at_far"])
    fars = {k: res["far_points"][k]["far"] for k in keys}  # the FAR each TAR key was read at

    def _far_label(key: str) -> str:
        return far_label(fars[key])

    def _dagger(key: str, res: dict) -> str:
        return "" if far_resolved(fars[key], res["min_resolvable_far"]) else " †"
    c, pr = res["counts"], res["protocol"]
    lines = [f"{res['benchmark']} 1:1 verification, TAR (%) at FAR", "",
             f"{c['images']} images, {c['templates']} templates, {c['pairs']} pairs ({c['genuine']} genuine); "
             f"flip: {pr['flip']}, norm score: {'on' if pr['norm_score'] else 'off'}, detector score: "
             f"{'on' if pr['detector_score'] else 'off'}; AUC {100 * res['auc']:.4f} %", "",
             "| model | " + " | ".join(_far_label(k) for k in keys) + " |", "|---" * (len(keys) + 1) + "|",
             f"| {Path(args.model).name} | " + " | ".join(_pct(res["tar_at_far"][k]) + _dagger(k, res) for k in keys)
             + " |"]
    if any(_dagger(k, res) for k in keys):
        lines += ["", f"† FAR below 1 / {c['impostor']} impostor pairs: not resolved by this set (the value is "
                  "the TAR at the ROC point nearest to it, FAR 0)."]
    if res["quality_bins"]:
        lines += ["", "TAR (%) by pair quality (lower template feature norm of the pair), at the global "
                  "thresholds", "", "| bin | pairs | genuine | quality | " + " | ".join(_far_label(k) for k in keys)
                  + " |", "|---" * (len(keys) + 4) + "|"]
        for b in res["quality_bins"]:
            lines.append(f"| {b['bin']} | {b['count']} | {b['genuine']} | {b['quality_min']:.2f}–"
                         f"{b['quality_max']:.2f} | " + " | ".join(_pct(b[k]) + _dagger(k, res) for k in keys) + " |")
    rep = res.get("erc")
    if rep:
        used = f"FAR={rep['fmr']:g}" + ("" if rep["fmr"] == rep["fmr_requested"] else
                                        f" (the set does not resolve {rep['fmr_requested']:g})")
        lines += ["", erc.markdown_note(rep).replace(rep["description"], f"FNMR (1 − TAR) at the global threshold "
                  f"of {used}"), ""] + erc.markdown_table([("pairs", rep)])
    return "\n".join(lines) + "\n"


def plot_roc(res: dict, path: Path, title: str, bins: int = 3) -> None:
    """Overall ROC (log FAR) and, per quality bin, the TAR of its genuine pairs at the global thresholds."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    roc, scores, labels = res["roc"], res["scores"], res["labels"]
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    ax.plot(roc["fpr"], roc["tpr"], color="k", lw=1.6, label=f"all pairs (AUC {100 * roc['auc']:.2f} %)")
    if bins:
        from qgface_plugin.eval.quality_view import quality_split
        thr = roc["thresholds"]
        colours = ("tab:red", "tab:orange", "tab:green", "tab:blue", "tab:purple", "tab:brown")
        for (name, idx), colour in zip(quality_split(res["pair_quality"], bins), colours):
            gen = np.sort(scores[idx][labels[idx] == 1])
            if len(gen):
                tar = 1.0 - np.searchsorted(gen, thr, side="left") / len(gen)
                ax.plot(roc["fpr"], tar, color=colour, lw=1, ls="--", label=f"{name} quality third" if
                        bins == 3 else f"quality {name}")
    fars = [p[1] for p in roc["far_points"].values()]
    ax.set_xscale("log")
    lo = max(min(fars + [1e-6]), 1e-6)
    ax.set_xlim(lo, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.grid(True, which="major", ls="--", lw=0.6)
    ax.set_xlabel("False accept rate")
    ax.set_ylabel("True accept rate")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    got = run_evaluation(args, lambda ex: evaluate_ijb(
        ex, args.data, target=args.target, use_norm=args.norm_score, use_detector=args.detector_score,
        fars=args.fars, bins=args.quality_bins, load_batch=args.load_batch, workers=args.workers,
        cache_dir=args.cache, progress=args.progress, erc=args.erc))
    if got is None:
        return 2
    res, info, seconds = got
    t = args.target.lower()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / f"{t}_scores.npy", res["scores"])
    plot_roc(res, out / f"{t}_roc.png", f"ROC on {args.target} — {Path(args.model).name}", args.quality_bins)
    erc.plot_erc(out / f"{t}_erc.png", [(args.target, res.get("erc"))],
                 f"{args.target} error-versus-reject — {Path(args.model).name}", "FNMR = 1 − TAR (%)")
    per_template = res.pop("per_template")
    files = {"quality_file": write_quality(out, t, res.pop("per_image")),
             "template_quality_file": write_quality(out, f"{t}_template", per_template),
             "items_file": write_items(out, t, {"template": per_template["template"],
                                                "template_quality": per_template["quality"]}),
             "scores_file": f"{t}_scores.npy", "erc_plot": f"{t}_erc.png"}
    report = {k: v for k, v in res.items() if k not in ("scores", "labels", "roc", "pair_quality")}
    report = {"model": str(args.model), "model_info": info, "data": str(args.data), "seconds": seconds,
              "units": {"tar_at_far": "fraction", "quality_bins": "fraction", "erc": "fraction"}, **report, **files}
    write_report(out, t, report, markdown(res, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
