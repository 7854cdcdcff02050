"""Side-by-side comparison of models evaluated by the suite, with paired bootstrap intervals of the differences.

``tools/compare_models.py`` runs the evaluation suite (:mod:`.suite`) once per model, each into its own
folder, and then this module reads back, per benchmark, the per-pair / per-probe arrays the tools wrote
(``*_items.npz``; IJB: ``<t>_scores.npy``, the template qualities and the pair file) and builds one
*figure set* per resampling unit:

* ``.bin`` verification, per target: its pairs (every variant of the target shares them). Figures per
  variant: the accuracy (each pair judged with the threshold of the fold that tests it in the 10-fold
  protocol -- thresholds not re-tuned per resample; pooled over the pairs, which equals the report's mean
  fold accuracy when the folds are equal-sized, as in the standard sets) and that accuracy in each pair-quality
  third and the gap highest - lowest.
* TinyFace: its probes. CMC rank-k and rank-1 per probe-quality third.
* SCface, per protocol: its probes, resampled **within each distance** (the d1/d2/d3 counts stay fixed).
  Rank-1 at d1, d2, d3, overall, and per probe-quality third.
* IJB-B / IJB-C: its pairs. TAR at each FAR the set resolves (1e-5 .. 1e-2), the threshold **recomputed in
  every resample** (:class:`~qgface_plugin.eval.paired.WeightedROC`, exactly
  :func:`~qgface_plugin.eval.roc.tar_at_far` on the resampled pairs), and the TAR per pair-quality third at the
  resample's global threshold of the quality view's FAR.

The quality thirds of each model are that model's own (its norms order the items), recomputed on every
resample. Every figure on the original items equals the one in the model's own report (tested).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import QGFaceInputError
from .ijb import pair_min_template_quality, read_pairs
from .paired import LEVEL, SortedBins, WeightedROC, bootstrap, weighted_mean
from .roc import far_key, far_resolved
from .suite import IJB_FARS, quality_far

__all__ = ["figure_sets", "compare_runs", "markdown", "plot"]

SCFACE_DISTANCES = ((1, "d1 (4.2 m)"), (2, "d2 (2.6 m)"), (3, "d3 (1.0 m)"))


def _ratio(num, den):
    return None if den <= 0 else float(num / den)


def _thirds(out, prefix, sb, counts, hit, within=None):
    """Per-bin rate of ``hit`` (over the items of ``within``, default all) and the gap last - first."""
    if within is None:
        sizes, (num,) = sb.sums(counts, hit)
        den = sizes
    else:
        _, (num, den) = sb.sums(counts, hit, within)
    vals = [_ratio(n, d) for n, d in zip(num, den)]
    for name, v in zip(sb.names, vals):
        out[f"{prefix}, {name} {'third' if len(sb.names) == 3 else 'bin'}"] = v
    out[f"{prefix}, gap (highest − lowest)"] = (None if vals[0] is None or vals[-1] is None else vals[-1] - vals[0])


# ----------------------------------------------------------------------------------------- the figure sets
def _identification_stat(rank, norm, ks, bins, distance=None):
    rank = np.asarray(rank)
    hits = {k: (rank <= k).astype(np.float64) for k in ks or ()}
    hit1 = (rank == 1).astype(np.float64)
    sb = SortedBins(norm, bins) if bins else None
    masks = None if distance is None else [(lab, (np.asarray(distance) == d).astype(np.float64))
                                           for d, lab in SCFACE_DISTANCES]

    def stat(counts):
        out = {}
        if masks is None:
            for k in ks:
                out[f"rank-{k}"] = weighted_mean(counts, hits[k])
        else:
            for lab, m in masks:
                out[f"rank-1 {lab}"] = _ratio(np.dot(counts, hit1 * m), np.dot(counts, m))
            out["rank-1 overall"] = weighted_mean(counts, hit1)
        if sb is not None:
            _thirds(out, "rank-1", sb, counts, hit1)
        return out
    return stat


def _verification_stat(items, variants, bins):
    per = []
    for v in variants:
        ok = items[f"{v}_correct"].astype(np.float64)
        per.append((v, ok, SortedBins(items[f"{v}_quality"], bins) if bins else None))

    def stat(counts):
        out = {}
        for v, ok, sb in per:
            out[f"{v}: accuracy"] = weighted_mean(counts, ok)
            if sb is not None:
                _thirds(out, f"{v}: accuracy", sb, counts, ok)
        return out
    return stat


def _ijb_stat(scores, labels, quality, fars, qfar, bins):
    """Figures ``TAR@FAR=<far>`` per FAR of ``fars`` and, with ``bins``, the TAR per pair-quality bin at the
    resample's global threshold of ``qfar``."""
    keys = {far_key(f): f for f in fars}
    qkey = far_key(qfar)
    roc = WeightedROC(scores, labels, max_far=max([*fars, qfar]))
    sb = SortedBins(quality, bins) if bins else None
    if sb is not None:  # in quality order once: a resample then gathers its counts only
        gen_q = sb.sort(np.asarray(labels) == 1)
        s_q = sb.sort(scores)

    def stat(counts):
        got = roc.tar_at_far(counts, list(dict.fromkeys([*fars, qfar])))
        out = {k: got[f][0] for k, f in keys.items()}
        if sb is not None:
            thr = got[qfar][1]
            acc = gen_q * (s_q >= thr) if thr is not None else np.zeros(len(s_q))
            _, (num, den) = sb.sums_sorted(sb.sort(counts), acc, gen_q)
            vals = [_ratio(a, g) if thr is not None else None for a, g in zip(num, den)]
            for name, v in zip(sb.names, vals):
                out[f"{qkey}, {name} {'third' if len(sb.names) == 3 else 'bin'}"] = v
            out[f"{qkey}, gap (highest − lowest)"] = (None if vals[0] is None or vals[-1] is None
                                                      else vals[-1] - vals[0])
        return out
    return stat


