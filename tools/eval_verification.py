"""Verification accuracy (insightface 10-fold protocol) on LFW-style ``.bin`` sets, with low-resolution variants.

    python tools/eval_verification.py --network r50 --model model.pt --data DIR --output out/ \
        [--targets lfw cfp_fp agedb_30 calfw cplfw] [--lowres 8 12 16 20] [--flip sum|norm_weighted|none] \
        [--quality-bins 3] [--batch-size 64] [--arcface-root PATH]

``--model`` is an arcface_torch ``model.pt`` (a backbone state dict, ``module.`` prefixes stripped, or a
checkpoint dict with ``state_dict_backbone``; the backbone is built with upstream's ``get_model``) or
an ``.onnx`` file (then ``--network`` is not needed). A low-resolution variant ``lrS`` downsamples the
first image of every pair to S px and back to 112 (see ``qgface_plugin.eval.verification``).

Quality view (``--quality-bins N``, default 3, 0 disables): per target and variant, the pairs are split
into N quantile bins of pair quality (the smaller of the two images' raw, non-flipped feature norms) and
the accuracy of each bin is reported, every pair judged with its own fold's threshold (see
``qgface_plugin.eval.verification.pair_quality_bins``).

Writes ``<output>/verification.json`` (per target and variant: accuracy and std as fractions, mean
threshold, mean raw feature norm, ``quality_bins``), ``<output>/verification.md`` (accuracy mean +- std,
and accuracy by quality bin, in percent) and, per target, ``<output>/verification_<target>_quality.csv`` (the
quality of each image: ``image`` = index in the ``.bin``, ``pair``, ``issame`` 1/0, ``norm`` = raw non-flipped
feature norm, and one ``norm_lr<S>`` per low-res variant, where the first image of each pair is the degraded
one and the second keeps its original norm), and prints the tables.

Error-versus-reject curve (``--erc-fmr``, default 1e-3, ``--erc-fractions``, ``--erc-draws``, ``--erc-seed``):
per target and variant, the FNMR at one cosine-similarity threshold fixed on all pairs at that FMR (or, when
the set has fewer than 1 / FMR impostor pairs, at the smallest larger decade it resolves; the JSON says which)
as the pairs of lowest pair quality are rejected, against random rejection (JSON ``erc`` per variant, a table
in the Markdown, ``<output>/verification_<target>_erc.png``; see ``qgface_plugin.eval.erc``).
``<output>/verification_<target>_items.npz`` keeps, per variant, each pair's cosine score, its 10-fold
judgement and its quality at full precision (for ``tools/compare_models.py``).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from qgface_plugin.errors import QGFaceInputError
from qgface_plugin.eval import erc
from qgface_plugin.eval.cli import (add_erc_flags, erc_options, evaluator_parser, run_evaluation, write_items,
                                    write_quality, write_report)
from qgface_plugin.eval.verification import DEFAULT_ERC_FMR, evaluate_bin

TARGETS = ("lfw", "cfp_fp", "agedb_30", "calfw", "cplfw")


def parse_args(argv=None):
    p = evaluator_parser(__doc__.split("\n\n")[0], 'folder holding <target>.bin files')
    p.add_argument("--targets", nargs="+", default=None,
                   help=f"bin names without .bin (default: those of {' '.join(TARGETS)} present)")
    p.add_argument("--lowres", nargs="*", type=int, default=[], help="low-res sizes in px, e.g. 8 12 16 20")
    p.add_argument("--nfolds", type=int, default=10, help="folds of the verification protocol")
    p.add_argument("--quality-bins", type=int, default=3,
                   help="quantile bins of pair quality (min raw feature norm of the pair); 0 disables")
    add_erc_flags(p, "--erc-fmr", DEFAULT_ERC_FMR, "FMR of the ERC's fixed threshold (the smallest larger decade "
                  "the set resolves when it has fewer than 1/FMR impostor pairs)")
    args = p.parse_args(argv)
    args.erc = erc_options(p, args, "--erc-fmr")
    return args


def resolve_targets(data: Path, targets):
    if not data.is_dir():
        raise QGFaceInputError(f"{data}: --data folder not found")
    if targets is None:
        found = [t for t in TARGETS if (data / f"{t}.bin").is_file()]
        if not found:
            raise QGFaceInputError(f"{data}: none of {', '.join(t + '.bin' for t in TARGETS)} found")
        return found
    missing = [t for t in targets if not (data / f"{t}.bin").is_file()]
    if missing:
        raise QGFaceInputError(f"{data}: requested target(s) missing: {', '.join(m + '.bin' for m in missing)}")
    return list(targets)


def markdown(results: dict, flip: str, nfolds: int = 10) -> str:
    variants = []
    for rows in results.values():
        variants += [v for v in rows if v not in variants]
    lines = [f"Verification accuracy, % (mean ± std over {nfolds} folds; flip fusion: {flip})", "",
             "| target | " + " | ".join(variants) + " |", "|---" * (len(variants) + 1) + "|"]
    for t, rows in results.items():
        cells = [f"{100 * rows[v]['accuracy']:.2f} ± {100 * rows[v]['std']:.2f}" if v in rows else "-"
                 for v in variants]
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    lines += ["", "Mean raw feature norm (all images of the variant)", "",
              "| target | " + " | ".join(variants) + " |", "|---" * (len(variants) + 1) + "|"]
    for t, rows in results.items():
        cells = [f"{rows[v]['norm_mean']:.3f}" if v in rows else "-" for v in variants]
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    lines += _quality_markdown(results)
    lines += _erc_markdown(results)
    return "\n".join(lines) + "\n"


def _quality_markdown(results: dict) -> list:
    """Accuracy by pair-quality bin (%), one row per target and variant; [] when no row has bins."""
    bins = []
    for rows in results.values():
        for row in rows.values():
            bins += [b["bin"] for b in row.get("quality_bins", []) if b["bin"] not in bins]
    if not bins:
        return []
    lines = ["", "Accuracy by pair quality, % (quantile bins of min raw feature norm of the pair, lowest first; "
             "each pair judged with its fold's threshold). Cell: accuracy [genuine share of the bin, %]", "",
             "| target | variant | " + " | ".join(bins) + " |", "|---" * (len(bins) + 2) + "|"]
    for t, rows in results.items():
        for v, row in rows.items():
            got = {b["bin"]: b for b in row.get("quality_bins", [])}
            cells = [f"{100 * got[b]['accuracy']:.2f} [{100 * got[b]['genuine_fraction']:.0f}]" if b in got
                     else "-" for b in bins]
            lines.append(f"| {t} | {v} | " + " | ".join(cells) + " |")
    return lines


def _erc_markdown(results: dict) -> list:
    """The error-versus-reject table: one norm row and one random row per target and variant."""
    rows = [(f"{t} {v}", row["erc"]) for t, variants in results.items() for v, row in variants.items()
            if row.get("erc")]
    if not rows:
        return []
    fmrs = sorted({(r["fmr_requested"], r["fmr"]) for _, r in rows})
    used = ", ".join(f"FMR={u:g}" + ("" if u == q else f" (the set does not resolve {q:g})") for q, u in fmrs)
    return (["", erc.markdown_note(rows[0][1]).replace(rows[0][1]["description"], f"FNMR at one threshold fixed "
             f"on all pairs of the variant at {used}"), ""] + erc.markdown_table(rows))


def main(argv=None) -> int:
    args = parse_args(argv)
    data, seconds, per_image, per_pair = Path(args.data), {}, {}, {}

    def evaluate(extractor, targets):
        results = {}
        for t in targets:
            t0 = time.time()
            results[t] = evaluate_bin(extractor, data / f"{t}.bin", lowres_sizes=args.lowres, nfolds=args.nfolds,
                                      bins=args.quality_bins, progress=args.progress, workers=args.workers,
                                      erc=args.erc, return_pairs=True)
            per_image[t] = results[t].pop("per_image")
            per_pair[t] = {v: row.pop("per_pair") for v, row in results[t].items()}
            seconds[t] = round(time.time() - t0, 3)
        return results
    got = run_evaluation(args, evaluate, prepare=lambda: resolve_targets(data, args.targets))
    if got is None:
        return 2
    results, info, _ = got
    quality_files = {t: write_quality(args.output, f"verification_{t}", cols) for t, cols in per_image.items()}
    items_files, erc_plots = {}, {}
    for t, variants in per_pair.items():
        arrays = {"issame": next(iter(variants.values()))["issame"]}
        for v, cols in variants.items():
            arrays.update({f"{v}_{k}": cols[k] for k in ("score", "correct", "quality")})
        items_files[t] = write_items(args.output, f"verification_{t}", arrays)
        erc_plots[t] = f"verification_{t}_erc.png"
        erc.plot_erc(Path(args.output) / erc_plots[t], [(v, row.get("erc")) for v, row in results[t].items()],
                     f"{t} error-versus-reject — {Path(args.model).name}", "FNMR (%)")
    report = {"model": str(args.model), "model_info": info, "flip": args.flip, "nfolds": args.nfolds,
              "lowres_sizes": list(args.lowres), "quality_bins": args.quality_bins,
              "pair_quality": "min of the two images' raw (non-flipped) feature norms",
              "units": {"accuracy": "fraction", "std": "fraction",
                        "threshold": "squared L2 distance of unit features",
                        "quality_bins.accuracy": "fraction", "quality_bins.genuine_fraction": "fraction",
                        "quality_bins.quality_min": "raw feature norm (pair quality)", "erc": "fraction"},
              "erc_fmr": args.erc_fmr,
              "seconds": seconds, "results": results, "quality_file": quality_files, "items_file": items_files,
              "erc_plot": erc_plots}
    write_report(args.output, "verification", report, markdown(results, args.flip, args.nfolds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