def _npz(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def figure_sets(key, title, report_dirs: dict, reports: dict, data_dir) -> list:
    """The figure sets of one benchmark (module docstring) for every model: ``[{"id", "benchmark", "title",
    "unit", "n", "strata", "stats": {model: stat(counts) -> {figure: value}}}]``.

    ``reports[model]`` is the model's JSON report of ``key``, ``report_dirs[model]`` the folder it is in (its
    items files are beside it), ``data_dir`` the benchmark's folder (IJB: for the pair file).

    Raises:
        QGFaceInputError: the models' items differ (another data set), or an items file is missing.
    """
    models = list(reports)
    ref = reports[models[0]]
    base = {m: Path(report_dirs[m]) for m in models}
    out = []

    def need(path):
        if not Path(path).is_file():
            raise QGFaceInputError(f"{path}: missing (rerun the evaluation with this version of the tools)")
        return path

    if key == "verification":
        bins = int(ref.get("quality_bins") or 0)
        for t in ref["results"]:
            items = {m: _npz(need(base[m] / reports[m]["items_file"][t])) for m in models}
            variants = list(ref["results"][t])
            for m in models:
                if not np.array_equal(items[m]["issame"], items[models[0]]["issame"]) or \
                        list(reports[m]["results"][t]) != variants:
                    raise QGFaceInputError(f"{title} {t}: model {m} was evaluated on other pairs or variants")
            stats = {m: _verification_stat(items[m], variants, bins) for m in models}
            out.append({"id": f"{key}:{t}", "benchmark": key, "title": f"{t}", "unit": "pairs",
                        "n": len(items[models[0]]["issame"]), "strata": None, "stats": stats})
        return out
    if key == "tinyface" or key.startswith("scface"):
        items = {m: _npz(need(base[m] / reports[m]["items_file"])) for m in models}
        n = len(items[models[0]]["probe_rank"])
        bins = len(ref.get("quality_bins") or [])
        scface = key.startswith("scface")
        for m in models:
            if len(items[m]["probe_rank"]) != n or (scface and not np.array_equal(
                    items[m]["probe_distance"], items[models[0]]["probe_distance"])):
                raise QGFaceInputError(f"{title}: model {m} was evaluated on other probes")
        ks = [int(k[4:]) for k in ref["cmc"]] if not scface else None
        stats = {m: _identification_stat(items[m]["probe_rank"], items[m]["probe_norm"], ks, bins,
                                         items[m]["probe_distance"] if scface else None) for m in models}
        out.append({"id": key, "benchmark": key, "title": title, "unit": "probes", "n": n,
                    "strata": items[models[0]]["probe_distance"] if scface else None, "stats": stats})
        return out
    # IJB
    pairs = read_pairs(str(data_dir), key.upper())
    fars = [f for f in IJB_FARS if far_resolved(f, ref.get("min_resolvable_far", 0))]
    qfar = quality_far(ref)
    if qfar not in fars:  # a small set: at least the FAR of the quality view
        fars.append(qfar)
    bins = len(ref.get("quality_bins") or [])
    stats = {}
    for m in models:
        scores = np.load(need(base[m] / reports[m]["scores_file"]))
        items = _npz(need(base[m] / reports[m]["items_file"]))
        if len(scores) != len(pairs["labels"]):
            raise QGFaceInputError(f"{title}: model {m} has {len(scores)} pair scores for {len(pairs['labels'])} pairs")
        pq = pair_min_template_quality(items["template"], items["template_quality"], pairs["p1"], pairs["p2"])
        stats[m] = _ijb_stat(scores, pairs["labels"], pq, fars, qfar, bins)
    out.append({"id": key, "benchmark": key, "title": title, "unit": "pairs", "n": len(pairs["labels"]),
                "strata": None, "stats": stats})
    return out


# ------------------------------------------------------------------------------------------------ compare
def compare_runs(runs: list, resamples=1000, seed=0, level=LEVEL, log=print) -> dict:
    """Compare suite runs: ``runs`` = ``[{"label", "model", "network", "dir" (suite output folder)}, ...]``, the
    first the reference. Returns the JSON-ready comparison (``models``, ``bootstrap``, ``benchmarks``,
    ``rows``); see ``tools/compare_models.py``."""
    labels = [r["label"] for r in runs]
    summaries = {r["label"]: json.loads((Path(r["dir"]) / "summary.json").read_text(encoding="utf-8")) for r in runs}
    ref = summaries[labels[0]]
    benchmarks, rows = {}, []
    titles = {"verification": ".bin verification", "tinyface": "TinyFace", "ijbb": "IJB-B", "ijbc": "IJB-C"}
    for key, b in ref["benchmarks"].items():
        title = titles.get(key, f"SCface ({key.split('_', 1)[1]})" if key.startswith("scface") else key)
        status = {m: summaries[m]["benchmarks"].get(key, {}).get("status", "missing") for m in labels}
        if set(status.values()) != {"ok"}:
            benchmarks[key] = {"status": "skipped" if set(status.values()) == {"skipped"} else "error",
                               "models": status}
            if benchmarks[key]["status"] == "error":
                benchmarks[key]["reason"] = "; ".join(f"{m}: {summaries[m]['benchmarks'].get(key, {}).get('error')}"
                                                      for m in labels if status[m] == "error")
            continue
        paths = {m: Path(r["dir"]) / summaries[m]["benchmarks"][key]["report"] for m, r in zip(labels, runs)}
        reports = {m: json.loads(p.read_text(encoding="utf-8")) for m, p in paths.items()}
        try:
            sets = figure_sets(key, title, {m: p.parent for m, p in paths.items()}, reports, b["data"])
        except QGFaceInputError as e:
            benchmarks[key] = {"status": "error", "reason": str(e)}
            log(f"[compare] {title}: error: {e}", flush=True)
            continue
        benchmarks[key] = {"status": "ok", "sets": []}
        for s in sets:
            log(f"[compare] {title}{'' if s['title'] == title else ' ' + s['title']}: paired bootstrap, "
                f"{resamples} resamples of {s['n']} {s['unit']}"
                + (" (within each distance)" if s["strata"] is not None else ""), flush=True)
            res = bootstrap(s["stats"], s["n"], labels[0], resamples, seed, level, s["strata"])
            benchmarks[key]["sets"].append({"id": s["id"], "title": s["title"], "unit": s["unit"], "items": s["n"],
                                            "stratified": s["strata"] is not None})
            for fig in res["point"][labels[0]]:
                rows.append({"benchmark": key, "set": s["id"],
                             "label": title if s["title"] == title else f"{s['title']} ({fig.split(':')[0]})",
                             "figure": fig.split(": ", 1)[-1],
                             "kind": "quality" if ", " in fig else "headline",
                             "values": {m: res["point"][m].get(fig) for m in labels},
                             "diff": {m: res["diff"][m][fig] for m in labels[1:]}})
    return {"models": [{k: r[k] for k in ("label", "model", "network")} | {"output": Path(r["dir"]).name,
                                                                          "model_info": summaries[r["label"]].get(
                                                                              "model_info")} for r in runs],
            "reference": labels[0],
            "bootstrap": {"resamples": int(resamples), "seed": int(seed), "level": level, "interval": "percentile",
                          "paired": True,
                          "method": "paired bootstrap: the same resample of pairs (verification) or probes "
                                    "(identification; SCface within each distance) for every model, each figure "
                                    "recomputed for each model (TAR@FAR with the threshold recomputed per "
                                    "resample), interval = percentiles of the differences to the reference"},
            "units": {"values": "fraction", "diff": "fraction"},
            "benchmarks": benchmarks, "rows": rows}


# ----------------------------------------------------------------------------------------------- reporting
def _pct(x, sign=False):
    if x is None:
        return "–"
    return f"{100 * x:+.2f}" if sign else f"{100 * x:.2f}"


def _diff_cell(d):
    if d["diff"] is None:
        return "–"
    if d["low"] is None:
        return _pct(d["diff"], True)
    star = "" if d["low"] <= 0 <= d["high"] else " *"
    return f"{_pct(d['diff'], True)} [{_pct(d['low'], True)}, {_pct(d['high'], True)}]{star}"


def markdown(comp: dict) -> str:
    labels = [m["label"] for m in comp["models"]]
    ref = comp["reference"]
    bs = comp["bootstrap"]
    lines = [f"# Model comparison — {' vs '.join(labels)}", "",
             "| label | model | network | kind | suite run |", "|---|---|---|---|---|"]
    for m in comp["models"]:
        kind = (m.get("model_info") or {}).get("kind", "–")
        lines.append(f"| {m['label']} | `{m['model']}` | {m['network'] or '–'} | {kind} | "
                     f"[{m['output']}/summary.md]({m['output']}/summary.md) |")
    lines += ["", f"Figures in %; differences in points, each model − {ref}, with the {100 * bs['level']:g}% "
              f"percentile interval of a paired bootstrap ({bs['resamples']} resamples, seed {bs['seed']}): the same "
              "resampled pairs (verification) or probes (identification; SCface within each distance) for every "
              "model, every figure recomputed on them (IJB: the threshold of each FAR recomputed per resample). "
              "Quality thirds: each model's items split by its own feature norm. * = the interval excludes 0.", ""]
    head = "| benchmark | figure | " + " | ".join(labels) + " | " + " | ".join(f"{m} − {ref} [CI]" for m in labels[1:])
    lines += [head + " |", "|---" * (2 + 2 * len(labels) - 1) + "|"]
    for r in comp["rows"]:
        lines.append(f"| {r['label']} | {r['figure']} | " + " | ".join(_pct(r["values"][m]) for m in labels) + " | "
                     + " | ".join(_diff_cell(r["diff"][m]) for m in labels[1:]) + " |")
    other = {k: b for k, b in comp["benchmarks"].items() if b["status"] != "ok"}
    if other:
        lines += ["", "Not compared: " + "; ".join(f"{k} ({b['status']}" + (f": {b['reason']}" if b.get("reason")
                                                                           else "") + ")" for k, b in other.items())]
    return "\n".join(lines) + "\n"


def plot(comp: dict, path) -> None:
    """``compare.png``: per figure, grouped bars of every model's value (left) and the differences to the
    reference with their intervals (right). Matplotlib, Agg backend."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    labels = [m["label"] for m in comp["models"]]
    rows = comp["rows"]
    names = [f"{r['label']}: {r['figure']}" for r in rows]
    y = np.arange(len(rows))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 1.2 + 0.28 * max(len(rows), 4)), dpi=110, sharey=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    h = 0.8 / len(labels)
    for i, m in enumerate(labels):
        v = [np.nan if r["values"][m] is None else 100 * r["values"][m] for r in rows]
        ax1.barh(y - 0.4 + h * (i + 0.5), v, height=h, color=colours[i % len(colours)], label=m)
    others = labels[1:]
    h2 = 0.8 / max(1, len(others))
    for i, m in enumerate(others):
        d = np.array([np.nan if r["diff"][m]["diff"] is None else 100 * r["diff"][m]["diff"] for r in rows])
        lo = np.array([np.nan if r["diff"][m]["low"] is None else 100 * r["diff"][m]["low"] for r in rows])
        hi = np.array([np.nan if r["diff"][m]["high"] is None else 100 * r["diff"][m]["high"] for r in rows])
        yy = y - 0.4 + h2 * (i + 0.5)
        err = np.vstack([np.clip(d - lo, 0, None), np.clip(hi - d, 0, None)])
        ax2.barh(yy, d, height=h2, color=colours[(i + 1) % len(colours)], alpha=0.8,
                 xerr=np.where(np.isfinite(err), err, 0), capsize=2, label=f"{m} − {labels[0]}")
    ax2.axvline(0, color="k", lw=0.8)
    ax1.set_yticks(y)
    ax1.set_yticklabels(names, fontsize=7)
    ax1.invert_yaxis()
    ax1.set_xlabel("figure (%)")
    ax2.set_xlabel(f"difference (points), {100 * comp['bootstrap']['level']:g}% paired bootstrap interval")
    for ax in (ax1, ax2):
        ax.grid(True, axis="x", ls="--", lw=0.5)
        ax.legend(loc="lower right", fontsize=7)
    fig.suptitle(f"Model comparison — {' vs '.join(labels)}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
